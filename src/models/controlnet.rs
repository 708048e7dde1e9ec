//! ControlNet (diffusers `ControlNetModel`): a copy of the UNet's encoder that reads a control
//! image and produces residuals for the UNet's skip connections and mid block.
//!
//! Several ControlNets, each with its own scale and active step range, are combined by the
//! sampler: it runs the active ones with their `conditioning_scale` and adds the outputs with
//! [`sum_control_residuals`] before the UNet call.

use std::path::Path;

use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;
use serde::Deserialize;

use crate::models::unet::blocks::{down_path, DownBlock, MidBlock};
use crate::models::unet::config::{MidBlockPolicy, UNetConfig};
use crate::models::unet::embeddings::{timestep_features, TimestepEmbedding};
use crate::models::unet::{ForwardContext, Result, UNetError};
use crate::nn::layers::{conv2d, Conv2d};
use crate::nn::AttentionBudget;

/// Channel order the ControlNet expects its control image in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelOrder {
    Rgb,
    /// The model was trained on BGR images: the RGB control image is flipped before use.
    Bgr,
}

/// diffusers `ControlNetModel` config (`config.json`).
#[derive(Debug, Clone)]
pub struct ControlNetConfig {
    /// The UNet-shaped part (down blocks, mid block, attention settings). Its up-path fields
    /// (`up_block_types`, `out_channels`) are not used by a ControlNet.
    pub backbone: UNetConfig,
    /// Channels of the control image (3).
    pub conditioning_channels: usize,
    /// Channels of the conditioning-embedding convs; each step after the first halves the size
    /// (SD1.5: `[16, 32, 96, 256]`, i.e. control images at 8× the latent size).
    pub conditioning_embedding_out_channels: Vec<usize>,
    pub channel_order: ChannelOrder,
    /// Shuffle-style ControlNets average their residuals over space (and ignore guess mode).
    pub global_pool_conditions: bool,
}

#[derive(Deserialize)]
struct ControlNetFields {
    #[serde(default = "three")]
    conditioning_channels: usize,
    #[serde(default = "default_embedding_channels")]
    conditioning_embedding_out_channels: Vec<usize>,
    #[serde(default = "rgb")]
    controlnet_conditioning_channel_order: String,
    #[serde(default)]
    global_pool_conditions: bool,
}

fn three() -> usize {
    3
}
fn default_embedding_channels() -> Vec<usize> {
    vec![16, 32, 96, 256]
}
fn rgb() -> String {
    "rgb".into()
}

impl ControlNetConfig {
    /// Reads and validates a diffusers ControlNet `config.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| UNetError::ConfigRead {
            path: path.to_path_buf(),
            source,
        })?;
        let parse_err = |source| UNetError::ConfigParse {
            path: path.to_path_buf(),
            source,
        };
        let value: serde_json::Value = serde_json::from_str(&text).map_err(parse_err)?;
        Self::from_json(&value).map_err(|e| match e {
            UNetError::ConfigParse { source, .. } => parse_err(source),
            other => other,
        })
    }

    /// Builds the config from a parsed `config.json`.
    pub fn from_json(value: &serde_json::Value) -> Result<Self> {
        let parse_err = |source| UNetError::ConfigParse {
            path: "<json>".into(),
            source,
        };
        let backbone = UNetConfig::deserialize(value).map_err(parse_err)?;
        let fields = ControlNetFields::deserialize(value).map_err(parse_err)?;
        let channel_order = match fields.controlnet_conditioning_channel_order.as_str() {
            "rgb" => ChannelOrder::Rgb,
            "bgr" => ChannelOrder::Bgr,
            other => {
                return Err(UNetError::Unsupported {
                    field: "controlnet_conditioning_channel_order",
                    value: other.to_string(),
                    supported: "rgb or bgr",
                })
            }
        };
        let config = Self {
            backbone,
            conditioning_channels: fields.conditioning_channels,
            conditioning_embedding_out_channels: fields.conditioning_embedding_out_channels,
            channel_order,
            global_pool_conditions: fields.global_pool_conditions,
        };
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<()> {
        self.backbone.encoder_spec(MidBlockPolicy::ControlNet)?;
        if self.conditioning_embedding_out_channels.is_empty() {
            return Err(UNetError::InvalidConfig {
                field: "conditioning_embedding_out_channels",
                reason: "is empty".into(),
            });
        }
        Ok(())
    }

    /// How much larger than the latents the control image is (8 for SD).
    pub fn control_image_scale(&self) -> usize {
        1 << (self.conditioning_embedding_out_channels.len() - 1)
    }
}

