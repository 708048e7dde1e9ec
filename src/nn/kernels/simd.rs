//! Vectorisable f32 kernels: the attention softmax rows, the GEGLU activation and group
//! normalisation (statistics and the normalise(+SiLU) pass).
//!
//! The crate is built for baseline x86-64, so each kernel is compiled a second time with AVX-512
//! (and AVX2+FMA) enabled and picked at run time. `exp` is a branch-free Cephes-style polynomial
//! (≈1 ulp on the softmax range) because the libm call does not vectorise.

const LANES: usize = 16;

/// `e^x` for `x ≤ 88.7`; inputs below −87.3 give ~1e-38 instead of 0, which does not change a
/// softmax sum.
#[inline(always)]
fn exp_approx(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding 1.5·2^23 rounds to an integer in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.336_55, 88.722_83);
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_1e-4;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    let n_int = t.to_bits() as i32 - ROUND.to_bits() as i32;
    e * f32::from_bits(((n_int + 127) << 23) as u32)
}

/// `erf(x)`, rational approximation (Eigen's float `erf`), a few ulp.
#[inline(always)]
fn erf_approx(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let p = x2 * -2.726_142_3e-10 + 2.770_681_4e-8;
    let p = p * x2 - 2.101_024e-6;
    let p = p * x2 - 5.692_506_5e-5;
    let p = p * x2 - 7.349_906_3e-4;
    let p = p * x2 - 2.954_600_1e-3;
    let p = p * x2 - 1.609_603_4e-2;
    let q = x2 * -1.456_607_2e-5 - 2.133_740_6e-4;
    let q = q * x2 - 1.682_827e-3;
    let q = q * x2 - 7.373_329e-3;
    let q = q * x2 - 1.426_474e-2;
    x * p / q
}

/// GEGLU: `out[r, j] = h[r, j] · gelu(h[r, inner + j])` with the exact (erf) GELU.
#[inline(always)]
fn geglu_generic(h: &[f32], out: &mut [f32]) {
    let inner = out.len();
    let (value, gate) = h.split_at(inner);
    for ((o, &v), &g) in out.iter_mut().zip(value).zip(gate) {
        *o = v * (0.5 * g * (1.0 + erf_approx(g * std::f32::consts::FRAC_1_SQRT_2)));
    }
}

#[inline(always)]
fn row_max_generic(row: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for c in &mut chunks {
        for i in 0..LANES {
            acc[i] = acc[i].max(c[i]);
        }
    }
    let tail = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    acc.iter().fold(tail, |m, &x| m.max(x))
}

#[inline(always)]
fn exp_sum_generic(row: &mut [f32], max: f32) -> f32 {
    let mut acc = [0f32; LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for i in 0..LANES {
            let e = exp_approx(c[i] - max);
            c[i] = e;
            acc[i] += e;
        }
    }
    let mut tail = 0.0;
    for x in chunks.into_remainder() {
        *x = exp_approx(*x - max);
        tail += *x;
    }
    acc.iter().sum::<f32>() + tail
}

#[inline(always)]
fn scale_generic(row: &mut [f32], s: f32) {
    for x in row {
        *x *= s;
    }
}

/// Sum of `x - shift` and of its square, accumulated in f32 lanes over short runs and in f64
/// across runs (exact enough for groups of ~10⁵ values, and vectorisable).
#[inline(always)]
fn shifted_sums_generic(x: &[f32], shift: f32) -> (f64, f64) {
    const RUN: usize = 1024;
    let (mut total, mut total_sq) = (0f64, 0f64);
    for run in x.chunks(RUN) {
        let mut acc = [0f32; LANES];
        let mut acc_sq = [0f32; LANES];
        let mut chunks = run.chunks_exact(LANES);
        for c in &mut chunks {
            for i in 0..LANES {
                let d = c[i] - shift;
                acc[i] += d;
                acc_sq[i] += d * d;
            }
        }
        for &v in chunks.remainder() {
            let d = v - shift;
            acc[0] += d;
            acc_sq[0] += d * d;
        }
        total += acc.iter().map(|&v| v as f64).sum::<f64>();
        total_sq += acc_sq.iter().map(|&v| v as f64).sum::<f64>();
    }
    (total, total_sq)
}

