//! The original LDM / A1111 model yaml (`v1-inference.yaml`, `v2-inference-v.yaml`,
//! `cldm_v15.yaml`) turned into diffusers configs, as diffusers'
//! `create_unet_diffusers_config_from_ldm`, `create_vae_diffusers_config_from_ldm` and
//! `create_controlnet_diffusers_config_from_ldm` do.

use serde_json::{json, Value};
use serde_yaml_ng::Value as Yaml;

use crate::models::family::Family;

/// What a LDM yaml says about a checkpoint (diffusers JSON configs).
#[derive(Debug, Clone, PartialEq)]
pub struct LdmConfigs {
    pub unet: Option<Value>,
    pub vae: Option<Value>,
    pub controlnet: Option<Value>,
    /// From `cond_stage_config.target` (FrozenCLIPEmbedder → SD1, FrozenOpenCLIPEmbedder → SD2).
    pub family: Option<Family>,
    /// `parameterization: "v"` → `Some("v_prediction")`.
    pub prediction_type: Option<String>,
}

fn get<'a>(value: &'a Yaml, path: &[&str]) -> Option<&'a Yaml> {
    path.iter().try_fold(value, |v, key| v.get(*key))
}

fn usize_at(params: &Yaml, key: &str) -> Result<usize, String> {
    params
        .get(key)
        .and_then(Yaml::as_u64)
        .map(|v| v as usize)
        .ok_or_else(|| format!("{key} is missing or not a number"))
}

fn usize_list(params: &Yaml, key: &str) -> Result<Vec<usize>, String> {
    params
        .get(key)
        .and_then(Yaml::as_sequence)
        .ok_or_else(|| format!("{key} is missing or not a list"))?
        .iter()
        .map(|v| v.as_u64().map(|n| n as usize))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| format!("{key} holds a non-number"))
}

/// diffusers' UNet fields from LDM `unet_config.params` (also the ControlNet body).
fn unet_fields(params: &Yaml) -> Result<Value, String> {
    let model_channels = usize_at(params, "model_channels")?;
    let channel_mult = usize_list(params, "channel_mult")?;
    let attention_resolutions = usize_list(params, "attention_resolutions")?;
    let block_out_channels: Vec<usize> = channel_mult.iter().map(|m| model_channels * m).collect();
    let mut resolution = 1;
    let mut down = Vec::new();
    for i in 0..channel_mult.len() {
        down.push(if attention_resolutions.contains(&resolution) {
            "CrossAttnDownBlock2D"
        } else {
            "DownBlock2D"
        });
        if i + 1 != channel_mult.len() {
            resolution *= 2;
        }
    }
    let mut up = Vec::new();
    for _ in 0..channel_mult.len() {
        up.push(if attention_resolutions.contains(&resolution) {
            "CrossAttnUpBlock2D"
        } else {
            "UpBlock2D"
        });
        resolution /= 2;
    }
    let use_linear = params
        .get("use_linear_in_transformer")
        .and_then(Yaml::as_bool)
        .unwrap_or(false);
    // LDM: `num_heads: -1` (or absent) means "heads of num_head_channels channels".
    let heads = match params.get("num_heads").and_then(Yaml::as_i64) {
        Some(n) if n > 0 => json!(n),
        _ => {
            let head_channels = usize_at(params, "num_head_channels")?;
            if head_channels == 0 || model_channels % head_channels != 0 {
                return Err(format!(
                    "num_head_channels {head_channels} does not divide model_channels {model_channels}"
                ));
            }
            json!(channel_mult
                .iter()
                .map(|m| model_channels / head_channels * m)
                .collect::<Vec<_>>())
        }
    };
    let context_dim = match params.get("context_dim") {
        Some(Yaml::Sequence(dims)) => dims.first().and_then(Yaml::as_u64),
        Some(v) => v.as_u64(),
        None => None,
    }
    .ok_or("context_dim is missing")?;
    let depth = match params.get("transformer_depth") {
        Some(Yaml::Sequence(d)) => json!(d.iter().filter_map(Yaml::as_u64).collect::<Vec<_>>()),
        Some(v) => json!(v.as_u64().unwrap_or(1)),
        None => json!(1),
    };
    Ok(json!({
        "in_channels": usize_at(params, "in_channels")?,
        "block_out_channels": block_out_channels,
        "layers_per_block": usize_at(params, "num_res_blocks")?,
        "down_block_types": down,
        "up_block_types": up,
        "cross_attention_dim": context_dim,
        "attention_head_dim": heads,
        "use_linear_projection": use_linear,
        "transformer_layers_per_block": depth,
        "out_channels": params.get("out_channels").and_then(Yaml::as_u64).unwrap_or(4),
    }))
}

