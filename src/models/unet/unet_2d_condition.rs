//! `UNet2DConditionModel` (SD1.x / SD2.x, including 9-channel inpainting models).

use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;

use super::blocks::{down_path, DownBlock, MidBlock, UpBlock};
use super::config::{MidBlockPolicy, UNetConfig};
use super::deep_cache::{CacheBranch, DeepCacheCall};
use super::embeddings::{timestep_features, TimestepEmbedding};
use super::error::{Result, UNetError};
use super::ForwardContext;
use crate::models::attention_hook::{LayerOutputHook, SelfAttentionHook};
use crate::nn::layers::{conv2d, Conv2d, GroupNorm};
use crate::nn::AttentionBudget;

/// Optional inputs of one UNet call. Build with `..Default::default()` so new fields do not
/// break callers.
#[derive(Clone, Copy, Default)]
pub struct UNetExtras<'a> {
    /// ControlNet residuals added to the down-path skip tensors, one per skip (conv_in output,
    /// every down-block layer, every downsampler), in that order; usually the sum over all
    /// active ControlNets (see `controlnet::sum_control_residuals`).
    pub down_residuals: Option<&'a [Tensor]>,
    /// ControlNet residual added to the mid-block output.
    pub mid_residual: Option<&'a Tensor>,
    /// Called in every self-attention (cross-frame attention).
    pub attention_hook: Option<&'a dyn SelfAttentionHook>,
    /// Called where motion modules run (AnimateDiff); see `attention_hook` module docs.
    pub layer_hook: Option<&'a dyn LayerOutputHook>,
}

/// The denoising UNet. Weights use diffusers' state-dict names; load them with a `VarBuilder`
/// over the `diffusion_pytorch_model[.fp16].safetensors` file with dtype f32 (fp16 files are
/// converted on load).
#[derive(Debug, Clone)]
pub struct UNet2DConditionModel {
    config: UNetConfig,
    conv_in: Conv2d,
    time_embedding: TimestepEmbedding,
    down_blocks: Vec<DownBlock>,
    mid_block: Option<MidBlock>,
    up_blocks: Vec<UpBlock>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
    budget: AttentionBudget,
}

impl UNet2DConditionModel {
    pub fn load(vb: VarBuilder, config: &UNetConfig) -> Result<Self> {
        let encoder = config.encoder_spec(MidBlockPolicy::UNet)?;
        let up_specs = config.up_block_specs()?;
        let c0 = config.block_out_channels[0];
        let temb = encoder.time_embed_dim;
        let eps = encoder.norm_eps;
        let conv_in = conv2d(
            vb.pp("conv_in"),
            config.in_channels,
            c0,
            config.conv_in_kernel,
            1,
            config.conv_in_kernel / 2,
        )?;
        let time_embedding = TimestepEmbedding::load(vb.pp("time_embedding"), c0, temb)?;
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
                    config.downsample_padding,
                    &path,
                )
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let mid_block = match &encoder.mid {
            Some(spec) => Some(MidBlock::load(vb.pp("mid_block"), spec, temb, eps)?),
            None => None,
        };
        let up_blocks = up_specs
            .iter()
            .enumerate()
            .map(|(i, spec)| {
                let path = format!("up_blocks.{i}");
                UpBlock::load(vb.pp(&path), spec, temb, eps, &path)
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self {
            config: config.clone(),
            conv_in,
            time_embedding,
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out: GroupNorm::load(vb.pp("conv_norm_out"), encoder.norm_groups, c0, eps)?,
            conv_out: conv2d(
                vb.pp("conv_out"),
                c0,
                config.out_channels,
                config.conv_out_kernel,
                1,
                config.conv_out_kernel / 2,
            )?,
            budget: AttentionBudget::default(),
        })
    }

    pub fn config(&self) -> &UNetConfig {
        &self.config
    }

    /// Bounds the attention score blocks (memory vs. matmul size).
    pub fn set_attention_budget(&mut self, budget: AttentionBudget) {
        self.budget = budget;
    }

    /// Predicts the noise (or v) for `sample` `(b, in_channels, h, w)` at `timestep`, conditioned
    /// on `encoder_hidden_states` `(b, tokens, cross_attention_dim)`.
    pub fn forward(
        &self,
        sample: &Tensor,
        timestep: f64,
        encoder_hidden_states: &Tensor,
        extras: &UNetExtras,
    ) -> Result<Tensor> {
        Ok(self
            .forward_cached(sample, timestep, encoder_hidden_states, extras, None)?
            .0)
    }

