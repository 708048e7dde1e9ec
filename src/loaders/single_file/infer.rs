//! Model configs inferred from the tensor shapes of an original-layout checkpoint.
//!
//! Shapes give channels, block counts, which blocks attend, the cross-attention width,
//! linear vs. conv projections and the input channels (4, or 9 for inpainting). Two things
//! shapes cannot tell, and that the original LDM code fixes by convention, are filled in by
//! model family, as diffusers' `infer_diffusers_model_type` + its stock configs do:
//!
//! * the head count: SD1.x (cross-attention width 768) uses 8 heads per block; SD2.x (1024)
//!   uses heads of 64 channels;
//! * normalisation groups: always 32 in LDM's `GroupNorm32`.
//!
//! Checkpoints outside these families (e.g. the tiny test models) need an explicit config
//! (a diffusers config folder or the LDM yaml; see `single_file::config_source`).

use serde_json::{json, Value};

use super::checkpoint::ShapeMap;
use crate::models::family::{AttentionHeads, Family};

fn shape<'a>(shapes: &'a ShapeMap, key: &str) -> Result<&'a [usize], String> {
    shapes
        .get(key)
        .map(Vec::as_slice)
        .ok_or_else(|| format!("tensor {key} is missing"))
}

fn dim(shapes: &ShapeMap, key: &str, axis: usize) -> Result<usize, String> {
    shape(shapes, key)?
        .get(axis)
        .copied()
        .ok_or_else(|| format!("tensor {key} has no dimension {axis}"))
}

/// Distinct values of the numeric path segment after `prefix` (`input_blocks.{i}.`).
fn indices(shapes: &ShapeMap, prefix: &str) -> Vec<usize> {
    let mut found: Vec<usize> = shapes
        .keys()
        .filter_map(|k| k.strip_prefix(prefix)?.split('.').next()?.parse().ok())
        .collect();
    found.sort_unstable();
    found.dedup();
    found
}

/// The UNet encoder half shared by UNets and ControlNets (keys without prefix).
struct Encoder {
    in_channels: usize,
    block_out_channels: Vec<usize>,
    layers_per_block: usize,
    attention: Vec<bool>,
    cross_attention_dim: usize,
    transformer_depth: usize,
    use_linear_projection: bool,
    family: Family,
}

fn infer_encoder(shapes: &ShapeMap) -> Result<Encoder, String> {
    let in_channels = dim(shapes, "input_blocks.0.0.weight", 1)?;
    let input_blocks = indices(shapes, "input_blocks.");
    let last = *input_blocks.last().ok_or("no input_blocks")?;
    let downsamplers: Vec<usize> = input_blocks
        .iter()
        .copied()
        .filter(|i| shapes.contains_key(&format!("input_blocks.{i}.0.op.weight")))
        .collect();
    let layers_per_block = match downsamplers.first() {
        Some(first) => first - 1,
        None => last,
    };
    if layers_per_block == 0 {
        return Err("cannot find the resnets of the first down block".into());
    }
    let levels = downsamplers.len() + 1;
    if 1 + levels * layers_per_block + downsamplers.len() != last + 1 {
        return Err(format!(
            "{} input blocks do not form {levels} levels of {layers_per_block} layers",
            last + 1
        ));
    }
    let per_block = layers_per_block + 1;
    let mut block_out_channels = Vec::new();
    let mut attention = Vec::new();
    for level in 0..levels {
        let first = 1 + level * per_block;
        block_out_channels.push(dim(
            shapes,
            &format!("input_blocks.{first}.0.out_layers.3.weight"),
            0,
        )?);
        attention.push(shapes.contains_key(&format!("input_blocks.{first}.1.proj_in.weight")));
    }
    let attn_level = attention
        .iter()
        .position(|&a| a)
        .ok_or("no attention blocks")?;
    let attn_prefix = format!("input_blocks.{}.1.", 1 + attn_level * per_block);
    let cross_attention_dim = dim(
        shapes,
        &format!("{attn_prefix}transformer_blocks.0.attn2.to_k.weight"),
        1,
    )?;
    let transformer_depth = indices(shapes, &format!("{attn_prefix}transformer_blocks.")).len();
    let use_linear_projection = shape(shapes, &format!("{attn_prefix}proj_in.weight"))?.len() == 2;
    let family = Family::from_cross_attention_dim(cross_attention_dim).ok_or_else(|| {
        format!(
            "cross-attention width {cross_attention_dim} is neither SD1.x (768) nor SD2.x (1024); \
             the attention head count cannot be read from the weights"
        )
    })?;
    Ok(Encoder {
        in_channels,
        block_out_channels,
        layers_per_block,
        attention,
        cross_attention_dim,
        transformer_depth,
        use_linear_projection,
        family,
    })
}

