//! Matrix products in bf16 with f32 accumulation, the arithmetic of `compute: bf16`
//! ([`crate::nn::precision`]): `C (+)= A · B` where both operands hold **bf16 pairs**, two
//! consecutive K elements packed in one `u32` (the even one in the low half), the operand
//! layout of AVX512-BF16's `vdpbf16ps`, which adds both products of a pair into one f32 lane.
//!
//! * A is broadcast: element (row `i`, pair `k`) at `a[i·a_row + k·a_pair]`, any strides;
//! * B is read 16 lanes at a time: pair `k`, column `j` at `b[k·ldb + j]`;
//! * C is f32, row-major with leading dimension `ldc`.
//!
//! A tile of [`MR`] × [`NR`] outputs keeps 24 zmm accumulators; K is blocked by [`KC`] pairs so
//! a tile's B block stays in cache while the rows of A stream past it. The microkernel is chosen
//! at run time: `vdpbf16ps` where the CPU has AVX512-BF16 ([`super::gemm_bf16_avx512`]), a
//! portable loop (bf16 → f32, f32 multiply-adds) everywhere else; both compute exactly the
//! products of the rounded operands and differ only in the order of the f32 additions.
//! AMX tiles are not used: no machine this project is built on has them to test with.
//!
//! Rounding f32 → bf16 is round-to-nearest-even, as `vcvtne2ps2bf16` and `half` do it.
//! Callers parallelise over disjoint regions of C; nothing here spawns work.

use std::sync::OnceLock;

/// Rows of A (and C) per microkernel tile.
pub(crate) const MR: usize = 6;
/// Columns of B (and C) per microkernel tile: four 16-lane vectors.
pub(crate) const NR: usize = 64;
/// Pairs of K per block (a 256 × 64 B block is 64 KiB, L2-resident): on Zen 4, single thread,
/// a 320 × 4096 × 320 product ran at 179 GFLOP/s with 128, 195 with 256, 190 with 512
/// (f32 gemm: 105).
const KC: usize = 256;

/// One tile: `C[i][j] (+)= Σ_k A[i][k] · B[k][j]` for `i < m ≤ MR`, `j < n ≤ NR`, `k < kc`.
///
/// # Safety
/// A rows `< m` must be readable at `i·a_row + k·a_pair` for `k < kc`, B at `k·ldb + j` for
/// `j < n`, and C writable at `i·ldc + j` for `i < m`, `j < n`.
pub(crate) type TileFn = unsafe fn(
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
);

/// The microkernel this CPU runs, detected once.
fn tile_kernel() -> TileFn {
    static KERNEL: OnceLock<TileFn> = OnceLock::new();
    *KERNEL.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        if super::gemm_bf16_avx512::available() {
            return super::gemm_bf16_avx512::tile;
        }
        tile_portable
    })
}

/// Whether the products run on `vdpbf16ps` (AVX512-BF16) on this CPU.
pub fn native_bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        super::gemm_bf16_avx512::available()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The A operand of [`gemm_bf16`]: a base pointer and its strides in `u32` pairs.
#[derive(Clone, Copy)]
pub(crate) struct PairsA {
    pub(crate) ptr: *const u32,
    pub(crate) row: usize,
    pub(crate) pair: usize,
}

/// The B operand of [`gemm_bf16`]: pair `k`, column `j` at `ptr[k·ld + j]`.
#[derive(Clone, Copy)]
pub(crate) struct PairsB {
    pub(crate) ptr: *const u32,
    pub(crate) ld: usize,
}

// SAFETY: operand descriptors are read through only, by the tasks of a product whose caller
// keeps the data alive and unchanged while it runs.
unsafe impl Send for PairsA {}
unsafe impl Sync for PairsA {}
unsafe impl Send for PairsB {}
unsafe impl Sync for PairsB {}

impl PairsA {
    /// The operand from row `r` on.
    pub(crate) fn rows_from(self, r: usize) -> Self {
        Self {
            ptr: self.ptr.wrapping_add(r * self.row),
            ..self
        }
    }
}

impl PairsB {
    /// The operand from column `j` on.
    pub(crate) fn cols_from(self, j: usize) -> Self {
        Self {
            ptr: self.ptr.wrapping_add(j),
            ..self
        }
    }
}

/// `C (+)= A · B` for an `m × n` C over `kp` pairs of K (see the module docs); without
/// `accumulate` C is overwritten.
///
/// # Safety
/// As [`TileFn`] for the whole `m × n × kp` problem.
pub(crate) unsafe fn gemm_bf16(
    m: usize,
    n: usize,
    kp: usize,
    a: PairsA,
    b: PairsB,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    gemm_bf16_with(tile_kernel(), m, n, kp, a, b, c, ldc, accumulate)
}

