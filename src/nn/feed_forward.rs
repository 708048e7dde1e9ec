//! diffusers `FeedForward` with GEGLU, as the UNet's transformer blocks and the AnimateDiff
//! temporal transformers use it: `net.0.proj` (to value and gate) → value · gelu(gate) →
//! `net.2`, the residual added by the output projection.

use candle_core::{Result, Tensor, D};
use candle_nn::VarBuilder;

use crate::nn::kernels::geglu::geglu_cpu;
use crate::nn::layers::linear;
use crate::nn::linear::Linear;
use crate::nn::path::use_fast_kernel;

/// `FeedForward(dim, mult=4, activation_fn="geglu")`.
#[derive(Debug, Clone)]
pub struct FeedForward {
    proj_in: Linear,
    proj_out: Linear,
    inner: usize,
}

impl FeedForward {
    /// Loads `net.0.proj` `(8·dim, dim)` and `net.2` `(dim, 4·dim)`, both with bias.
    pub fn load(vb: VarBuilder, dim: usize) -> Result<Self> {
        let inner = dim * 4;
        Ok(Self {
            proj_in: linear(vb.pp("net.0.proj"), dim, inner * 2, true)?,
            proj_out: linear(vb.pp("net.2"), inner, dim, true)?,
            inner,
        })
    }

    /// `residual + ff(x)`.
    pub fn forward(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        let h = self.proj_in.forward_add(x, None)?;
        self.proj_out
            .forward_add(&geglu(&h, self.inner)?, Some(residual))
    }
}

/// `value · gelu(gate)` for `h = [value, gate]` along the last dimension. diffusers' GELU here
/// is the exact (erf) one, not the tanh approximation.
pub fn geglu(h: &Tensor, inner: usize) -> Result<Tensor> {
    if use_fast_kernel(&[h]) {
        return geglu_cpu(h, inner);
    }
    let value = h.narrow(D::Minus1, 0, inner)?;
    let gate = h.narrow(D::Minus1, inner, inner)?.gelu_erf()?;
    value * gate
}