impl Encoder {
    /// diffusers' `attention_head_dim` (which holds head counts for these models).
    fn heads(&self) -> Value {
        match self.family.attention_heads() {
            AttentionHeads::Count(n) => json!(n),
            heads @ AttentionHeads::Width(_) => json!(self
                .block_out_channels
                .iter()
                .map(|&c| heads.heads_for(c))
                .collect::<Vec<_>>()),
        }
    }

    fn down_block_types(&self) -> Vec<&'static str> {
        self.attention
            .iter()
            .map(|&a| {
                if a {
                    "CrossAttnDownBlock2D"
                } else {
                    "DownBlock2D"
                }
            })
            .collect()
    }

    fn common(&self) -> Value {
        json!({
            "in_channels": self.in_channels,
            "block_out_channels": self.block_out_channels,
            "layers_per_block": self.layers_per_block,
            "down_block_types": self.down_block_types(),
            "cross_attention_dim": self.cross_attention_dim,
            "attention_head_dim": self.heads(),
            "use_linear_projection": self.use_linear_projection,
            "transformer_layers_per_block": self.transformer_depth,
            "norm_num_groups": 32,
        })
    }
}

fn merge(mut base: Value, extra: Value) -> Value {
    if let (Value::Object(b), Value::Object(e)) = (&mut base, extra) {
        b.extend(e);
    }
    base
}

/// A diffusers `UNet2DConditionModel` config for a LDM UNet (keys without
/// `model.diffusion_model.`), and its family.
pub fn unet_config(shapes: &ShapeMap) -> Result<(Value, Family), String> {
    let enc = infer_encoder(shapes)?;
    let per_block = enc.layers_per_block + 1;
    let levels = enc.block_out_channels.len();
    let up_block_types: Vec<&str> = (0..levels)
        .map(|b| {
            let attends =
                shapes.contains_key(&format!("output_blocks.{}.1.proj_in.weight", b * per_block));
            if attends {
                "CrossAttnUpBlock2D"
            } else {
                "UpBlock2D"
            }
        })
        .collect();
    let mid_block_type = if shapes.contains_key("middle_block.1.proj_in.weight") {
        json!("UNetMidBlock2DCrossAttn")
    } else {
        Value::Null
    };
    let config = merge(
        enc.common(),
        json!({
            "out_channels": dim(shapes, "out.2.weight", 0)?,
            "up_block_types": up_block_types,
            "mid_block_type": mid_block_type,
            "sample_size": enc.family.default_sample_size(),
        }),
    );
    Ok((config, enc.family))
}

/// A diffusers `ControlNetModel` config for a LDM ControlNet (keys without `control_model.`).
pub fn controlnet_config(shapes: &ShapeMap) -> Result<(Value, Family), String> {
    let enc = infer_encoder(shapes)?;
    let hint = indices(shapes, "input_hint_block.");
    let hint_last = *hint.last().ok_or("no input_hint_block")?;
    // conv_in, then (same-size conv, stride-2 conv) pairs; each pair's second conv widens.
    let mut channels = vec![dim(shapes, "input_hint_block.0.weight", 0)?];
    let mut i = 4;
    while i < hint_last {
        channels.push(dim(shapes, &format!("input_hint_block.{i}.weight"), 0)?);
        i += 4;
    }
    let config = merge(
        enc.common(),
        json!({
            "conditioning_channels": dim(shapes, "input_hint_block.0.weight", 1)?,
            "conditioning_embedding_out_channels": channels,
        }),
    );
    Ok((config, enc.family))
}