    /// [`Self::forward`] as one DeepCache call ([`super::deep_cache`]): a refresh also returns
    /// the features entering the cache branch; a reuse runs only the shallow part from the
    /// features a refresh returned (its `down_residuals` may stop after the skip tensors the
    /// shallow part reads, [`Self::shallow_skip_count`]).
    pub fn forward_cached(
        &self,
        sample: &Tensor,
        timestep: f64,
        encoder_hidden_states: &Tensor,
        extras: &UNetExtras,
        cache: Option<DeepCacheCall>,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let (batch, channels, height, width) = sample.dims4()?;
        self.check_inputs(channels, batch, encoder_hidden_states)?;
        let n_blocks = self.down_blocks.len();
        // Sizes not divisible by the total downsampling need explicit upsample sizes.
        let factor = 1usize << (n_blocks - 1);
        let forward_upsample_size = height % factor != 0 || width % factor != 0;
        let branch = match cache {
            Some(call) => Some((call.branch(), self.branch_start(call.branch())?)),
            None => None,
        };
        let reused = match cache {
            Some(DeepCacheCall::Reuse { features, .. }) => Some(features),
            _ => None,
        };

        let sample = if self.config.center_input_sample {
            ((sample * 2.0)? - 1.0)?
        } else {
            sample.clone()
        };
        let features = timestep_features(
            timestep,
            batch,
            self.config.block_out_channels[0],
            self.config.flip_sin_to_cos,
            self.config.freq_shift,
            sample.device(),
        )?
        .to_dtype(sample.dtype())?;
        let emb = self.time_embedding.forward(&features)?;
        let temb_act = candle_nn::ops::silu(&emb)?;
        let ctx = ForwardContext {
            temb_act: &temb_act,
            encoder_hidden_states,
            attention_hook: extras.attention_hook,
            layer_hook: extras.layer_hook,
            budget: self.budget,
        };

        let shallow = match (reused, branch) {
            (Some(_), Some((b, _))) => Some(self.shallow_skip_count(b)?),
            _ => None,
        };
        let (mut x, mut skips) = down_path(
            &self.down_blocks,
            self.conv_in.forward(&sample)?,
            &ctx,
            shallow,
        )?;
        if let Some(residuals) = extras.down_residuals {
            // A shallow pass reads only the first skip tensors; longer residual lists are fine.
            let enough = match shallow {
                Some(_) => residuals.len() >= skips.len(),
                None => residuals.len() == skips.len(),
            };
            if !enough {
                return Err(UNetError::InvalidInput {
                    input: "down_residuals",
                    reason: format!(
                        "{} tensors given, the UNet has {} skip connections",
                        residuals.len(),
                        skips.len()
                    ),
                });
            }
            for (i, (skip, residual)) in skips.iter_mut().zip(residuals).enumerate() {
                if skip.dims() != residual.dims() {
                    return Err(UNetError::InvalidInput {
                        input: "down_residuals",
                        reason: format!(
                            "residual {i} has shape {:?}, expected {:?}",
                            residual.dims(),
                            skip.dims()
                        ),
                    });
                }
                *skip = (&*skip + residual)?;
            }
        }
        if reused.is_none() {
            if let Some(mid) = &self.mid_block {
                x = mid.forward(&x, &ctx)?;
            }
            if let Some(residual) = extras.mid_residual {
                if self.mid_block.is_none() || residual.dims() != x.dims() {
                    return Err(UNetError::InvalidInput {
                        input: "mid_residual",
                        reason: format!(
                            "shape {:?} does not match the mid-block output {:?}",
                            residual.dims(),
                            x.dims()
                        ),
                    });
                }
                x = (x + residual)?;
            }
        }
        let n_up = self.up_blocks.len();
        let mut captured = None;
        for (i, block) in self.up_blocks.iter().enumerate() {
            // Up block i mirrors down block n_up-1-i (DeepCache counts blocks this way).
            let at_branch = branch.filter(|(b, _)| b.block == n_up - 1 - i);
            let from = match (reused, at_branch) {
                // Deeper than the branch: not run when reusing.
                (Some(_), None) if branch.is_some_and(|(b, _)| n_up - 1 - i > b.block) => continue,
                (Some(features), Some((_, start))) => {
                    x = features.clone();
                    start
                }
                _ => 0,
            };
            let block_skips = skips.split_off(skips.len() - (block.layers() - from));
            let upsample_size = match skips.last() {
                Some(next) if forward_upsample_size && i + 1 < n_up => {
                    let (_, _, h, w) = next.dims4()?;
                    Some((h, w))
                }
                _ => None,
            };
            let capture = match (reused, at_branch) {
                (None, Some((_, start))) => Some(start),
                _ => None,
            };
            let (out, features) =
                block.forward_from(&x, &block_skips, from, capture, upsample_size, &ctx)?;
            x = out;
            if features.is_some() {
                captured = features;
            }
        }
        let x = self.conv_norm_out.forward_silu(&x)?;
        Ok((self.conv_out.forward(&x)?, captured))
    }

    /// The up-block layer (forward order) the branch enters at.
    fn branch_start(&self, branch: CacheBranch) -> Result<usize> {
        let n_up = self.up_blocks.len();
        let invalid = |reason: String| UNetError::InvalidInput {
            input: "deep cache branch",
            reason,
        };
        if branch.block >= n_up {
            return Err(invalid(format!(
                "block {} of a UNet with {n_up} up blocks",
                branch.block
            )));
        }
        let layers = self.up_blocks[n_up - 1 - branch.block].layers();
        if branch.layer >= layers {
            return Err(invalid(format!(
                "layer {} of a block with {layers} layers",
                branch.layer
            )));
        }
        Ok(layers - 1 - branch.layer)
    }

    /// How many skip tensors (conv_in output first) a DeepCache reuse at `branch` computes
    /// and reads: ControlNets need only give residuals for these.
    pub fn shallow_skip_count(&self, branch: CacheBranch) -> Result<usize> {
        self.branch_start(branch)?;
        let deeper: usize = self.down_blocks[..branch.block]
            .iter()
            .map(|b| b.skip_count())
            .sum();
        Ok(1 + deeper + branch.layer)
    }

    fn check_inputs(
        &self,
        channels: usize,
        batch: usize,
        encoder_hidden_states: &Tensor,
    ) -> Result<()> {
        if channels != self.config.in_channels {
            return Err(UNetError::InvalidInput {
                input: "sample",
                reason: format!(
                    "{channels} channels, the UNet takes {}",
                    self.config.in_channels
                ),
            });
        }
        let (eb, _, _) = encoder_hidden_states.dims3()?;
        if eb != batch {
            return Err(UNetError::InvalidInput {
                input: "encoder_hidden_states",
                reason: format!("batch {eb}, sample batch is {batch}"),
            });
        }
        Ok(())
    }
}
