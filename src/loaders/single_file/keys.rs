//! Weight-name mapping between the original (CompVis LDM / A1111) layout of single-file
//! checkpoints and diffusers' layout, which is what our models load.
//!
//! Mirrors diffusers' `loaders/single_file_utils.py` (`convert_ldm_unet_checkpoint`,
//! `convert_controlnet_checkpoint`, `convert_ldm_vae_checkpoint`, `convert_ldm_clip_checkpoint`,
//! `convert_open_clip_checkpoint`), but as pure per-key functions: every original key maps to
//! at most one diffusers key plus a [`Transform`] of its tensor, so a checkpoint can be read
//! lazily (memory-mapped) instead of being converted into a second state dict.
//!
//! The reverse direction (diffusers → LDM) exists for the UNet so that LoRA files that name
//! LDM modules (`lora_unet_input_blocks_1_1_...`) can be matched to our modules.

/// What to do to an original tensor to get the diffusers tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transform {
    Identity,
    /// LDM's VAE attention uses 1×1 convolutions (`[C, C, 1, 1]`) where diffusers uses linear
    /// layers (`[C, C]`): drop the trailing unit dimensions.
    ConvToLinear,
    /// Rows `start..start + len` of dimension 0: OpenCLIP's fused `in_proj` q/k/v weights.
    Rows {
        start: usize,
        len: usize,
    },
}

/// Prefixes of the components inside a full single-file checkpoint.
pub const LDM_UNET_PREFIX: &str = "model.diffusion_model.";
pub const LDM_VAE_PREFIX: &str = "first_stage_model.";
pub const LDM_CLIP_PREFIX: &str = "cond_stage_model.transformer.";
pub const LDM_OPEN_CLIP_PREFIX: &str = "cond_stage_model.model.";
pub const LDM_CONTROLNET_PREFIX: &str = "control_model.";

/// diffusers' resnet names inside a LDM `ResBlock` (`update_unet_resnet_ldm_to_diffusers`).
const UNET_RESNET_NAMES: [(&str, &str); 6] = [
    ("in_layers.0", "norm1"),
    ("in_layers.2", "conv1"),
    ("out_layers.0", "norm2"),
    ("out_layers.3", "conv2"),
    ("emb_layers.1", "time_emb_proj"),
    ("skip_connection", "conv_shortcut"),
];

/// Layers outside the block structure (`DIFFUSERS_TO_LDM_MAPPING["unet"]["layers"]`).
const UNET_TOP_LEVEL: [(&str, &str); 5] = [
    ("time_embed.0", "time_embedding.linear_1"),
    ("time_embed.2", "time_embedding.linear_2"),
    ("input_blocks.0.0", "conv_in"),
    ("out.0", "conv_norm_out"),
    ("out.2", "conv_out"),
];

/// Splits `"{prefix}{n}.{rest}"` into `(n, rest)`.
fn indexed<'a>(key: &'a str, prefix: &str) -> Option<(usize, &'a str)> {
    let tail = key.strip_prefix(prefix)?;
    let (index, rest) = tail.split_once('.')?;
    Some((index.parse().ok()?, rest))
}

/// `"{module}.{param}"` with `module` replaced through `table` (exact module-path prefix).
fn rename_prefix(rest: &str, table: &[(&str, &str)]) -> Option<String> {
    table.iter().find_map(|(old, new)| {
        let tail = rest.strip_prefix(old)?;
        (tail.is_empty() || tail.starts_with('.')).then(|| format!("{new}{tail}"))
    })
}

fn unet_resnet(rest: &str) -> Option<String> {
    rename_prefix(rest, &UNET_RESNET_NAMES)
}