/// [`gemm_bf16`] on a given microkernel (tests compare the two).
///
/// # Safety
/// As [`gemm_bf16`].
pub(crate) unsafe fn gemm_bf16_with(
    tile: TileFn,
    m: usize,
    n: usize,
    kp: usize,
    a: PairsA,
    b: PairsB,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    if kp == 0 {
        if !accumulate {
            for i in 0..m {
                std::ptr::write_bytes(c.add(i * ldc), 0, n);
            }
        }
        return;
    }
    for n0 in (0..n).step_by(NR) {
        let nn = NR.min(n - n0);
        for k0 in (0..kp).step_by(KC) {
            let kc = KC.min(kp - k0);
            for m0 in (0..m).step_by(MR) {
                tile(
                    kc,
                    a.ptr.add(m0 * a.row + k0 * a.pair),
                    a.row,
                    a.pair,
                    b.ptr.add(k0 * b.ld + n0),
                    b.ld,
                    c.add(m0 * ldc + n0),
                    ldc,
                    MR.min(m - m0),
                    nn,
                    accumulate || k0 > 0,
                );
            }
        }
    }
}

/// The low (even) element of a pair as f32.
#[inline]
pub(crate) fn low(pair: u32) -> f32 {
    f32::from_bits(pair << 16)
}

/// The high (odd) element of a pair as f32.
#[inline]
pub(crate) fn high(pair: u32) -> f32 {
    f32::from_bits(pair & 0xFFFF_0000)
}

/// `x` rounded to bf16 (nearest even), as its bits.
#[inline]
pub(crate) fn bf16_bits(x: f32) -> u16 {
    half::bf16::from_f32(x).to_bits()
}

/// The pair `(even, odd)`.
#[inline]
pub(crate) fn pair(even: f32, odd: f32) -> u32 {
    bf16_bits(even) as u32 | (bf16_bits(odd) as u32) << 16
}

/// The portable microkernel: the same products in f32, vectorised by the compiler over the
/// tile's columns.
///
/// # Safety
/// As [`TileFn`].
unsafe fn tile_portable(
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
    let mut acc = [0f32; NR];
    for i in 0..m {
        let row = &mut acc[..n];
        let c_row = std::slice::from_raw_parts_mut(c.add(i * ldc), n);
        if accumulate {
            row.copy_from_slice(c_row);
        } else {
            row.fill(0.0);
        }
        for k in 0..kc {
            let av = *a.add(i * a_row + k * a_pair);
            let (a0, a1) = (low(av), high(av));
            let b_row = std::slice::from_raw_parts(b.add(k * ldb), n);
            for (s, &bv) in row.iter_mut().zip(b_row) {
                *s += a0 * low(bv) + a1 * high(bv);
            }
        }
        c_row.copy_from_slice(row);
    }
}

/// `dst[k] = pair(src[2k], src[2k + 1])`, the odd tail paired with zero: a contiguous f32
/// row as bf16 pairs (`dst.len() == src.len().div_ceil(2)`).
pub(crate) fn to_pairs(src: &[f32], dst: &mut [u32]) {
    debug_assert_eq!(dst.len(), src.len().div_ceil(2));
    #[cfg(target_arch = "x86_64")]
    if super::gemm_bf16_avx512::available() {
        // SAFETY: the CPU has AVX512-BF16; lengths as asserted.
        unsafe { super::gemm_bf16_avx512::to_pairs(src, dst) };
        return;
    }
    to_pairs_portable(src, dst);
}

pub(crate) fn to_pairs_portable(src: &[f32], dst: &mut [u32]) {
    for (d, s) in dst.iter_mut().zip(src.chunks(2)) {
        *d = pair(s[0], s.get(1).copied().unwrap_or(0.0));
    }
}

/// `dst[j] = pair(even[j], odd[j])`: two channel planes interleaved as bf16 pairs (`odd`
/// `None` for the zero channel that pads an odd channel count).
pub(crate) fn interleave(even: &[f32], odd: Option<&[f32]>, dst: &mut [u32]) {
    debug_assert_eq!(even.len(), dst.len());
    #[cfg(target_arch = "x86_64")]
    if super::gemm_bf16_avx512::available() {
        // SAFETY: the CPU has AVX512-BF16; `odd`, when present, is as long as `even`.
        unsafe { super::gemm_bf16_avx512::interleave(even, odd, dst) };
        return;
    }
    interleave_portable(even, odd, dst);
}

pub(crate) fn interleave_portable(even: &[f32], odd: Option<&[f32]>, dst: &mut [u32]) {
    match odd {
        Some(odd) => {
            for ((d, &e), &o) in dst.iter_mut().zip(even).zip(odd) {
                *d = pair(e, o);
            }
        }
        None => {
            for (d, &e) in dst.iter_mut().zip(even) {
                *d = bf16_bits(e) as u32;
            }
        }
    }
}

