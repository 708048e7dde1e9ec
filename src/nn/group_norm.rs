//! `nn.GroupNorm` with affine weights, optionally followed by SiLU, in two passes over the
//! data and one output allocation (candle-nn's GroupNorm makes about six full-size temporaries,
//! and a separate SiLU another; at 512² × 128 channels each costs 134 MB of page faults).
//!
//! Statistics are accumulated in f32 lanes over short runs and in f64 across runs (two-pass:
//! mean, then centred variance), which keeps them as accurate as torch's. The vector kernels
//! (statistics, normalise + polynomial-exp SiLU, run-time AVX-512/AVX2 dispatch) are in
//! [`crate::nn::kernels::simd`]; other devices and dtypes use candle-nn's GroupNorm.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::nn::kernels::group_norm::GroupNormOp;
use crate::nn::path::use_fast_kernel;

/// Group normalisation over `(B, C, ...)` tensors.
#[derive(Debug, Clone)]
pub struct GroupNorm {
    weight: Tensor,
    bias: Tensor,
    groups: usize,
    eps: f64,
}

impl GroupNorm {
    pub fn new(weight: Tensor, bias: Tensor, groups: usize, eps: f64) -> Result<Self> {
        let channels = weight.elem_count();
        if groups == 0 || !channels.is_multiple_of(groups) || bias.elem_count() != channels {
            candle_core::bail!(
                "group norm: {groups} groups, {channels} weights and {} biases do not fit",
                bias.elem_count()
            );
        }
        Ok(Self {
            weight: weight.contiguous()?,
            bias: bias.contiguous()?,
            groups,
            eps,
        })
    }

    /// Loads `weight` and `bias` of shape `(channels,)`.
    pub fn load(vb: VarBuilder, groups: usize, channels: usize, eps: f64) -> Result<Self> {
        if groups == 0 || !channels.is_multiple_of(groups) {
            candle_core::bail!(
                "group norm {}: {groups} groups do not divide {channels} channels",
                vb.prefix()
            );
        }
        Self::new(
            vb.get(channels, "weight")?,
            vb.get(channels, "bias")?,
            groups,
            eps,
        )
    }

    /// `group_norm(x)` (also the [`Module`] implementation).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.apply(x, false)
    }

    /// `silu(group_norm(x))`.
    pub fn forward_silu(&self, x: &Tensor) -> Result<Tensor> {
        self.apply(x, true)
    }

    fn apply(&self, x: &Tensor, silu: bool) -> Result<Tensor> {
        let channels = self.weight.elem_count();
        if x.rank() < 3 || x.dim(1)? != channels {
            candle_core::bail!(
                "group norm over {channels} channels got shape {:?}",
                x.dims()
            );
        }
        if !use_fast_kernel(&[x]) {
            let nn = candle_nn::GroupNorm::new(
                self.weight.clone(),
                self.bias.clone(),
                channels,
                self.groups,
                self.eps,
            )?;
            let y = nn.forward(x)?;
            return if silu { y.silu() } else { Ok(y) };
        }
        x.contiguous()?.apply_op3_no_bwd(
            &self.weight,
            &self.bias,
            &GroupNormOp {
                groups: self.groups,
                eps: self.eps,
                silu,
            },
        )
    }
}

impl Module for GroupNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        GroupNorm::forward(self, x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        crate::nn::tensor_diff::max_abs_diff(a, b).unwrap()
    }

    #[test]
    fn matches_candle_nn_with_and_without_silu() {
        let dev = Device::Cpu;
        // Offset and scaled input: the two-pass statistics must not lose precision.
        let x = Tensor::randn(0f32, 1.0, (2, 12, 37, 5), &dev)
            .unwrap()
            .affine(3.0, 20.0)
            .unwrap();
        let weight = Tensor::randn(1f32, 0.3, 12, &dev).unwrap();
        let bias = Tensor::randn(0f32, 0.3, 12, &dev).unwrap();
        let reference = candle_nn::GroupNorm::new(weight.clone(), bias.clone(), 12, 4, 1e-6)
            .unwrap()
            .forward(&x)
            .unwrap();
        let ours = GroupNorm::new(weight.clone(), bias.clone(), 4, 1e-6).unwrap();
        assert!(max_diff(&ours.forward(&x).unwrap(), &reference) < 1e-5);
        let silu = reference.silu().unwrap();
        assert!(max_diff(&ours.forward_silu(&x).unwrap(), &silu) < 1e-5);
        // Strided input goes through the same kernel after a copy.
        let xt = x.transpose(2, 3).unwrap();
        let ref_t = candle_nn::GroupNorm::new(weight, bias, 12, 4, 1e-6)
            .unwrap()
            .forward(&xt.contiguous().unwrap())
            .unwrap();
        assert!(max_diff(&ours.forward(&xt).unwrap(), &ref_t) < 1e-5);
    }

    #[test]
    fn rejects_mismatched_channels() {
        let dev = Device::Cpu;
        let ones = Tensor::ones(6, DType::F32, &dev).unwrap();
        assert!(GroupNorm::new(ones.clone(), ones.clone(), 4, 1e-6).is_err());
        let norm = GroupNorm::new(ones.clone(), ones, 3, 1e-6).unwrap();
        let x = Tensor::zeros((1, 4, 2, 2), DType::F32, &dev).unwrap();
        assert!(norm.forward(&x).is_err());
    }
}
