//! The CPU kernel of [`crate::nn::group_norm::GroupNorm`]: per group, two-pass statistics and
//! one normalise(+SiLU) pass writing the single output allocation.

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape};
use rayon::prelude::*;

use super::cpu::contiguous_f32;
use super::simd::{affine_row, shifted_sums};

pub(crate) struct GroupNormOp {
    pub(crate) groups: usize,
    pub(crate) eps: f64,
    pub(crate) silu: bool,
}

fn slice_of<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    contiguous_f32(s, l, "group norm")
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
        let x = slice_of(xs, xl)?;
        let weight = slice_of(ws, wl)?;
        let bias = slice_of(bs, bl)?;
        let dims = xl.dims();
        let spatial: usize = dims[2..].iter().product();
        let per_group = dims[1] / self.groups;
        let group_len = (per_group * spatial).max(1);
        // SAFETY: every group of channels is written below.
        let mut out = unsafe { crate::alloc::uninit_f32(x.len()) };
        // Each group is a contiguous run of `per_group` channel planes.
        out.par_chunks_mut(group_len)
            .zip(x.par_chunks(group_len))
            .enumerate()
            .for_each(|(i, (dst, src))| {
                let n = src.len() as f64;
                let mean = shifted_sums(src, 0.0).0 / n;
                // Centred on the f32-rounded mean: correct for what that rounding left over.
                let (dev, dev_sq) = shifted_sums(src, mean as f32);
                let var = (dev_sq - dev * dev / n) / n;
                let rstd = 1.0 / (var.max(0.0) + self.eps).sqrt();
                let first = (i % self.groups) * per_group;
                for (c, (d, s)) in dst
                    .chunks_mut(spatial.max(1))
                    .zip(src.chunks(spatial.max(1)))
                    .enumerate()
                {
                    let scale = weight[first + c] as f64 * rstd;
                    let shift = bias[first + c] as f64 - mean * scale;
                    affine_row(s, d, scale as f32, shift as f32, self.silu);
                }
            });
        Ok((CpuStorage::F32(out), xl.shape().clone()))
    }
}
