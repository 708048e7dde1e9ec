//! Down, mid and up blocks: `DownBlock2D`/`CrossAttnDownBlock2D`, `UNetMidBlock2DCrossAttn`
//! (and ControlNet's attention-free `UNetMidBlock2D`), `UpBlock2D`/`CrossAttnUpBlock2D`.
//!
//! The plain and cross-attention variants differ only in whether a `Transformer2DModel`
//! follows each resnet, so each is one type with an optional list of transformers.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use super::config::{BlockKind, DownBlockSpec, MidBlockSpec, UpBlockSpec};
use super::resnet::{Downsample2D, ResnetBlock2D, ResnetSpec, Upsample2D};
use super::transformer::Transformer2DModel;
use super::ForwardContext;

/// Where a motion module would run, named like its weights in a diffusers `MotionAdapter`.
fn motion_position(block_path: &str, layer: usize) -> String {
    format!("{block_path}.motion_modules.{layer}")
}

/// Lets the layer hook (motion modules) replace a layer's output.
fn after_layer(x: Tensor, position: &str, ctx: &ForwardContext) -> Result<Tensor> {
    match ctx.layer_hook {
        None => Ok(x),
        Some(hook) => Ok(hook.after_layer(position, &x)?.unwrap_or(x)),
    }
}

#[derive(Debug, Clone)]
pub(crate) struct DownBlock {
    resnets: Vec<ResnetBlock2D>,
    /// Empty for `DownBlock2D`.
    attentions: Vec<Transformer2DModel>,
    downsampler: Option<Downsample2D>,
    positions: Vec<String>,
}

impl DownBlock {
    /// `path` is `down_blocks.{i}`.
    pub(crate) fn load(
        vb: VarBuilder,
        spec: &DownBlockSpec,
        temb_channels: usize,
        eps: f64,
        downsample_padding: usize,
        path: &str,
    ) -> Result<Self> {
        let mut resnets = Vec::with_capacity(spec.layers);
        let mut attentions = Vec::new();
        for j in 0..spec.layers {
            let rs = ResnetSpec {
                in_channels: if j == 0 {
                    spec.in_channels
                } else {
                    spec.out_channels
                },
                out_channels: spec.out_channels,
                temb_channels,
                groups: spec.transformer.norm_groups,
                eps,
                output_scale_factor: 1.0,
            };
            resnets.push(ResnetBlock2D::load(vb.pp(format!("resnets.{j}")), rs)?);
            if spec.kind == BlockKind::CrossAttn {
                attentions.push(Transformer2DModel::load(
                    vb.pp(format!("attentions.{j}")),
                    spec.out_channels,
                    &spec.transformer,
                    &format!("{path}.attentions.{j}"),
                )?);
            }
        }
        let downsampler = if spec.add_downsample {
            Some(Downsample2D::load(
                vb.pp("downsamplers.0"),
                spec.out_channels,
                downsample_padding,
            )?)
        } else {
            None
        };
        Ok(Self {
            resnets,
            attentions,
            downsampler,
            positions: (0..spec.layers).map(|j| motion_position(path, j)).collect(),
        })
    }

    /// Returns the block output and the skip tensors it contributes (one per layer, plus the
    /// downsampled output).
    pub(crate) fn forward(
        &self,
        x: &Tensor,
        ctx: &ForwardContext,
    ) -> Result<(Tensor, Vec<Tensor>)> {
        let mut skips = Vec::with_capacity(self.resnets.len() + 1);
        let mut x = x.clone();
        for (j, resnet) in self.resnets.iter().enumerate() {
            x = resnet.forward(&x, ctx.temb_act)?;
            if let Some(attn) = self.attentions.get(j) {
                x = attn.forward(&x, ctx)?;
            }
            x = after_layer(x, &self.positions[j], ctx)?;
            skips.push(x.clone());
        }
        if let Some(down) = &self.downsampler {
            x = down.forward(&x)?;
            skips.push(x.clone());
        }
        Ok((x, skips))
    }
}

#[derive(Debug, Clone)]
pub(crate) struct MidBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2DModel>,
    positions: Vec<String>,
}