/// The down/up path of a LDM UNet or ControlNet, shared by both (keys without prefix).
/// `layers_per_block` is diffusers' `layers_per_block` (LDM's `num_res_blocks`).
fn unet_body_key(key: &str, layers_per_block: usize) -> Option<String> {
    let per_block = layers_per_block + 1;
    if let Some(mapped) = rename_prefix(key, &UNET_TOP_LEVEL) {
        return Some(mapped);
    }
    if let Some((i, rest)) = indexed(key, "input_blocks.") {
        if i == 0 {
            return None;
        }
        let (block, layer) = ((i - 1) / per_block, (i - 1) % per_block);
        let (part, inner) = rest.split_once('.')?;
        return match part {
            "0" => match inner.strip_prefix("op.") {
                Some(param) => Some(format!("down_blocks.{block}.downsamplers.0.conv.{param}")),
                None => Some(format!(
                    "down_blocks.{block}.resnets.{layer}.{}",
                    unet_resnet(inner)?
                )),
            },
            "1" => Some(format!("down_blocks.{block}.attentions.{layer}.{inner}")),
            _ => None,
        };
    }
    if let Some((j, rest)) = indexed(key, "middle_block.") {
        return match j {
            0 => Some(format!("mid_block.resnets.0.{}", unet_resnet(rest)?)),
            1 => Some(format!("mid_block.attentions.0.{rest}")),
            2 => Some(format!("mid_block.resnets.1.{}", unet_resnet(rest)?)),
            _ => None,
        };
    }
    if let Some((i, rest)) = indexed(key, "output_blocks.") {
        let (block, layer) = (i / per_block, i % per_block);
        let (part, inner) = rest.split_once('.')?;
        return match (part, inner.strip_prefix("conv.")) {
            ("0", _) => Some(format!(
                "up_blocks.{block}.resnets.{layer}.{}",
                unet_resnet(inner)?
            )),
            ("1" | "2", Some(param)) => {
                Some(format!("up_blocks.{block}.upsamplers.0.conv.{param}"))
            }
            ("1", None) => Some(format!("up_blocks.{block}.attentions.{layer}.{inner}")),
            _ => None,
        };
    }
    None
}

/// A LDM UNet key (without `model.diffusion_model.`) → its diffusers name.
pub fn unet_ldm_to_diffusers(key: &str, layers_per_block: usize) -> Option<String> {
    unet_body_key(key, layers_per_block)
}

/// A diffusers UNet name → its LDM name (inverse of [`unet_ldm_to_diffusers`]).
/// `up_block_has_attention(b)` says whether up block `b` has attentions, which decides
/// whether its upsampler sits at LDM sub-index 1 or 2.
pub fn unet_diffusers_to_ldm(
    name: &str,
    layers_per_block: usize,
    up_block_has_attention: impl Fn(usize) -> bool,
) -> Option<String> {
    let per_block = layers_per_block + 1;
    let inverse: Vec<(&str, &str)> = UNET_TOP_LEVEL.iter().map(|&(a, b)| (b, a)).collect();
    if let Some(mapped) = rename_prefix(name, &inverse) {
        return Some(mapped);
    }
    let resnet_inverse: Vec<(&str, &str)> =
        UNET_RESNET_NAMES.iter().map(|&(a, b)| (b, a)).collect();
    let resnet = |rest: &str| rename_prefix(rest, &resnet_inverse);
    if let Some((block, rest)) = indexed(name, "down_blocks.") {
        let (kind, tail) = rest.split_once('.')?;
        let (layer, inner) = tail.split_once('.')?;
        let layer: usize = layer.parse().ok()?;
        return match kind {
            "resnets" => Some(format!(
                "input_blocks.{}.0.{}",
                1 + block * per_block + layer,
                resnet(inner)?
            )),
            "attentions" => Some(format!(
                "input_blocks.{}.1.{inner}",
                1 + block * per_block + layer
            )),
            "downsamplers" => {
                let param = inner.strip_prefix("conv.")?;
                Some(format!(
                    "input_blocks.{}.0.op.{param}",
                    (block + 1) * per_block
                ))
            }
            _ => None,
        };
    }
    if let Some(rest) = name.strip_prefix("mid_block.") {
        let (kind, tail) = rest.split_once('.')?;
        let (layer, inner) = tail.split_once('.')?;
        return match (kind, layer) {
            ("resnets", "0") => Some(format!("middle_block.0.{}", resnet(inner)?)),
            ("attentions", "0") => Some(format!("middle_block.1.{inner}")),
            ("resnets", "1") => Some(format!("middle_block.2.{}", resnet(inner)?)),
            _ => None,
        };
    }
    if let Some((block, rest)) = indexed(name, "up_blocks.") {
        let (kind, tail) = rest.split_once('.')?;
        let (layer, inner) = tail.split_once('.')?;
        let layer: usize = layer.parse().ok()?;
        return match kind {
            "resnets" => Some(format!(
                "output_blocks.{}.0.{}",
                block * per_block + layer,
                resnet(inner)?
            )),
            "attentions" => Some(format!(
                "output_blocks.{}.1.{inner}",
                block * per_block + layer
            )),
            "upsamplers" => {
                let param = inner.strip_prefix("conv.")?;
                let sub = if up_block_has_attention(block) { 2 } else { 1 };
                Some(format!(
                    "output_blocks.{}.{sub}.conv.{param}",
                    block * per_block + layers_per_block
                ))
            }
            _ => None,
        };
    }
    None
}