/// Channel planes `x` `[c, len]` as `[c.div_ceil(2), len]` interleaved pairs.
pub(crate) fn interleave_planes(x: &[f32], channels: usize, dst: &mut [u32]) {
    use rayon::prelude::*;
    let len = x.len() / channels.max(1);
    if len == 0 {
        return;
    }
    dst.par_chunks_mut(len).enumerate().for_each(|(p, d)| {
        let even = &x[2 * p * len..(2 * p + 1) * len];
        let odd = (2 * p + 1 < channels).then(|| &x[(2 * p + 1) * len..(2 * p + 2) * len]);
        interleave(even, odd, d);
    });
}

/// A weight matrix `W` `[rows, k]` as B operand panels for `C = X · Wᵀ`: for each panel of
/// [`NR`] rows of W, `[k pairs][NR]` pairs (zero beyond the last row), so a tile's columns are
/// contiguous and a panel is one stream.
#[derive(Debug, Clone)]
pub(crate) struct WeightPanels {
    data: Vec<u32>,
    rows: usize,
    k: usize,
}

impl WeightPanels {
    pub(crate) fn pack(w: &[f32], rows: usize, k: usize) -> Self {
        let kp = k.div_ceil(2);
        let panels = rows.div_ceil(NR);
        let mut data = vec![0u32; panels * kp * NR];
        for (o, row) in w.chunks_exact(k.max(1)).take(rows).enumerate() {
            let base = (o / NR) * kp * NR + o % NR;
            for (p, s) in row.chunks(2).enumerate() {
                data[base + p * NR] = pair(s[0], s.get(1).copied().unwrap_or(0.0));
            }
        }
        Self { data, rows, k }
    }

    /// The rows of W (C's columns).
    pub(crate) fn rows(&self) -> usize {
        self.rows
    }

    /// Pairs of K.
    pub(crate) fn pairs(&self) -> usize {
        self.k.div_ceil(2)
    }

    /// Panel `p` (W rows `p·NR ..`) as a B operand.
    pub(crate) fn panel(&self, p: usize) -> PairsB {
        PairsB {
            ptr: self.data[p * self.pairs() * NR..].as_ptr(),
            ld: NR,
        }
    }

    /// W back in f32 `[rows, k]` (the bf16 values), for the portable path.
    pub(crate) fn unpack(&self) -> Vec<f32> {
        let kp = self.pairs();
        let mut w = vec![0f32; self.rows * self.k];
        for (o, row) in w.chunks_exact_mut(self.k.max(1)).enumerate() {
            let base = (o / NR) * kp * NR + o % NR;
            for (i, v) in row.iter_mut().enumerate() {
                let p = self.data[base + (i / 2) * NR];
                *v = if i % 2 == 0 { low(p) } else { high(p) };
            }
        }
        w
    }

    pub(crate) fn bytes(&self) -> usize {
        self.data.len() * 4
    }
}

/// A weight matrix as A operand rows: `[rows, taps, channels]` (OHWI for a conv, taps = 1 for
/// a matrix) stored as `[rows][taps][channels.div_ceil(2)]` pairs, each tap's channels padded
/// to even so a tap's pairs never straddle two taps.
#[derive(Debug, Clone)]
pub(crate) struct WeightRows {
    data: Vec<u32>,
    rows: usize,
    taps: usize,
    channels: usize,
}

impl WeightRows {
    pub(crate) fn pack(w: &[f32], rows: usize, taps: usize, channels: usize) -> Self {
        let cp = channels.div_ceil(2);
        let mut data = vec![0u32; rows * taps * cp];
        for (d, s) in data
            .chunks_exact_mut(cp.max(1))
            .zip(w.chunks_exact(channels.max(1)))
        {
            to_pairs_portable(s, d);
        }
        Self {
            data,
            rows,
            taps,
            channels,
        }
    }

    pub(crate) fn rows(&self) -> usize {
        self.rows
    }

    /// Pairs per tap.
    pub(crate) fn pairs(&self) -> usize {
        self.channels.div_ceil(2)
    }

    /// Tap `t` as an A operand (`rows × pairs`); with `t = 0` and `taps · pairs` pairs, the
    /// whole row (an im2col product in tap-major order).
    pub(crate) fn tap(&self, t: usize) -> PairsA {
        PairsA {
            ptr: self.data[t * self.pairs()..].as_ptr(),
            row: self.taps * self.pairs(),
            pair: 1,
        }
    }

