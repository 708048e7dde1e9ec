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
        let (mut x, mut skips) = self.forward_layers(x, ctx, self.resnets.len())?;
        if let Some(down) = &self.downsampler {
            x = down.forward(&x)?;
            skips.push(x.clone());
        }
        Ok((x, skips))
    }

    /// Number of skip tensors the block contributes.
    pub(crate) fn skip_count(&self) -> usize {
        self.resnets.len() + usize::from(self.downsampler.is_some())
    }

    /// The first `layers` layers only, without downsampling (a down path cut short, as
    /// DeepCache's shallow pass runs it): their output and skip tensors.
    fn forward_layers(
        &self,
        x: &Tensor,
        ctx: &ForwardContext,
        layers: usize,
    ) -> Result<(Tensor, Vec<Tensor>)> {
        let mut skips = Vec::with_capacity(layers + 1);
        let mut x = x.clone();
        for (j, resnet) in self.resnets.iter().enumerate().take(layers) {
            x = resnet.forward(&x, ctx.temb_act)?;
            if let Some(attn) = self.attentions.get(j) {
                x = attn.forward(&x, ctx)?;
            }
            x = after_layer(x, &self.positions[j], ctx)?;
            skips.push(x.clone());
        }
        Ok((x, skips))
    }
}

/// The down path from `x` (the conv_in output, itself the first skip tensor): the output and
/// every skip tensor, or with `count` only the first `count` skip tensors (the output is then
/// that of the last layer run). UNet and ControlNet share it.
pub(crate) fn down_path(
    blocks: &[DownBlock],
    x: Tensor,
    ctx: &ForwardContext,
    count: Option<usize>,
) -> Result<(Tensor, Vec<Tensor>)> {
    let mut skips = vec![x.clone()];
    let mut x = x;
    for block in blocks {
        let left = count.map(|c| c.saturating_sub(skips.len()));
        match left {
            Some(0) => break,
            Some(n) if n < block.skip_count() => {
                let (out, block_skips) = block.forward_layers(&x, ctx, n)?;
                skips.extend(block_skips);
                x = out;
                break;
            }
            _ => {
                let (out, block_skips) = block.forward(&x, ctx)?;
                skips.extend(block_skips);
                x = out;
            }
        }
    }
    if let Some(c) = count {
        skips.truncate(c);
    }
    Ok((x, skips))
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

    /// The block from layer `from` on (0: all of it; DeepCache's shallow pass starts part-way
    /// in), `x` being what enters that layer. `skips` are the skip tensors those layers
    /// consume, in down-path order (consumed last first). `upsample_size` forces the
    /// upsampler's output size (for inputs not divisible by 2^n). With `capture`, also
    /// returns what entered layer `capture`.
    pub(crate) fn forward_from(
        &self,
        x: &Tensor,
        skips: &[Tensor],
        from: usize,
        capture: Option<usize>,
        upsample_size: Option<(usize, usize)>,
        ctx: &ForwardContext,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let layers = self.resnets.len();
        if from > layers || skips.len() != layers - from {
            candle_core::bail!(
                "up block from layer {from} needs {} skip tensors, got {}",
                layers.saturating_sub(from),
                skips.len()
            );
        }
        let mut x = x.clone();
        let mut captured = None;
        for j in from..layers {
            if capture == Some(j) {
                captured = Some(x.clone());
            }
            // Layer j consumes the (layers-1-j)-th skip tensor: the last ones first.
            let skip = &skips[layers - 1 - j];
            x = self.resnets[j].forward(&Tensor::cat(&[&x, skip], 1)?, ctx.temb_act)?;
            if let Some(attn) = self.attentions.get(j) {
                x = attn.forward(&x, ctx)?;
            }
            x = after_layer(x, &self.positions[j], ctx)?;
        }
        let x = match &self.upsampler {
            Some(up) => up.forward(&x, upsample_size)?,
            None => x,
        };
        Ok((x, captured))
    }
}