/// A LDM ControlNet key (without `control_model.`) → its diffusers name. `hint_last` is the
/// index of the last conv of `input_hint_block` (14 for every released ControlNet, whose
/// diffusers `conditioning_embedding_out_channels` has four entries).
pub fn controlnet_ldm_to_diffusers(
    key: &str,
    layers_per_block: usize,
    hint_last: usize,
) -> Option<String> {
    if key.starts_with("output_blocks.") || key.starts_with("out.") {
        return None;
    }
    if let Some((i, rest)) = indexed(key, "input_hint_block.") {
        return if i == 0 {
            Some(format!("controlnet_cond_embedding.conv_in.{rest}"))
        } else if i == hint_last {
            Some(format!("controlnet_cond_embedding.conv_out.{rest}"))
        } else if i % 2 == 0 {
            Some(format!(
                "controlnet_cond_embedding.blocks.{}.{rest}",
                i / 2 - 1
            ))
        } else {
            None
        };
    }
    if let Some((i, rest)) = indexed(key, "zero_convs.") {
        let param = rest.strip_prefix("0.")?;
        return Some(format!("controlnet_down_blocks.{i}.{param}"));
    }
    if let Some(param) = key.strip_prefix("middle_block_out.0.") {
        return Some(format!("controlnet_mid_block.{param}"));
    }
    unet_body_key(key, layers_per_block)
}

/// A LDM VAE key (without `first_stage_model.`) → diffusers name and tensor transform.
/// `up_blocks` is the number of decoder up blocks (LDM numbers them from the bottom,
/// diffusers from the top).
pub fn vae_ldm_to_diffusers(key: &str, up_blocks: usize) -> Option<(String, Transform)> {
    let (side, rest) = key.split_once('.')?;
    let plain = |name: String| Some((name, Transform::Identity));
    match side {
        "quant_conv" | "post_quant_conv" => return plain(key.to_string()),
        "encoder" | "decoder" => {}
        _ => return None,
    }
    let resnet = |inner: &str| {
        if let Some(tail) = inner.strip_prefix("nin_shortcut") {
            format!("conv_shortcut{tail}")
        } else {
            inner.to_string()
        }
    };
    if let Some(tail) = rest.strip_prefix("norm_out.") {
        return plain(format!("{side}.conv_norm_out.{tail}"));
    }
    if rest.starts_with("conv_in.") || rest.starts_with("conv_out.") {
        return plain(key.to_string());
    }
    if let Some(mid) = rest.strip_prefix("mid.") {
        if let Some(inner) = mid.strip_prefix("block_1.") {
            return plain(format!("{side}.mid_block.resnets.0.{}", resnet(inner)));
        }
        if let Some(inner) = mid.strip_prefix("block_2.") {
            return plain(format!("{side}.mid_block.resnets.1.{}", resnet(inner)));
        }
        let inner = mid.strip_prefix("attn_1.")?;
        let (module, param) = inner.split_once('.')?;
        let (new, transform) = match module {
            "norm" => ("group_norm", Transform::Identity),
            "q" => ("to_q", Transform::ConvToLinear),
            "k" => ("to_k", Transform::ConvToLinear),
            "v" => ("to_v", Transform::ConvToLinear),
            "proj_out" => ("to_out.0", Transform::ConvToLinear),
            _ => return None,
        };
        let transform = if param == "weight" {
            transform
        } else {
            Transform::Identity
        };
        return Some((
            format!("{side}.mid_block.attentions.0.{new}.{param}"),
            transform,
        ));
    }
    if side == "encoder" {
        let (i, inner) = indexed(rest, "down.")?;
        if let Some((j, param)) = indexed(inner, "block.") {
            return plain(format!(
                "encoder.down_blocks.{i}.resnets.{j}.{}",
                resnet(param)
            ));
        }
        let param = inner.strip_prefix("downsample.conv.")?;
        return plain(format!(
            "encoder.down_blocks.{i}.downsamplers.0.conv.{param}"
        ));
    }
    let (i, inner) = indexed(rest, "up.")?;
    let block = up_blocks.checked_sub(1 + i)?;
    if let Some((j, param)) = indexed(inner, "block.") {
        return plain(format!(
            "decoder.up_blocks.{block}.resnets.{j}.{}",
            resnet(param)
        ));
    }
    let param = inner.strip_prefix("upsample.conv.")?;
    plain(format!(
        "decoder.up_blocks.{block}.upsamplers.0.conv.{param}"
    ))
}