/// Parses a LDM model yaml.
pub fn parse(text: &str) -> Result<LdmConfigs, String> {
    let doc: Yaml = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
    let model = get(&doc, &["model", "params"]).ok_or("no model.params")?;
    let unet = match get(model, &["unet_config", "params"]) {
        Some(params) => Some(unet_fields(params).map_err(|e| format!("unet_config: {e}"))?),
        None => None,
    };
    let vae = match get(model, &["first_stage_config", "params", "ddconfig"]) {
        Some(dd) => {
            let ch = usize_at(dd, "ch")?;
            let mult = usize_list(dd, "ch_mult")?;
            let blocks = mult.len();
            let scale = model
                .get("scale_factor")
                .and_then(Yaml::as_f64)
                .unwrap_or(0.18215);
            Some(json!({
                "in_channels": usize_at(dd, "in_channels")?,
                "out_channels": usize_at(dd, "out_ch")?,
                "down_block_types": vec!["DownEncoderBlock2D"; blocks],
                "up_block_types": vec!["UpDecoderBlock2D"; blocks],
                "block_out_channels": mult.iter().map(|m| ch * m).collect::<Vec<_>>(),
                "latent_channels": usize_at(dd, "z_channels")?,
                "layers_per_block": usize_at(dd, "num_res_blocks")?,
                "scaling_factor": scale,
            }))
        }
        None => None,
    };
    let controlnet = match get(model, &["control_stage_config", "params"]) {
        Some(params) => {
            let mut body = unet_fields(params).map_err(|e| format!("control_stage_config: {e}"))?;
            if let Value::Object(fields) = &mut body {
                fields.remove("up_block_types");
                fields.remove("out_channels");
                fields.insert(
                    "conditioning_channels".into(),
                    json!(usize_at(params, "hint_channels")?),
                );
            }
            Some(body)
        }
        None => None,
    };
    let family = get(model, &["cond_stage_config", "target"])
        .and_then(Yaml::as_str)
        .and_then(|target| {
            if target.ends_with("FrozenOpenCLIPEmbedder") {
                Some(Family::Sd2)
            } else if target.ends_with("FrozenCLIPEmbedder") {
                Some(Family::Sd1)
            } else {
                None
            }
        });
    let prediction_type = match model.get("parameterization").and_then(Yaml::as_str) {
        Some("v") => Some("v_prediction".to_string()),
        Some("eps") | None => None,
        Some(other) => return Err(format!("unsupported parameterization {other:?}")),
    };
    Ok(LdmConfigs {
        unet,
        vae,
        controlnet,
        family,
        prediction_type,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::unet::UNetConfig;
    use crate::models::vae::VaeConfig;

    /// The model part of CompVis' `configs/stable-diffusion/v1-inference.yaml`.
    const V1_INFERENCE: &str = r#"
model:
  base_learning_rate: 1.0e-04
  target: ldm.models.diffusion.ddpm.LatentDiffusion
  params:
    linear_start: 0.00085
    linear_end: 0.0120
    scale_factor: 0.18215
    use_ema: False
    unet_config:
      target: ldm.modules.diffusionmodules.openaimodel.UNetModel
      params:
        image_size: 32
        in_channels: 4
        out_channels: 4
        model_channels: 320
        attention_resolutions: [ 4, 2, 1 ]
        num_res_blocks: 2
        channel_mult: [ 1, 2, 4, 4 ]
        num_heads: 8
        use_spatial_transformer: True
        transformer_depth: 1
        context_dim: 768
        use_checkpoint: True
        legacy: False
    first_stage_config:
      target: ldm.models.autoencoder.AutoencoderKL
      params:
        embed_dim: 4
        monitor: val/rec_loss
        ddconfig:
          double_z: true
          z_channels: 4
          resolution: 256
          in_channels: 3
          out_ch: 3
          ch: 128
          ch_mult: [ 1, 2, 4, 4 ]
          num_res_blocks: 2
          attn_resolutions: []
          dropout: 0.0
    cond_stage_config:
      target: ldm.modules.encoders.modules.FrozenCLIPEmbedder
"#;

    #[test]
    fn v1_inference_yaml_gives_sd15_configs() {
        let parsed = parse(V1_INFERENCE).unwrap();
        assert_eq!(parsed.family, Some(Family::Sd1));
        assert_eq!(parsed.prediction_type, None);
        let unet: UNetConfig = serde_json::from_value(parsed.unet.unwrap()).unwrap();
        unet.validate().unwrap();
        assert_eq!(unet.block_out_channels, vec![320, 640, 1280, 1280]);
        assert_eq!(unet.down_block_types[3], "DownBlock2D");
        assert_eq!(unet.up_block_types[0], "UpBlock2D");
        assert_eq!(unet.up_block_types[3], "CrossAttnUpBlock2D");
        let mut vae: VaeConfig = serde_json::from_value(parsed.vae.unwrap()).unwrap();
        vae.sample_size = VaeConfig::sd15().sample_size;
        assert_eq!(vae, VaeConfig::sd15());
    }

    #[test]
    fn v2_heads_from_head_channels() {
        let text = V1_INFERENCE
            .replace(
                "num_heads: 8",
                "num_head_channels: 64\n        use_linear_in_transformer: True",
            )
            .replace("context_dim: 768", "context_dim: 1024")
            .replace("FrozenCLIPEmbedder", "FrozenOpenCLIPEmbedder")
            .replace(
                "use_ema: False",
                "use_ema: False\n    parameterization: \"v\"",
            );
        let parsed = parse(&text).unwrap();
        let unet = parsed.unet.unwrap();
        assert_eq!(unet["attention_head_dim"], json!([5, 10, 20, 20]));
        assert_eq!(unet["use_linear_projection"], json!(true));
        assert_eq!(parsed.family, Some(Family::Sd2));
        assert_eq!(parsed.prediction_type.as_deref(), Some("v_prediction"));
    }
}
