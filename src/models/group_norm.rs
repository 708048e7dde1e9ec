//! `nn.GroupNorm` with affine weights, optionally followed by SiLU, in two passes over the
//! data and one output allocation (candle-nn's GroupNorm makes about six full-size temporaries,
//! and a separate SiLU another; at 512² × 128 channels each costs 134 MB of page faults).
//!
//! Statistics are accumulated in f32 lanes over short runs and in f64 across runs (two-pass:
//! mean, then centred variance), which keeps them as accurate as torch's. SiLU uses a
//! polynomial `exp` (≈1 ulp) so the pass vectorises; since the crate targets baseline x86-64,
//! that pass is also compiled for AVX-512 and AVX2 and picked at run time, and the statistics
//! have an explicit AVX-512 version (LLVM leaves that reduction scalar).

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Module, Result, Shape, Tensor};
use candle_nn::VarBuilder;
use rayon::prelude::*;

const LANES: usize = 16;

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
        Self::new(
            vb.get(channels, "weight")?,
            vb.get(channels, "bias")?,
            groups,
            eps,
        )
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
        if x.dtype() != DType::F32 || !x.device().is_cpu() {
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
        self.apply(x, false)
    }
}

struct GroupNormOp {
    groups: usize,
    eps: f64,
    silu: bool,
}

fn slice_of<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&s.as_slice::<f32>()?[a..b]),
        None => candle_core::bail!("group norm: operands must be contiguous"),
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
        let x = slice_of(xs, xl)?;
        let weight = slice_of(ws, wl)?;
        let bias = slice_of(bs, bl)?;
        let dims = xl.dims();
        let spatial: usize = dims[2..].iter().product();
        let per_group = dims[1] / self.groups;
        let group_len = (per_group * spatial).max(1);
        let mut out = vec![0f32; x.len()];
        // Each group is a contiguous run of `per_group` channel planes.
        out.par_chunks_mut(group_len)
            .zip(x.par_chunks(group_len))
            .enumerate()
            .for_each(|(i, (dst, src))| {
                let n = src.len() as f64;
                let mean = sum_shifted(src, 0.0).0 / n;
                let var = sum_shifted(src, mean as f32).1 / n;
                let rstd = 1.0 / (var + self.eps).sqrt();
                let first = (i % self.groups) * per_group;
                for (c, (d, s)) in dst
                    .chunks_mut(spatial.max(1))
                    .zip(src.chunks(spatial.max(1)))
                    .enumerate()
                {
                    let scale = weight[first + c] as f64 * rstd;
                    let shift = bias[first + c] as f64 - mean * scale;
                    affine(s, d, scale as f32, shift as f32, self.silu);
                }
            });
        Ok((CpuStorage::F32(out), xl.shape().clone()))
    }
}

/// `e^x` for f32 by range reduction and a degree-6 polynomial (Cephes `expf`); inputs are
/// clamped to the finite range, where it is within ~1 ulp.
#[inline(always)]
fn exp_approx(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding 1.5·2^23 rounds to the nearest integer in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.336_55, 88.722_83);
    let t = x * std::f32::consts::LOG2_E + ROUND;
    let n = t - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_1e-4_f32;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    let exponent = t.to_bits() as i32 - ROUND.to_bits() as i32;
    e * f32::from_bits(((exponent + 127) << 23) as u32)
}

/// (Σ (x − shift), Σ (x − shift)²), in f32 lanes over runs of 1024 and f64 across runs.
#[inline(always)]
fn sum_shifted_generic(x: &[f32], shift: f32) -> (f64, f64) {
    let (mut total, mut total_sq) = (0f64, 0f64);
    for run in x.chunks(1024) {
        let mut acc = [0f32; LANES];
        let mut acc_sq = [0f32; LANES];
        let mut lanes = run.chunks_exact(LANES);
        for chunk in &mut lanes {
            for i in 0..LANES {
                let d = chunk[i] - shift;
                acc[i] += d;
                acc_sq[i] += d * d;
            }
        }
        for &v in lanes.remainder() {
            let d = v - shift;
            acc[0] += d;
            acc_sq[0] += d * d;
        }
        total += acc.iter().map(|&v| v as f64).sum::<f64>();
        total_sq += acc_sq.iter().map(|&v| v as f64).sum::<f64>();
    }
    (total, total_sq)
}