/// An OpenAI-CLIP text encoder key (without `cond_stage_model.transformer.`): already in
/// transformers' layout; only the non-weight buffer `position_ids` is dropped.
pub fn clip_ldm_to_diffusers(key: &str) -> Option<String> {
    (!key.ends_with("position_ids")).then(|| key.to_string())
}

/// An OpenCLIP (SD2) text encoder key (without `cond_stage_model.model.`) → transformers
/// names; the fused `in_proj` q/k/v tensors become three entries. The first `layers` encoder
/// layers are kept (diffusers drops the last of ViT-H's 24: SD2 conditions on the penultimate).
/// `width` is the model width (rows per q/k/v part).
pub fn open_clip_ldm_to_diffusers(
    key: &str,
    layers: usize,
    width: usize,
) -> Vec<(String, Transform)> {
    let plain = |name: &str| vec![(name.to_string(), Transform::Identity)];
    match key {
        "token_embedding.weight" => return plain("text_model.embeddings.token_embedding.weight"),
        "positional_embedding" => return plain("text_model.embeddings.position_embedding.weight"),
        "ln_final.weight" => return plain("text_model.final_layer_norm.weight"),
        "ln_final.bias" => return plain("text_model.final_layer_norm.bias"),
        _ => {}
    }
    let Some((layer, rest)) = indexed(key, "transformer.resblocks.") else {
        return Vec::new();
    };
    if layer >= layers {
        return Vec::new();
    }
    let base = format!("text_model.encoder.layers.{layer}");
    let split = |param: &str| {
        ["q_proj", "k_proj", "v_proj"]
            .iter()
            .enumerate()
            .map(|(part, proj)| {
                (
                    format!("{base}.self_attn.{proj}.{param}"),
                    Transform::Rows {
                        start: part * width,
                        len: width,
                    },
                )
            })
            .collect::<Vec<_>>()
    };
    match rest {
        "attn.in_proj_weight" => return split("weight"),
        "attn.in_proj_bias" => return split("bias"),
        _ => {}
    }
    let table = [
        ("ln_1", "layer_norm1"),
        ("ln_2", "layer_norm2"),
        ("mlp.c_fc", "mlp.fc1"),
        ("mlp.c_proj", "mlp.fc2"),
        ("attn.out_proj", "self_attn.out_proj"),
    ];
    match rename_prefix(rest, &table) {
        Some(inner) => vec![(format!("{base}.{inner}"), Transform::Identity)],
        None => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unet_keys_of_sd15() {
        let map = |k| unet_ldm_to_diffusers(k, 2);
        let cases = [
            ("time_embed.0.weight", "time_embedding.linear_1.weight"),
            ("input_blocks.0.0.bias", "conv_in.bias"),
            (
                "input_blocks.1.0.in_layers.0.weight",
                "down_blocks.0.resnets.0.norm1.weight",
            ),
            (
                "input_blocks.2.1.transformer_blocks.0.attn1.to_q.weight",
                "down_blocks.0.attentions.1.transformer_blocks.0.attn1.to_q.weight",
            ),
            (
                "input_blocks.3.0.op.weight",
                "down_blocks.0.downsamplers.0.conv.weight",
            ),
            (
                "input_blocks.4.0.skip_connection.weight",
                "down_blocks.1.resnets.0.conv_shortcut.weight",
            ),
            (
                "input_blocks.11.0.emb_layers.1.bias",
                "down_blocks.3.resnets.1.time_emb_proj.bias",
            ),
            (
                "middle_block.1.proj_in.weight",
                "mid_block.attentions.0.proj_in.weight",
            ),
            (
                "middle_block.2.out_layers.3.weight",
                "mid_block.resnets.1.conv2.weight",
            ),
            (
                "output_blocks.2.1.conv.weight",
                "up_blocks.0.upsamplers.0.conv.weight",
            ),
            (
                "output_blocks.5.2.conv.bias",
                "up_blocks.1.upsamplers.0.conv.bias",
            ),
            (
                "output_blocks.5.1.norm.weight",
                "up_blocks.1.attentions.2.norm.weight",
            ),
            ("out.2.weight", "conv_out.weight"),
        ];
        for (ldm, diffusers) in cases {
            assert_eq!(map(ldm).as_deref(), Some(diffusers), "{ldm}");
        }
        assert_eq!(map("input_blocks.1.2.weight"), None);
    }

    #[test]
    fn unet_keys_round_trip() {
        let has_attention = |b: usize| b > 0;
        for name in [
            "down_blocks.2.downsamplers.0.conv.weight",
            "down_blocks.1.attentions.1.proj_out.bias",
            "up_blocks.0.upsamplers.0.conv.weight",
            "up_blocks.2.upsamplers.0.conv.bias",
            "up_blocks.3.resnets.2.conv_shortcut.weight",
            "mid_block.resnets.1.time_emb_proj.weight",
            "time_embedding.linear_2.bias",
        ] {
            let ldm = unet_diffusers_to_ldm(name, 2, has_attention).unwrap();
            assert_eq!(
                unet_ldm_to_diffusers(&ldm, 2).as_deref(),
                Some(name),
                "{ldm}"
            );
        }
    }

    #[test]
    fn controlnet_keys() {
        let map = |k| controlnet_ldm_to_diffusers(k, 2, 14);
        assert_eq!(
            map("input_hint_block.0.weight").as_deref(),
            Some("controlnet_cond_embedding.conv_in.weight")
        );
        assert_eq!(
            map("input_hint_block.12.bias").as_deref(),
            Some("controlnet_cond_embedding.blocks.5.bias")
        );
        assert_eq!(
            map("input_hint_block.14.weight").as_deref(),
            Some("controlnet_cond_embedding.conv_out.weight")
        );
        assert_eq!(
            map("zero_convs.11.0.weight").as_deref(),
            Some("controlnet_down_blocks.11.weight")
        );
        assert_eq!(
            map("middle_block_out.0.bias").as_deref(),
            Some("controlnet_mid_block.bias")
        );
        assert_eq!(
            map("input_blocks.1.1.proj_in.weight").as_deref(),
            Some("down_blocks.0.attentions.0.proj_in.weight")
        );
    }

    #[test]
    fn vae_keys() {
        let map = |k| vae_ldm_to_diffusers(k, 4);
        assert_eq!(
            map("encoder.down.0.block.1.nin_shortcut.weight"),
            Some((
                "encoder.down_blocks.0.resnets.1.conv_shortcut.weight".into(),
                Transform::Identity
            ))
        );
        assert_eq!(
            map("decoder.up.0.block.2.conv1.bias").unwrap().0,
            "decoder.up_blocks.3.resnets.2.conv1.bias"
        );
        assert_eq!(
            map("decoder.up.3.upsample.conv.weight").unwrap().0,
            "decoder.up_blocks.0.upsamplers.0.conv.weight"
        );
        assert_eq!(
            map("encoder.mid.attn_1.q.weight"),
            Some((
                "encoder.mid_block.attentions.0.to_q.weight".into(),
                Transform::ConvToLinear
            ))
        );
        assert_eq!(
            map("decoder.mid.attn_1.proj_out.bias"),
            Some((
                "decoder.mid_block.attentions.0.to_out.0.bias".into(),
                Transform::Identity
            ))
        );
        assert_eq!(
            map("encoder.norm_out.weight").unwrap().0,
            "encoder.conv_norm_out.weight"
        );
        assert_eq!(
            map("decoder.mid.block_2.norm1.weight").unwrap().0,
            "decoder.mid_block.resnets.1.norm1.weight"
        );
        assert_eq!(map("model_ema.decay"), None);
    }

    #[test]
    fn open_clip_splits_in_proj() {
        let parts =
            open_clip_ldm_to_diffusers("transformer.resblocks.3.attn.in_proj_weight", 23, 8);
        assert_eq!(parts.len(), 3);
        assert_eq!(
            parts[1].0,
            "text_model.encoder.layers.3.self_attn.k_proj.weight"
        );
        assert_eq!(parts[1].1, Transform::Rows { start: 8, len: 8 });
        assert!(
            open_clip_ldm_to_diffusers("transformer.resblocks.23.ln_1.weight", 23, 8).is_empty()
        );
        assert_eq!(
            open_clip_ldm_to_diffusers("transformer.resblocks.0.mlp.c_fc.bias", 23, 8)[0].0,
            "text_model.encoder.layers.0.mlp.fc1.bias"
        );
    }
}