/// A diffusers `AutoencoderKL` config for a LDM VAE (keys without `first_stage_model.`).
pub fn vae_config(shapes: &ShapeMap) -> Result<Value, String> {
    let levels = indices(shapes, "encoder.down.");
    if levels.is_empty() {
        return Err("no encoder.down blocks".into());
    }
    let block_out_channels = levels
        .iter()
        .map(|i| dim(shapes, &format!("encoder.down.{i}.block.0.conv2.weight"), 0))
        .collect::<Result<Vec<_>, _>>()?;
    let layers = indices(shapes, "encoder.down.0.block.").len();
    Ok(json!({
        "in_channels": dim(shapes, "encoder.conv_in.weight", 1)?,
        "out_channels": dim(shapes, "decoder.conv_out.weight", 0)?,
        "down_block_types": vec!["DownEncoderBlock2D"; levels.len()],
        "up_block_types": vec!["UpDecoderBlock2D"; levels.len()],
        "block_out_channels": block_out_channels,
        "layers_per_block": layers,
        "latent_channels": dim(shapes, "decoder.conv_in.weight", 1)?,
        "norm_num_groups": 32,
        "sample_size": 512,
        "scaling_factor": 0.18215,
        "use_quant_conv": shapes.contains_key("quant_conv.weight"),
        "use_post_quant_conv": shapes.contains_key("post_quant_conv.weight"),
    }))
}

/// A transformers `CLIPTextConfig` for an OpenAI CLIP text encoder (keys in transformers'
/// layout, with or without the `text_model.` level).
pub fn clip_config(shapes: &ShapeMap) -> Result<Value, String> {
    let root = if shapes.contains_key("text_model.embeddings.token_embedding.weight") {
        "text_model."
    } else {
        ""
    };
    let token = shape(shapes, &format!("{root}embeddings.token_embedding.weight"))?;
    let (vocab, width) = (token[0], token[1]);
    let positions = dim(
        shapes,
        &format!("{root}embeddings.position_embedding.weight"),
        0,
    )?;
    let layers = indices(shapes, &format!("{root}encoder.layers.")).len();
    let intermediate = dim(shapes, &format!("{root}encoder.layers.0.mlp.fc1.weight"), 0)?;
    clip_json(vocab, width, positions, layers, intermediate, "quick_gelu")
}

/// OpenCLIP ViT-H/14's depth. SD2 conditions on its penultimate layer, so diffusers' SD2 text
/// encoder keeps 23 layers; checkpoints converted back from diffusers hold only those.
const OPEN_CLIP_H_LAYERS: usize = 24;

/// A transformers `CLIPTextConfig` for an OpenCLIP text encoder (keys without
/// `cond_stage_model.model.`). A full 24-layer ViT-H/14 keeps 23 layers, as diffusers' SD2
/// configs do; other depths (files converted from diffusers) keep every layer they hold.
pub fn open_clip_config(shapes: &ShapeMap) -> Result<Value, String> {
    let token = shape(shapes, "token_embedding.weight")?;
    let positions = dim(shapes, "positional_embedding", 0)?;
    let held = indices(shapes, "transformer.resblocks.").len();
    if held == 0 {
        return Err("no transformer layers".into());
    }
    let layers = if held == OPEN_CLIP_H_LAYERS {
        held - 1
    } else {
        held
    };
    let intermediate = dim(shapes, "transformer.resblocks.0.mlp.c_fc.weight", 0)?;
    clip_json(token[0], token[1], positions, layers, intermediate, "gelu")
}

