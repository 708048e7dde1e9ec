//! `ResnetBlock2D` (diffusers, `time_embedding_norm="default"`, SiLU) and the down/upsamplers.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::nn::conv3x3::Upsample2xConv3x3;
use crate::nn::layers::{conv2d, linear, Conv2d, GroupNorm, Linear};

/// GroupNorm → SiLU → conv → + time embedding → GroupNorm → SiLU → conv, plus a (1×1 conv when
/// the channel count changes) shortcut.
#[derive(Debug, Clone)]
pub(crate) struct ResnetBlock2D {
    norm1: GroupNorm,
    conv1: Conv2d,
    time_emb_proj: Linear,
    norm2: GroupNorm,
    conv2: Conv2d,
    conv_shortcut: Option<Conv2d>,
    output_scale_factor: f64,
}

/// Shape parameters of one resnet.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ResnetSpec {
    pub in_channels: usize,
    pub out_channels: usize,
    pub temb_channels: usize,
    pub groups: usize,
    pub eps: f64,
    pub output_scale_factor: f64,
}

impl ResnetBlock2D {
    pub(crate) fn load(vb: VarBuilder, s: ResnetSpec) -> Result<Self> {
        let conv_shortcut = if s.in_channels != s.out_channels {
            Some(conv2d(
                vb.pp("conv_shortcut"),
                s.in_channels,
                s.out_channels,
                1,
                1,
                0,
            )?)
        } else {
            None
        };
        Ok(Self {
            norm1: GroupNorm::load(vb.pp("norm1"), s.groups, s.in_channels, s.eps)?,
            conv1: conv2d(vb.pp("conv1"), s.in_channels, s.out_channels, 3, 1, 1)?,
            time_emb_proj: linear(
                vb.pp("time_emb_proj"),
                s.temb_channels,
                s.out_channels,
                true,
            )?,
            norm2: GroupNorm::load(vb.pp("norm2"), s.groups, s.out_channels, s.eps)?,
            conv2: conv2d(vb.pp("conv2"), s.out_channels, s.out_channels, 3, 1, 1)?,
            conv_shortcut,
            output_scale_factor: s.output_scale_factor,
        })
    }

    /// `temb_act` is `silu(time_embedding)`, `(batch, temb_channels)`; it is the same for every
    /// resnet of a forward pass, so the caller activates it once.
    pub(crate) fn forward(&self, x: &Tensor, temb_act: &Tensor) -> Result<Tensor> {
        // The time embedding is added by the conv itself, as a per-sample bias.
        let t = self.time_emb_proj.forward(temb_act)?;
        let h = self
            .conv1
            .forward_with_offset(&self.norm1.forward_silu(x)?, Some(&t))?;
        let shortcut = match &self.conv_shortcut {
            Some(conv) => conv.forward(x)?,
            None => x.clone(),
        };
        // conv2 adds the shortcut while writing its output.
        let out = self
            .conv2
            .forward_fused(&self.norm2.forward_silu(&h)?, None, Some(&shortcut))?;
        if self.output_scale_factor == 1.0 {
            Ok(out)
        } else {
            out / self.output_scale_factor
        }
    }
}

/// `Downsample2D(use_conv=True)`: 3×3 stride-2 conv (key `conv`).
#[derive(Debug, Clone)]
pub(crate) struct Downsample2D {
    conv: Conv2d,
    padding: usize,
}

impl Downsample2D {
    pub(crate) fn load(vb: VarBuilder, channels: usize, padding: usize) -> Result<Self> {
        Ok(Self {
            conv: conv2d(vb.pp("conv"), channels, channels, 3, 2, padding)?,
            padding,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if self.padding == 0 {
            // diffusers pads right and bottom only when the conv itself has no padding.
            let x = x.pad_with_zeros(3, 0, 1)?.pad_with_zeros(2, 0, 1)?;
            self.conv.forward(&x)
        } else {
            self.conv.forward(x)
        }
    }
}

/// `Upsample2D(use_conv=True)`: nearest-neighbour ×2 (or to the skip tensor's size) then 3×3 conv.
#[derive(Debug, Clone)]
pub(crate) struct Upsample2D {
    conv: Conv2d,
    /// Upsampling and conv in one (four 2×2 phase convs: 16 products per input pixel instead of
    /// 36), for exact doubling on the CPU.
    fused: Option<Upsample2xConv3x3>,
}

impl Upsample2D {
    pub(crate) fn load(vb: VarBuilder, channels: usize) -> Result<Self> {
        let conv = conv2d(vb.pp("conv"), channels, channels, 3, 1, 1)?;
        let fused = conv
            .as_conv3x3()
            .map(Upsample2xConv3x3::from_conv)
            .transpose()?;
        Ok(Self { conv, fused })
    }

    pub(crate) fn forward(&self, x: &Tensor, size: Option<(usize, usize)>) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let (th, tw) = size.unwrap_or((2 * h, 2 * w));
        match &self.fused {
            Some(fused) if (th, tw) == (2 * h, 2 * w) => fused.forward(x),
            _ => self.conv.forward(&x.upsample_nearest2d(th, tw)?),
        }
    }
}