impl MidBlock {
    pub(crate) fn load(
        vb: VarBuilder,
        spec: &MidBlockSpec,
        temb_channels: usize,
        eps: f64,
    ) -> Result<Self> {
        let rs = ResnetSpec {
            in_channels: spec.channels,
            out_channels: spec.channels,
            temb_channels,
            groups: spec.transformer.norm_groups,
            eps,
            output_scale_factor: spec.output_scale_factor,
        };
        let resnets = (0..=spec.attention_layers)
            .map(|j| ResnetBlock2D::load(vb.pp(format!("resnets.{j}")), rs))
            .collect::<Result<Vec<_>>>()?;
        let attentions = (0..spec.attention_layers)
            .map(|j| {
                Transformer2DModel::load(
                    vb.pp(format!("attentions.{j}")),
                    spec.channels,
                    &spec.transformer,
                    &format!("mid_block.attentions.{j}"),
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            resnets,
            attentions,
            positions: (0..spec.attention_layers)
                .map(|j| motion_position("mid_block", j))
                .collect(),
        })
    }

    pub(crate) fn forward(&self, x: &Tensor, ctx: &ForwardContext) -> Result<Tensor> {
        let mut x = self.resnets[0].forward(x, ctx.temb_act)?;
        for (j, (attn, resnet)) in self.attentions.iter().zip(&self.resnets[1..]).enumerate() {
            x = attn.forward(&x, ctx)?;
            x = after_layer(x, &self.positions[j], ctx)?;
            x = resnet.forward(&x, ctx.temb_act)?;
        }
        Ok(x)
    }
}

#[derive(Debug, Clone)]
pub(crate) struct UpBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2DModel>,
    upsampler: Option<Upsample2D>,
    positions: Vec<String>,
}

impl UpBlock {
    /// `path` is `up_blocks.{i}`.
    pub(crate) fn load(
        vb: VarBuilder,
        spec: &UpBlockSpec,
        temb_channels: usize,
        eps: f64,
        path: &str,
    ) -> Result<Self> {
        let mut resnets = Vec::with_capacity(spec.layers);
        let mut attentions = Vec::new();
        for j in 0..spec.layers {
            let skip_channels = if j + 1 == spec.layers {
                spec.in_channels
            } else {
                spec.out_channels
            };
            let input_channels = if j == 0 {
                spec.prev_output_channels
            } else {
                spec.out_channels
            };
            let rs = ResnetSpec {
                in_channels: input_channels + skip_channels,
                out_channels: spec.out_channels,
                temb_channels,
                groups: spec.transformer.norm_groups,
                eps,
                output_scale_factor: 1.0,
            };
            resnets.push(ResnetBlock2D::load(vb.pp(format!("resnets.{j}")), rs)?);
            if spec.kind == BlockKind::CrossAttn {
                attentions.push(Transformer2DModel::load(
                    vb.pp(format!("attentions.{j}")),
                    spec.out_channels,
                    &spec.transformer,
                    &format!("{path}.attentions.{j}"),
                )?);
            }
        }
        let upsampler = if spec.add_upsample {
            Some(Upsample2D::load(vb.pp("upsamplers.0"), spec.out_channels)?)
        } else {
            None
        };
        Ok(Self {
            resnets,
            attentions,
            upsampler,
            positions: (0..spec.layers).map(|j| motion_position(path, j)).collect(),
        })
    }

    /// Number of skip tensors this block consumes.
    pub(crate) fn layers(&self) -> usize {
        self.resnets.len()
    }

    /// `skips` are this block's skip tensors in down-path order; they are consumed last first.
    /// `upsample_size` forces the upsampler's output size (for inputs not divisible by 2^n).
    pub(crate) fn forward(
        &self,
        x: &Tensor,
        skips: &[Tensor],
        upsample_size: Option<(usize, usize)>,
        ctx: &ForwardContext,
    ) -> Result<Tensor> {
        if skips.len() != self.resnets.len() {
            candle_core::bail!(
                "up block needs {} skip tensors, got {}",
                self.resnets.len(),
                skips.len()
            );
        }
        let mut x = x.clone();
        for (j, (resnet, skip)) in self.resnets.iter().zip(skips.iter().rev()).enumerate() {
            x = resnet.forward(&Tensor::cat(&[&x, skip], 1)?, ctx.temb_act)?;
            if let Some(attn) = self.attentions.get(j) {
                x = attn.forward(&x, ctx)?;
            }
            x = after_layer(x, &self.positions[j], ctx)?;
        }
        match &self.upsampler {
            Some(up) => up.forward(&x, upsample_size),
            None => Ok(x),
        }
    }
}