/// `dst = src · scale + shift`, then `y · sigmoid(y)` when `silu`.
#[inline(always)]
fn affine_generic(src: &[f32], dst: &mut [f32], scale: f32, shift: f32, silu: bool) {
    if silu {
        for (d, &s) in dst.iter_mut().zip(src) {
            let y = s * scale + shift;
            *d = y / (1.0 + exp_approx(-y));
        }
    } else {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = s * scale + shift;
        }
    }
}

/// Compiles `$generic` again with wider vector units and dispatches at run time.
macro_rules! multiversion {
    ($name:ident => $generic:ident ( $($arg:ident : $ty:ty),* ) -> $ret:ty) => {
        fn $name($($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                unsafe fn wide($($arg: $ty),*) -> $ret {
                    $generic($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn medium($($arg: $ty),*) -> $ret {
                    $generic($($arg),*)
                }
                if is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU supports the enabled features.
                    return unsafe { wide($($arg),*) };
                }
                if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                    // SAFETY: as above.
                    return unsafe { medium($($arg),*) };
                }
            }
            $generic($($arg),*)
        }
    };
}

/// [`sum_shifted_generic`] with explicit AVX-512: LLVM does not vectorise that reduction.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn sum_shifted_avx512(x: &[f32], shift: f32) -> (f64, f64) {
    use std::arch::x86_64::*;
    let (mut total, mut total_sq) = (0f64, 0f64);
    let shift_v = _mm512_set1_ps(shift);
    for run in x.chunks(1024) {
        let mut acc = _mm512_setzero_ps();
        let mut acc_sq = _mm512_setzero_ps();
        let mut lanes = run.chunks_exact(LANES);
        for chunk in &mut lanes {
            // SAFETY: `chunk` holds exactly 16 floats.
            let v = unsafe { _mm512_loadu_ps(chunk.as_ptr()) };
            let d = _mm512_sub_ps(v, shift_v);
            acc = _mm512_add_ps(acc, d);
            acc_sq = _mm512_fmadd_ps(d, d, acc_sq);
        }
        let (mut tail, mut tail_sq) = (0f32, 0f32);
        for &v in lanes.remainder() {
            let d = v - shift;
            tail += d;
            tail_sq += d * d;
        }
        total += (_mm512_reduce_add_ps(acc) + tail) as f64;
        total_sq += (_mm512_reduce_add_ps(acc_sq) + tail_sq) as f64;
    }
    (total, total_sq)
}

fn sum_shifted(x: &[f32], shift: f32) -> (f64, f64) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU supports AVX-512F.
        return unsafe { sum_shifted_avx512(x, shift) };
    }
    sum_shifted_generic(x, shift)
}

multiversion!(affine => affine_generic(src: &[f32], dst: &mut [f32], scale: f32, shift: f32, silu: bool) -> ());

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
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
        let ours = GroupNorm::new(weight, bias, 4, 1e-6).unwrap();
        assert!(max_diff(&ours.forward(&x).unwrap(), &reference) < 1e-5);
        let silu = reference.silu().unwrap();
        assert!(max_diff(&ours.forward_silu(&x).unwrap(), &silu) < 1e-5);
    }

    #[test]
    fn dispatched_statistics_match_the_generic_ones() {
        let x: Vec<f32> = (0..5000)
            .map(|i| ((i * 7919) % 1000) as f32 * 0.01 - 3.0)
            .collect();
        for len in [0, 15, 16, 1023, 1024, 1041, 5000] {
            let (a, a_sq) = sum_shifted(&x[..len], 0.7);
            let (b, b_sq) = sum_shifted_generic(&x[..len], 0.7);
            assert!((a - b).abs() <= 1e-6 * (1.0 + b.abs()), "{len}: {a} vs {b}");
            assert!(
                (a_sq - b_sq).abs() <= 1e-6 * (1.0 + b_sq),
                "{len}: {a_sq} vs {b_sq}"
            );
        }
    }

    #[test]
    fn exp_approx_is_accurate() {
        for i in -2000..=2000 {
            let x = i as f32 * 0.04;
            let (got, want) = (exp_approx(x), x.exp());
            assert!(
                ((got - want) / want).abs() < 2e-7,
                "exp({x}): {got} vs {want}"
            );
        }
        assert!(exp_approx(-200.0) < 1e-37);
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