/// Residuals for one UNet call.
#[derive(Debug, Clone)]
pub struct ControlNetOutput {
    /// One per UNet skip connection, in down-path order.
    pub down_residuals: Vec<Tensor>,
    pub mid_residual: Tensor,
}

/// Adds the residuals of several ControlNets (each already scaled by its own
/// `conditioning_scale`), as diffusers' `MultiControlNetModel` does.
pub fn sum_control_residuals(outputs: &[ControlNetOutput]) -> Result<ControlNetOutput> {
    let downs: Vec<&[Tensor]> = outputs
        .iter()
        .map(|o| o.down_residuals.as_slice())
        .collect();
    let down_residuals = sum_down_residuals(&downs)?;
    let mut mids = outputs.iter().map(|o| &o.mid_residual);
    let mut mid_residual = mids.next().cloned().ok_or(nothing_to_sum())?;
    for mid in mids {
        mid_residual = (&mid_residual + mid)?;
    }
    Ok(ControlNetOutput {
        down_residuals,
        mid_residual,
    })
}

/// Adds several ControlNets' down residuals element-wise (all of the same length: the full
/// list, or the first few a DeepCache shallow pass reads).
pub fn sum_down_residuals(lists: &[&[Tensor]]) -> Result<Vec<Tensor>> {
    let (first, rest) = lists.split_first().ok_or(nothing_to_sum())?;
    let mut sum = first.to_vec();
    for (n, list) in rest.iter().enumerate() {
        if list.len() != sum.len() {
            return Err(UNetError::InvalidInput {
                input: "controlnet outputs",
                reason: format!(
                    "output {} has {} down residuals, output 0 has {}",
                    n + 1,
                    list.len(),
                    sum.len()
                ),
            });
        }
        for (acc, r) in sum.iter_mut().zip(list.iter()) {
            *acc = (&*acc + r)?;
        }
    }
    Ok(sum)
}

fn nothing_to_sum() -> UNetError {
    UNetError::InvalidInput {
        input: "controlnet outputs",
        reason: "nothing to sum".into(),
    }
}

/// `ControlNetConditioningEmbedding`: a small strided conv stack from control image to latent size.
#[derive(Debug, Clone)]
struct ConditioningEmbedding {
    conv_in: Conv2d,
    blocks: Vec<Conv2d>,
    conv_out: Conv2d,
}

