//! Weight-loading helpers shared by every network (the layers themselves live in
//! [`crate::nn::conv2d`], [`crate::nn::linear`] and [`crate::nn::group_norm`]), so the model
//! code names layers by their diffusers keys only.

use candle_core::Result;
use candle_nn::{LayerNorm, VarBuilder};

pub(crate) use crate::nn::conv2d::Conv2d;
pub(crate) use crate::nn::linear::Linear;

/// `nn.Conv2d` with bias, diffusers key layout (`weight`, `bias`).
pub(crate) fn conv2d(
    vb: VarBuilder,
    in_channels: usize,
    out_channels: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
) -> Result<Conv2d> {
    Conv2d::load(vb, in_channels, out_channels, kernel, stride, padding)
}

/// `nn.Linear`.
pub(crate) fn linear(vb: VarBuilder, in_dim: usize, out_dim: usize, bias: bool) -> Result<Linear> {
    let weight = vb.get((out_dim, in_dim), "weight")?;
    let bias = if bias {
        Some(vb.get(out_dim, "bias")?)
    } else {
        None
    };
    Linear::new(weight, bias)
}

/// A 1×1 `nn.Conv2d` loaded as the equivalent `nn.Linear` over channels (weight `(out, in, 1, 1)`
/// reshaped to `(out, in)`).
pub(crate) fn conv1x1_as_linear(vb: VarBuilder, in_dim: usize, out_dim: usize) -> Result<Linear> {
    let weight = vb
        .get((out_dim, in_dim, 1, 1), "weight")?
        .reshape((out_dim, in_dim))?;
    Linear::new(weight, Some(vb.get(out_dim, "bias")?))
}

/// `nn.LayerNorm` with affine weights.
pub(crate) fn layer_norm(vb: VarBuilder, dim: usize, eps: f64) -> Result<LayerNorm> {
    candle_nn::layer_norm(dim, eps, vb)
}

/// `nn.GroupNorm` (optionally fused with SiLU): the one shared by every model.
pub(crate) use crate::nn::group_norm::GroupNorm;