/// `dst = src · scale + shift`, then SiLU when `silu`.
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

macro_rules! dispatch {
    ($generic:ident, $name:ident ( $($arg:ident : $ty:ty),* ) -> $ret:ty) => {
        pub(crate) fn $name($($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                unsafe fn avx512($($arg: $ty),*) -> $ret {
                    $generic($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) -> $ret {
                    $generic($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU supports the enabled features.
                    return unsafe { avx512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                    // SAFETY: as above.
                    return unsafe { avx2($($arg),*) };
                }
            }
            $generic($($arg),*)
        }
    };
}

dispatch!(row_max_generic, row_max(row: &[f32]) -> f32);
dispatch!(exp_sum_generic, exp_sum_inplace(row: &mut [f32], max: f32) -> f32);
dispatch!(scale_generic, scale_inplace(row: &mut [f32], s: f32) -> ());
dispatch!(geglu_generic, geglu_row(h: &[f32], out: &mut [f32]) -> ());
dispatch!(shifted_sums_generic, shifted_sums_dispatched(x: &[f32], shift: f32) -> (f64, f64));

/// [`shifted_sums_generic`] with explicit AVX-512: LLVM leaves that f32-lane reduction
/// partly scalar even with the feature enabled.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn shifted_sums_avx512(x: &[f32], shift: f32) -> (f64, f64) {
    use std::arch::x86_64::*;
    const RUN: usize = 1024;
    let (mut total, mut total_sq) = (0f64, 0f64);
    let shift_v = _mm512_set1_ps(shift);
    for run in x.chunks(RUN) {
        let mut acc = _mm512_setzero_ps();
        let mut acc_sq = _mm512_setzero_ps();
        let mut chunks = run.chunks_exact(LANES);
        for c in &mut chunks {
            // SAFETY: `c` holds exactly 16 floats.
            let v = unsafe { _mm512_loadu_ps(c.as_ptr()) };
            let d = _mm512_sub_ps(v, shift_v);
            acc = _mm512_add_ps(acc, d);
            acc_sq = _mm512_fmadd_ps(d, d, acc_sq);
        }
        let (mut tail, mut tail_sq) = (0f32, 0f32);
        for &v in chunks.remainder() {
            let d = v - shift;
            tail += d;
            tail_sq += d * d;
        }
        total += (_mm512_reduce_add_ps(acc) + tail) as f64;
        total_sq += (_mm512_reduce_add_ps(acc_sq) + tail_sq) as f64;
    }
    (total, total_sq)
}

/// Sum of `x - shift` and of its square (group-norm statistics; see [`shifted_sums_generic`]).
pub(crate) fn shifted_sums(x: &[f32], shift: f32) -> (f64, f64) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU supports AVX-512F.
        return unsafe { shifted_sums_avx512(x, shift) };
    }
    shifted_sums_dispatched(x, shift)
}
dispatch!(affine_generic, affine_row(src: &[f32], dst: &mut [f32], scale: f32, shift: f32, silu: bool) -> ());

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_accurate_on_the_softmax_range() {
        let mut worst = 0f64;
        for i in 0..=200_000 {
            let x = -87.0 + 87.0 * i as f32 / 200_000.0;
            let rel = ((exp_approx(x) as f64 - (x as f64).exp()) / (x as f64).exp()).abs();
            worst = worst.max(rel);
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
        assert!(exp_approx(-1000.0) < 1e-37);
        assert_eq!(exp_approx(0.0), 1.0);
    }

    #[test]
    fn erf_and_geglu_are_accurate() {
        // Reference erf from the Abramowitz–Stegun series would itself be approximate; compare
        // against f64 via erf(x) = 1 - erfc(x) computed by numeric integration instead.
        let erf64 = |x: f64| -> f64 {
            let n = 20_000;
            let h = x / n as f64;
            let f = |t: f64| (-t * t).exp();
            let mut s = f(0.0) + f(x);
            for i in 1..n {
                s += f(i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
            }
            s * h / 3.0 * 2.0 / std::f64::consts::PI.sqrt()
        };
        for i in -60..=60 {
            let x = i as f32 / 10.0;
            let err = (erf_approx(x) as f64 - erf64(x as f64)).abs();
            assert!(err < 3e-7, "erf({x}): {err}");
        }
        let h = [1.0f32, -2.0, 0.5, 3.0, -1.0, 0.0];
        let mut out = [0f32; 3];
        geglu_row(&h, &mut out);
        let gelu = |g: f64| 0.5 * g * (1.0 + erf64(g / std::f64::consts::SQRT_2));
        for j in 0..3 {
            let expect = h[j] as f64 * gelu(h[3 + j] as f64);
            assert!(
                (out[j] as f64 - expect).abs() < 1e-6,
                "{j}: {} vs {expect}",
                out[j]
            );
        }
    }

    #[test]
    fn group_norm_kernels() {
        let x: Vec<f32> = (0..3001)
            .map(|i| ((i * 37) % 113) as f32 * 0.1 + 1000.0)
            .collect();
        let (s, sq) = shifted_sums(&x, 1000.0);
        let s_ref: f64 = x.iter().map(|&v| v as f64 - 1000.0).sum();
        let sq_ref: f64 = x.iter().map(|&v| (v as f64 - 1000.0).powi(2)).sum();
        assert!((s - s_ref).abs() < 1e-6 * s_ref.abs() + 1e-3);
        assert!((sq - sq_ref).abs() < 1e-6 * sq_ref);
        let mut out = vec![0f32; 5];
        affine_row(&[-20.0, -1.0, 0.0, 1.0, 100.0], &mut out, 2.0, 0.5, true);
        for (o, x) in out.iter().zip([-20.0f64, -1.0, 0.0, 1.0, 100.0]) {
            let y = 2.0 * x + 0.5;
            assert!(
                (*o as f64 - y / (1.0 + (-y).exp())).abs() < 1e-6,
                "{o} vs silu({y})"
            );
        }
    }

    #[test]
    fn dispatched_statistics_match_the_generic_ones() {
        let x: Vec<f32> = (0..5000)
            .map(|i| ((i * 7919) % 1000) as f32 * 0.01 - 3.0)
            .collect();
        for len in [0, 15, 16, 1023, 1024, 1041, 5000] {
            let (a, a_sq) = shifted_sums(&x[..len], 0.7);
            let (b, b_sq) = shifted_sums_generic(&x[..len], 0.7);
            assert!((a - b).abs() <= 1e-6 * (1.0 + b.abs()), "{len}: {a} vs {b}");
            assert!(
                (a_sq - b_sq).abs() <= 1e-6 * (1.0 + b_sq),
                "{len}: {a_sq} vs {b_sq}"
            );
        }
    }

    #[test]
    fn row_kernels_match_scalar_code() {
        let row: Vec<f32> = (0..37)
            .map(|i| ((i * 7919) % 101) as f32 / 10.0 - 5.0)
            .collect();
        assert_eq!(
            row_max(&row),
            row.iter().cloned().fold(f32::NEG_INFINITY, f32::max)
        );
        let mut e = row.clone();
        let s = exp_sum_inplace(&mut e, 2.0);
        let expect: f64 = row.iter().map(|&x| ((x - 2.0) as f64).exp()).sum();
        assert!((s as f64 - expect).abs() / expect < 1e-6);
        assert!((e[3] as f64 - ((row[3] - 2.0) as f64).exp()).abs() < 1e-6);
        scale_inplace(&mut e, 0.5);
        assert!((e[3] as f64 - 0.5 * ((row[3] - 2.0) as f64).exp()).abs() < 1e-6);
    }
}