impl ConditioningEmbedding {
    fn load(
        vb: VarBuilder,
        in_channels: usize,
        channels: &[usize],
        out_channels: usize,
    ) -> Result<Self> {
        let mut blocks = Vec::with_capacity(2 * (channels.len() - 1));
        for (i, pair) in channels.windows(2).enumerate() {
            blocks.push(conv2d(
                vb.pp(format!("blocks.{}", 2 * i)),
                pair[0],
                pair[0],
                3,
                1,
                1,
            )?);
            blocks.push(conv2d(
                vb.pp(format!("blocks.{}", 2 * i + 1)),
                pair[0],
                pair[1],
                3,
                2,
                1,
            )?);
        }
        Ok(Self {
            conv_in: conv2d(vb.pp("conv_in"), in_channels, channels[0], 3, 1, 1)?,
            blocks,
            conv_out: conv2d(
                vb.pp("conv_out"),
                channels[channels.len() - 1],
                out_channels,
                3,
                1,
                1,
            )?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = candle_nn::ops::silu(&self.conv_in.forward(x)?)?;
        for conv in &self.blocks {
            x = candle_nn::ops::silu(&conv.forward(&x)?)?;
        }
        Ok(self.conv_out.forward(&x)?)
    }
}

/// diffusers `ControlNetModel`.
#[derive(Debug, Clone)]
pub struct ControlNetModel {
    config: ControlNetConfig,
    conv_in: Conv2d,
    time_embedding: TimestepEmbedding,
    cond_embedding: ConditioningEmbedding,
    down_blocks: Vec<DownBlock>,
    mid_block: MidBlock,
    /// `controlnet_down_blocks`: 1×1 convs on each skip tensor.
    zero_convs: Vec<Conv2d>,
    /// `controlnet_mid_block`.
    mid_zero_conv: Conv2d,
    budget: AttentionBudget,
}

impl ControlNetModel {
    pub fn load(vb: VarBuilder, config: &ControlNetConfig) -> Result<Self> {
        let unet = &config.backbone;
        let encoder = unet.encoder_spec(MidBlockPolicy::ControlNet)?;
        let c0 = unet.block_out_channels[0];
        let temb = encoder.time_embed_dim;
        let eps = encoder.norm_eps;
        let down_blocks = encoder
            .down
            .iter()
            .enumerate()
            .map(|(i, spec)| {
                let path = format!("down_blocks.{i}");
                DownBlock::load(
                    vb.pp(&path),
                    spec,
                    temb,
                    eps,
                    unet.downsample_padding,
                    &path,
                )
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let Some(mid_spec) = &encoder.mid else {
            return Err(UNetError::Unsupported {
                field: "mid_block_type",
                value: "null".into(),
                supported: "UNetMidBlock2DCrossAttn or UNetMidBlock2D",
            });
        };
        // One zero conv per skip tensor: conv_in's output, each layer, each downsampler.
        let mut skip_channels = vec![c0];
        for spec in &encoder.down {
            skip_channels.extend(std::iter::repeat_n(spec.out_channels, spec.layers));
            if spec.add_downsample {
                skip_channels.push(spec.out_channels);
            }
        }
        let zero_convs = skip_channels
            .iter()
            .enumerate()
            .map(|(i, &c)| conv2d(vb.pp(format!("controlnet_down_blocks.{i}")), c, c, 1, 1, 0))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self {
            config: config.clone(),
            conv_in: conv2d(
                vb.pp("conv_in"),
                unet.in_channels,
                c0,
                unet.conv_in_kernel,
                1,
                unet.conv_in_kernel / 2,
            )?,
            time_embedding: TimestepEmbedding::load(vb.pp("time_embedding"), c0, temb)?,
            cond_embedding: ConditioningEmbedding::load(
                vb.pp("controlnet_cond_embedding"),
                config.conditioning_channels,
                &config.conditioning_embedding_out_channels,
                c0,
            )?,
            down_blocks,
            mid_block: MidBlock::load(vb.pp("mid_block"), mid_spec, temb, eps)?,
            zero_convs,
            mid_zero_conv: conv2d(
                vb.pp("controlnet_mid_block"),
                mid_spec.channels,
                mid_spec.channels,
                1,
                1,
                0,
            )?,
            budget: AttentionBudget::default(),
        })
    }

    pub fn config(&self) -> &ControlNetConfig {
        &self.config
    }

    pub fn set_attention_budget(&mut self, budget: AttentionBudget) {
        self.budget = budget;
    }

    /// Residuals for `sample` `(b, 4, h, w)` at `timestep`, from `controlnet_cond`
    /// `(b, 3, s·h, s·w)` (RGB in [0, 1], `s` = [`ControlNetConfig::control_image_scale`]).
    /// All residuals are multiplied by `conditioning_scale`; with `guess_mode` they are in
    /// addition ramped from 0.1 (first skip) to 1.0 (mid block) on a log scale, as diffusers does.
    pub fn forward(
        &self,
        sample: &Tensor,
        timestep: f64,
        encoder_hidden_states: &Tensor,
        controlnet_cond: &Tensor,
        conditioning_scale: f64,
        guess_mode: bool,
    ) -> Result<ControlNetOutput> {
        let (down_residuals, mid_residual) = self.residuals(
            sample,
            timestep,
            encoder_hidden_states,
            controlnet_cond,
            conditioning_scale,
            guess_mode,
            None,
        )?;
        Ok(ControlNetOutput {
            down_residuals,
            mid_residual: mid_residual
                .ok_or_else(|| candle_core::Error::Msg("controlnet: no mid residual".into()))?,
        })
    }

    /// The first `count` down residuals of [`Self::forward`] only, for a UNet pass that reads
    /// no more (DeepCache's shallow pass, see `UNet2DConditionModel::shallow_skip_count`):
    /// the same values, without running the deeper blocks.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_shallow(
        &self,
        sample: &Tensor,
        timestep: f64,
        encoder_hidden_states: &Tensor,
        controlnet_cond: &Tensor,
        conditioning_scale: f64,
        guess_mode: bool,
        count: usize,
    ) -> Result<Vec<Tensor>> {
        Ok(self
            .residuals(
                sample,
                timestep,
                encoder_hidden_states,
                controlnet_cond,
                conditioning_scale,
                guess_mode,
                Some(count),
            )?
            .0)
    }

    /// Down residuals (the first `count` only, then without the mid one) and mid residual.
    #[allow(clippy::too_many_arguments)]
    fn residuals(
        &self,
        sample: &Tensor,
        timestep: f64,
        encoder_hidden_states: &Tensor,
        controlnet_cond: &Tensor,
        conditioning_scale: f64,
        guess_mode: bool,
        count: Option<usize>,
    ) -> Result<(Vec<Tensor>, Option<Tensor>)> {
        let unet = &self.config.backbone;
        let (batch, channels, _, _) = sample.dims4()?;
        if channels != unet.in_channels {
            return Err(UNetError::InvalidInput {
                input: "sample",
                reason: format!(
                    "{channels} channels, the ControlNet takes {}",
                    unet.in_channels
                ),
            });
        }
        if encoder_hidden_states.dim(0)? != batch || controlnet_cond.dim(0)? != batch {
            return Err(UNetError::InvalidInput {
                input: "encoder_hidden_states / controlnet_cond",
                reason: format!(
                    "batches {} / {} differ from the sample batch {batch}",
                    encoder_hidden_states.dim(0)?,
                    controlnet_cond.dim(0)?
                ),
            });
        }
        let cond = match self.config.channel_order {
            ChannelOrder::Rgb => controlnet_cond.clone(),
            ChannelOrder::Bgr => {
                let c = controlnet_cond.dim(1)?;
                let rev = Tensor::from_vec(
                    (0..c as u32).rev().collect::<Vec<_>>(),
                    c,
                    controlnet_cond.device(),
                )?;
                controlnet_cond.index_select(&rev, 1)?
            }
        };
        let features = timestep_features(
            timestep,
            batch,
            unet.block_out_channels[0],
            unet.flip_sin_to_cos,
            unet.freq_shift,
            sample.device(),
        )?
        .to_dtype(sample.dtype())?;
        let temb_act = candle_nn::ops::silu(&self.time_embedding.forward(&features)?)?;
        let ctx = ForwardContext {
            temb_act: &temb_act,
            encoder_hidden_states,
            attention_hook: None,
            layer_hook: None,
            budget: self.budget,
        };

        let x = self.conv_in.forward(sample)?;
        let cond = self.cond_embedding.forward(&cond)?;
        if cond.dims() != x.dims() {
            return Err(UNetError::InvalidInput {
                input: "controlnet_cond",
                reason: format!(
                    "embeds to {:?} but the latents give {:?}; the control image must be {}x the latent size",
                    cond.dims(),
                    x.dims(),
                    self.config.control_image_scale()
                ),
            });
        }
        let (x, skips) = down_path(&self.down_blocks, (x + cond)?, &ctx, count)?;
        let mid = match count {
            Some(_) => None,
            None => Some(self.mid_block.forward(&x, &ctx)?),
        };

        // The guess-mode ramp spans every skip, also when only the first few are made.
        let n = 1 + self
            .down_blocks
            .iter()
            .map(|b| b.skip_count())
            .sum::<usize>();
        let scales: Vec<f64> = if guess_mode && !self.config.global_pool_conditions {
            // torch.logspace(-1, 0, n + 1) in f32, times the conditioning scale (in f32).
            (0..=n)
                .map(|i| {
                    let s = 10f64.powf(-1.0 + i as f64 / n as f64) as f32;
                    (s * conditioning_scale as f32) as f64
                })
                .collect()
        } else {
            vec![conditioning_scale as f32 as f64; n + 1]
        };
        let pool = |t: Tensor| -> candle_core::Result<Tensor> {
            if self.config.global_pool_conditions {
                t.mean_keepdim(3)?.mean_keepdim(2)
            } else {
                Ok(t)
            }
        };
        let down_residuals = skips
            .iter()
            .zip(&self.zero_convs)
            .zip(&scales)
            .map(|((skip, conv), &s)| pool((conv.forward(skip)? * s)?))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let mid_residual = match mid {
            Some(mid) => Some(pool((self.mid_zero_conv.forward(&mid)? * scales[n])?)?),
            None => None,
        };
        Ok((down_residuals, mid_residual))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn output(values: &[f32], mid: f32) -> ControlNetOutput {
        let dev = Device::Cpu;
        ControlNetOutput {
            down_residuals: values
                .iter()
                .map(|&v| Tensor::full(v, (1, 2, 2, 2), &dev).unwrap())
                .collect(),
            mid_residual: Tensor::full(mid, (1, 2, 1, 1), &dev).unwrap(),
        }
    }

    #[test]
    fn sums_residuals_elementwise() {
        let sum =
            sum_control_residuals(&[output(&[1.0, 2.0], 3.0), output(&[0.5, -2.0], 4.0)]).unwrap();
        let firsts: Vec<f32> = sum
            .down_residuals
            .iter()
            .map(|t| {
                t.flatten_all()
                    .unwrap()
                    .get(0)
                    .unwrap()
                    .to_scalar()
                    .unwrap()
            })
            .collect();
        assert_eq!(firsts, vec![1.5, 0.0]);
        assert_eq!(
            sum.mid_residual
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap(),
            vec![7.0, 7.0]
        );
        assert!(sum_control_residuals(&[]).is_err());
        assert!(sum_control_residuals(&[output(&[1.0], 0.0), output(&[1.0, 2.0], 0.0)]).is_err());
    }

    #[test]
    fn config_defaults_and_channel_order() {
        let json: serde_json::Value = serde_json::from_str(
            r#"{"_class_name": "ControlNetModel", "cross_attention_dim": 768,
                "controlnet_conditioning_channel_order": "bgr"}"#,
        )
        .unwrap();
        let c = ControlNetConfig::from_json(&json).unwrap();
        assert_eq!(c.channel_order, ChannelOrder::Bgr);
        assert_eq!(c.conditioning_embedding_out_channels, vec![16, 32, 96, 256]);
        assert_eq!(c.control_image_scale(), 8);
        let bad: serde_json::Value =
            serde_json::from_str(r#"{"controlnet_conditioning_channel_order": "gbr"}"#).unwrap();
        assert!(ControlNetConfig::from_json(&bad).is_err());
    }
}
