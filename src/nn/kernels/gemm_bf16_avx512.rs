//! The AVX512-BF16 side of [`super::gemm_bf16`]: the `vdpbf16ps` microkernel and the f32 →
//! bf16 pair conversions (`vcvtne2ps2bf16` / `vcvtneps2bf16`, round to nearest even).

use std::arch::x86_64::*;
use std::sync::OnceLock;

use super::gemm_bf16::{MR, NR};

/// 16-lane vectors per tile row.
const NV: usize = NR / 16;

/// Whether this CPU has AVX512-BF16 (detected once).
pub(crate) fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bf16")
    })
}

/// The lanes of vector `v` that are below column `n`.
#[inline(always)]
fn lane_mask(n: usize, v: usize) -> __mmask16 {
    let lanes = n.saturating_sub(16 * v).min(16);
    ((1u32 << lanes) - 1) as __mmask16
}

/// The [`super::gemm_bf16::TileFn`] on `vdpbf16ps`: an `MR × NR` block of accumulators,
/// masked loads and stores at the column tail, rows past `m` computed from row `m − 1` and
/// not stored.
///
/// # Safety
/// As [`super::gemm_bf16::TileFn`]; the CPU must have AVX512-BF16 ([`available`]).
#[target_feature(enable = "avx512f,avx512bf16")]
pub(crate) unsafe fn tile(
    kc: usize,
    a: *const u32,
    a_row: usize,
    a_pair: usize,
    b: *const u32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
    m: usize,
    n: usize,
    accumulate: bool,
) {
    let masks: [__mmask16; NV] = std::array::from_fn(|v| lane_mask(n, v));
    let mut acc = [[_mm512_setzero_ps(); NV]; MR];
    if accumulate {
        for (i, row) in acc.iter_mut().enumerate() {
            if i < m {
                for (v, lane) in row.iter_mut().enumerate() {
                    *lane = _mm512_maskz_loadu_ps(masks[v], c.add(i * ldc + 16 * v));
                }
            }
        }
    }
    let rows: [*const u32; MR] = std::array::from_fn(|i| a.add(i.min(m - 1) * a_row));
    for k in 0..kc {
        let bk = b.add(k * ldb);
        let bv: [__m512bh; NV] = std::array::from_fn(|v| {
            std::mem::transmute::<__m512i, __m512bh>(_mm512_maskz_loadu_epi32(
                masks[v],
                bk.add(16 * v) as *const i32,
            ))
        });
        for (i, row) in acc.iter_mut().enumerate() {
            let av = std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(
                *rows[i].add(k * a_pair) as i32,
            ));
            for (lane, b) in row.iter_mut().zip(bv) {
                *lane = _mm512_dpbf16_ps(*lane, av, b);
            }
        }
    }
    for (i, row) in acc.iter().enumerate() {
        if i < m {
            for (v, lane) in row.iter().enumerate() {
                _mm512_mask_storeu_ps(c.add(i * ldc + 16 * v), masks[v], *lane);
            }
        }
    }
}

/// [`super::gemm_bf16::to_pairs`] with `vcvtne2ps2bf16`.
///
/// # Safety
/// The CPU must have AVX512-BF16; `dst.len() == src.len().div_ceil(2)`.
#[target_feature(enable = "avx512f,avx512bf16")]
pub(crate) unsafe fn to_pairs(src: &[f32], dst: &mut [u32]) {
    let whole = src.len() / 32;
    for i in 0..whole {
        let s = src.as_ptr().add(32 * i);
        let lo = _mm512_loadu_ps(s);
        let hi = _mm512_loadu_ps(s.add(16));
        // Lanes 0..16 of the result come from the second operand.
        let bf = _mm512_cvtne2ps_pbh(hi, lo);
        _mm512_storeu_si512(
            dst.as_mut_ptr().add(16 * i) as *mut __m512i,
            std::mem::transmute::<__m512bh, __m512i>(bf),
        );
    }
    super::gemm_bf16::to_pairs_portable(&src[32 * whole..], &mut dst[16 * whole..]);
}

/// [`super::gemm_bf16::interleave`] with `vcvtneps2bf16`.
///
/// # Safety
/// The CPU must have AVX512-BF16; `even`, `odd` (when present) and `dst` have one length.
#[target_feature(enable = "avx512f,avx512bf16")]
pub(crate) unsafe fn interleave(even: &[f32], odd: Option<&[f32]>, dst: &mut [u32]) {
    let whole = even.len() / 16;
    for i in 0..whole {
        let e = _mm512_loadu_ps(even.as_ptr().add(16 * i));
        let lo = _mm512_cvtepu16_epi32(std::mem::transmute::<__m256bh, __m256i>(
            _mm512_cvtneps_pbh(e),
        ));
        let pairs = match odd {
            Some(odd) => {
                let o = _mm512_loadu_ps(odd.as_ptr().add(16 * i));
                let hi = _mm512_cvtepu16_epi32(std::mem::transmute::<__m256bh, __m256i>(
                    _mm512_cvtneps_pbh(o),
                ));
                _mm512_or_si512(lo, _mm512_slli_epi32::<16>(hi))
            }
            None => lo,
        };
        _mm512_storeu_si512(dst.as_mut_ptr().add(16 * i) as *mut __m512i, pairs);
    }
    super::gemm_bf16::interleave_portable(
        &even[16 * whole..],
        odd.map(|o| &o[16 * whole..]),
        &mut dst[16 * whole..],
    );
}