fn clip_json(
    vocab: usize,
    width: usize,
    positions: usize,
    layers: usize,
    intermediate: usize,
    activation: &str,
) -> Result<Value, String> {
    if !width.is_multiple_of(64) {
        return Err(format!(
            "text encoder width {width} is not a multiple of CLIP's 64-channel heads"
        ));
    }
    Ok(json!({
        "vocab_size": vocab,
        "hidden_size": width,
        "intermediate_size": intermediate,
        "num_hidden_layers": layers,
        "num_attention_heads": width / 64,
        "max_position_embeddings": positions,
        "hidden_act": activation,
        "projection_dim": width,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::unet::UNetConfig;

    fn add(map: &mut ShapeMap, key: &str, shape: &[usize]) {
        map.insert(key.to_string(), shape.to_vec());
    }

    /// The shapes of an SD1.5 UNet that config inference looks at.
    fn sd15_unet_shapes(in_channels: usize) -> ShapeMap {
        let mut m = ShapeMap::new();
        add(&mut m, "input_blocks.0.0.weight", &[320, in_channels, 3, 3]);
        let channels = [320, 640, 1280, 1280];
        for (level, &c) in channels.iter().enumerate() {
            for layer in 0..2 {
                let i = 1 + level * 3 + layer;
                add(
                    &mut m,
                    &format!("input_blocks.{i}.0.out_layers.3.weight"),
                    &[c, c, 3, 3],
                );
                if level < 3 {
                    add(
                        &mut m,
                        &format!("input_blocks.{i}.1.proj_in.weight"),
                        &[c, c, 1, 1],
                    );
                    add(
                        &mut m,
                        &format!("input_blocks.{i}.1.transformer_blocks.0.attn2.to_k.weight"),
                        &[c, 768],
                    );
                }
            }
            if level < 3 {
                add(
                    &mut m,
                    &format!("input_blocks.{}.0.op.weight", 3 + level * 3),
                    &[1, 1, 3, 3],
                );
            }
        }
        for b in 1..4 {
            add(
                &mut m,
                &format!("output_blocks.{}.1.proj_in.weight", b * 3),
                &[1, 1, 1, 1],
            );
        }
        add(&mut m, "middle_block.1.proj_in.weight", &[1280, 1280, 1, 1]);
        add(&mut m, "out.2.weight", &[4, 320, 3, 3]);
        m
    }

    #[test]
    fn infers_sd15_unet() {
        let (value, family) = unet_config(&sd15_unet_shapes(4)).unwrap();
        assert_eq!(family, Family::Sd1);
        let config: UNetConfig = serde_json::from_value(value).unwrap();
        config.validate().unwrap();
        assert_eq!(config.block_out_channels, vec![320, 640, 1280, 1280]);
        assert_eq!(
            config.down_block_types,
            [
                "CrossAttnDownBlock2D",
                "CrossAttnDownBlock2D",
                "CrossAttnDownBlock2D",
                "DownBlock2D"
            ]
        );
        assert_eq!(
            config.up_block_types,
            [
                "UpBlock2D",
                "CrossAttnUpBlock2D",
                "CrossAttnUpBlock2D",
                "CrossAttnUpBlock2D"
            ]
        );
        assert!(!config.use_linear_projection);
        assert_eq!(config.in_channels, 4);
        let (inpaint, _) = unet_config(&sd15_unet_shapes(9)).unwrap();
        assert_eq!(inpaint["in_channels"], 9);
    }

    #[test]
    fn unknown_width_needs_a_config() {
        let mut shapes = sd15_unet_shapes(4);
        add(
            &mut shapes,
            "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight",
            &[320, 16],
        );
        let err = unet_config(&shapes).unwrap_err();
        assert!(err.contains("head count"), "{err}");
    }

    #[test]
    fn clip_and_vae_configs() {
        let mut m = ShapeMap::new();
        add(
            &mut m,
            "text_model.embeddings.token_embedding.weight",
            &[49408, 768],
        );
        add(
            &mut m,
            "text_model.embeddings.position_embedding.weight",
            &[77, 768],
        );
        for l in 0..12 {
            add(
                &mut m,
                &format!("text_model.encoder.layers.{l}.mlp.fc1.weight"),
                &[3072, 768],
            );
        }
        let v = clip_config(&m).unwrap();
        let cfg: crate::models::clip::ClipTextConfig = serde_json::from_value(v).unwrap();
        assert_eq!(cfg, crate::models::clip::ClipTextConfig::sd15());

        let mut m = ShapeMap::new();
        add(&mut m, "encoder.conv_in.weight", &[128, 3, 3, 3]);
        for (i, c) in [128, 256, 512, 512].iter().enumerate() {
            for j in 0..2 {
                add(
                    &mut m,
                    &format!("encoder.down.{i}.block.{j}.conv2.weight"),
                    &[*c, *c, 3, 3],
                );
            }
        }
        add(&mut m, "decoder.conv_in.weight", &[512, 4, 3, 3]);
        add(&mut m, "decoder.conv_out.weight", &[3, 128, 3, 3]);
        add(&mut m, "quant_conv.weight", &[8, 8, 1, 1]);
        add(&mut m, "post_quant_conv.weight", &[4, 4, 1, 1]);
        let cfg: crate::models::vae::VaeConfig =
            serde_json::from_value(vae_config(&m).unwrap()).unwrap();
        assert_eq!(cfg, crate::models::vae::VaeConfig::sd15());
    }
}
