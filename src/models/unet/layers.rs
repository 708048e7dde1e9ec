//! Small building blocks shared by every UNet part: weight loading helpers (conv and linear
//! layers live in `conv.rs` / `linear.rs`) and a fused group normalisation. Kept in one place so faster kernels can replace them without touching
//! the model code.

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Module, Result, Shape, Tensor};
use candle_nn::{LayerNorm, VarBuilder};

pub(crate) use super::conv::Conv2d;
pub(crate) use super::linear::Linear;
use rayon::prelude::*;

use super::kernels::{affine_row, shifted_sums};

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

/// `nn.GroupNorm(groups, channels, eps, affine=True)` on `(b, c, ...)` tensors, optionally
/// followed by SiLU in the same pass (every resnet normalises then activates).
#[derive(Debug, Clone)]
pub(crate) struct GroupNorm {
    weight: Tensor,
    bias: Tensor,
    groups: usize,
    eps: f64,
}

impl GroupNorm {
    pub(crate) fn load(vb: VarBuilder, groups: usize, channels: usize, eps: f64) -> Result<Self> {
        if groups == 0 || !channels.is_multiple_of(groups) {
            candle_core::bail!(
                "group norm {}: {groups} groups do not divide {channels} channels",
                vb.prefix()
            );
        }
        Ok(Self {
            weight: vb.get(channels, "weight")?,
            bias: vb.get(channels, "bias")?,
            groups,
            eps,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.apply(x, false)
    }

    /// `silu(group_norm(x))`.
    pub(crate) fn forward_silu(&self, x: &Tensor) -> Result<Tensor> {
        self.apply(x, true)
    }

    fn apply(&self, x: &Tensor, silu: bool) -> Result<Tensor> {
        if x.dtype() != DType::F32 || !x.device().is_cpu() {
            let y = candle_nn::GroupNorm::new(
                self.weight.clone(),
                self.bias.clone(),
                x.dim(1)?,
                self.groups,
                self.eps,
            )?
            .forward(x)?;
            return if silu {
                candle_nn::ops::silu(&y)
            } else {
                Ok(y)
            };
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

struct GroupNormOp {
    groups: usize,
    eps: f64,
    silu: bool,
}

fn contiguous_f32<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("group norm: {what} must be contiguous"),
    }
}

impl CustomOp3 for GroupNormOp {
    fn name(&self) -> &'static str {
        "group-norm"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(xs, xl, "input")?;
        let w = contiguous_f32(ws, wl, "weight")?;
        let b = contiguous_f32(bs, bl, "bias")?;
        let dims = xl.dims();
        let (batch, channels) = (dims[0], dims[1]);
        let spatial: usize = dims[2..].iter().product();
        let per_group = channels / self.groups;
        let group_len = per_group * spatial;
        let mut out = vec![0f32; x.len()];
        // Groups are contiguous runs of `group_len` values: normalise them in parallel.
        out.par_chunks_mut(group_len)
            .zip(x.par_chunks(group_len))
            .enumerate()
            .for_each(|(i, (dst, src))| {
                let first_channel = (i % self.groups) * per_group;
                let n = src.len() as f64;
                // Two passes (mean, then squared deviations) for an accurate variance.
                let (sum, _) = shifted_sums(src, 0.0);
                let mean = sum / n;
                let (dev, dev_sq) = shifted_sums(src, mean as f32);
                let var = (dev_sq - dev * dev / n) / n;
                let rstd = 1.0 / (var.max(0.0) + self.eps).sqrt();
                for (c, (dst, src)) in dst.chunks_mut(spatial).zip(src.chunks(spatial)).enumerate()
                {
                    let w = w[first_channel + c] as f64;
                    let scale = (w * rstd) as f32;
                    let shift = (b[first_channel + c] as f64 - mean * w * rstd) as f32;
                    affine_row(src, dst, scale, shift, self.silu);
                }
            });
        debug_assert_eq!(out.len(), batch * channels * spatial);
        Ok((CpuStorage::F32(out), xl.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn fused_group_norm_matches_candle_nn() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (2, 12, 5, 3), &dev)
            .unwrap()
            .affine(3.0, 1.5)
            .unwrap();
        let weight = Tensor::randn(1f32, 0.3, 12, &dev).unwrap();
        let bias = Tensor::randn(0f32, 0.3, 12, &dev).unwrap();
        let ours = GroupNorm {
            weight: weight.clone(),
            bias: bias.clone(),
            groups: 4,
            eps: 1e-5,
        };
        let reference = candle_nn::GroupNorm::new(weight, bias, 12, 4, 1e-5)
            .unwrap()
            .forward(&x)
            .unwrap();
        let diff = |a: &Tensor, b: &Tensor| -> f32 {
            (a - b)
                .unwrap()
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar()
                .unwrap()
        };
        assert!(diff(&ours.forward(&x).unwrap(), &reference) < 1e-5);
        let silu = candle_nn::ops::silu(&reference).unwrap();
        assert!(diff(&ours.forward_silu(&x).unwrap(), &silu) < 1e-5);
        // Strided input goes through the same kernel after a copy.
        let xt = x.transpose(2, 3).unwrap();
        let ref_t = candle_nn::GroupNorm::new(ours.weight.clone(), ours.bias.clone(), 12, 4, 1e-5)
            .unwrap()
            .forward(&xt.contiguous().unwrap())
            .unwrap();
        assert!(diff(&ours.forward(&xt).unwrap(), &ref_t) < 1e-5);
    }
}