    /// The weights back in f32 `[rows, taps · channels]` (the bf16 values).
    pub(crate) fn unpack(&self) -> Vec<f32> {
        let cp = self.pairs();
        let mut w = Vec::with_capacity(self.rows * self.taps * self.channels);
        for chunk in self.data.chunks_exact(cp.max(1)) {
            for i in 0..self.channels {
                let p = chunk[i / 2];
                w.push(if i % 2 == 0 { low(p) } else { high(p) });
            }
        }
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rounded(x: f32) -> f32 {
        half::bf16::from_f32(x).to_f32()
    }

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// `C = A · Bᵀ` over the bf16-rounded operands, in f64.
    fn reference(a: &[f32], b: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
        let mut c = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let s: f64 = (0..k)
                    .map(|t| rounded(a[i * k + t]) as f64 * rounded(b[j * k + t]) as f64)
                    .sum();
                c[i * n + j] = s as f32;
            }
        }
        c
    }

    fn kernels() -> Vec<(&'static str, TileFn)> {
        let mut k: Vec<(&'static str, TileFn)> = vec![("portable", tile_portable)];
        #[cfg(target_arch = "x86_64")]
        if super::super::gemm_bf16_avx512::available() {
            k.push(("avx512bf16", super::super::gemm_bf16_avx512::tile));
        }
        k
    }

    /// Products of rounded operands are exact in f32; only the f32 sums round.
    #[test]
    fn matches_rounded_reference_for_every_kernel_and_tail() {
        for (m, n, k) in [(1, 1, 1), (7, 70, 9), (13, 129, 300), (6, 64, 256), (2, 5, 2)] {
            let a = random(m * k, 1);
            let b = random(n * k, 2);
            let want = reference(&a, &b, m, n, k);
            let kp = k.div_ceil(2);
            let mut a_pairs = vec![0u32; m * kp];
            for (d, s) in a_pairs.chunks_exact_mut(kp).zip(a.chunks_exact(k)) {
                to_pairs(s, d);
            }
            let panels = WeightPanels::pack(&b, n, k);
            for (name, tile) in kernels() {
                // Start from ones and accumulate: the result is reference + 1.
                let mut c = vec![1f32; m * n];
                for p in 0..n.div_ceil(NR) {
                    let cols = NR.min(n - p * NR);
                    let a_op = PairsA {
                        ptr: a_pairs.as_ptr(),
                        row: kp,
                        pair: 1,
                    };
                    // SAFETY: A is m × kp, the panel kp × NR, C m × n.
                    unsafe {
                        gemm_bf16_with(
                            tile,
                            m,
                            cols,
                            kp,
                            a_op,
                            panels.panel(p),
                            c.as_mut_ptr().add(p * NR),
                            n,
                            true,
                        )
                    };
                }
                for (got, want) in c.iter().zip(&want) {
                    let tol = 1e-5 * (k as f32).sqrt() * 4.0;
                    assert!(
                        (got - 1.0 - want).abs() <= tol,
                        "{name} {m}x{n}x{k}: {got} vs {}",
                        want + 1.0
                    );
                }
            }
        }
    }

    #[test]
    fn conversions_round_to_nearest_even_and_pad() {
        let x = random(37, 3);
        let mut pairs = vec![0u32; 19];
        to_pairs(&x, &mut pairs);
        let mut portable = vec![0u32; 19];
        to_pairs_portable(&x, &mut portable);
        assert_eq!(pairs, portable);
        assert_eq!(high(pairs[18]), 0.0);
        assert_eq!(low(pairs[3]), rounded(x[6]));
        // 1 + 2^-8 lies halfway between two bf16 values: it rounds to the even one, 1.0.
        assert_eq!(low(pair(1.0 + 1.0 / 256.0, 0.0)), 1.0);

        let even = random(45, 4);
        let odd = random(45, 5);
        let mut a = vec![0u32; 45];
        let mut b = vec![0u32; 45];
        interleave(&even, Some(&odd), &mut a);
        interleave_portable(&even, Some(&odd), &mut b);
        assert_eq!(a, b);
        assert_eq!((low(a[44]), high(a[44])), (rounded(even[44]), rounded(odd[44])));
        interleave(&even, None, &mut a);
        assert!(a.iter().all(|p| high(*p) == 0.0));
    }

    #[test]
    fn packed_weights_unpack_to_their_bf16_values() {
        let w = random(70 * 5, 6);
        let rounded_w: Vec<f32> = w.iter().map(|&v| rounded(v)).collect();
        assert_eq!(WeightPanels::pack(&w, 70, 5).unpack(), rounded_w);
        let rows = WeightRows::pack(&w, 10, 7, 5);
        assert_eq!(rows.unpack(), rounded_w);
        assert_eq!((rows.rows(), rows.pairs()), (10, 3));
    }
}
