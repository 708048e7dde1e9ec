//! `C = A · Wᵀ + bias` for convolution-shaped products: many rows (output pixels), weights
//! fixed at load. The weights are packed once into column panels of `NR` output channels
//! (`[panel][k][NR]`, zero-padded), so the inner loop broadcasts one input value and does
//! `NR / lanes` vector FMAs against a contiguous panel row, accumulating an `MR × NR` tile in
//! registers. Rows of A are read in place (NHWC activations are already row-major), which
//! avoids the per-call packing a general GEMM does; for these layer shapes (k and n from 16
//! to 1152) that packing dominates the `gemm` crate's time.

use pulp::{Arch, Simd, WithSimd};

use super::activation::Activation;
use super::parallel::for_each_row_zip;

/// Output channels per panel: two AVX-512 vectors.
const NR: usize = 32;
/// Rows per register tile.
const MR: usize = 6;

/// Weights `[n × k]` (one row per output channel) packed into `NR`-wide panels.
#[derive(Debug, Clone)]
pub struct PackedWeights {
    k: usize,
    n: usize,
    /// `[n_panels][k][NR]`.
    panels: Vec<f32>,
    /// Bias padded to `n_panels · NR`.
    bias: Vec<f32>,
}

impl PackedWeights {
    /// `weights` is `[n][k]` row-major, `bias` has `n` entries.
    pub fn new(weights: &[f32], bias: &[f32], n: usize, k: usize) -> Self {
        assert_eq!(weights.len(), n * k, "weights are not n × k");
        assert_eq!(bias.len(), n, "bias length");
        let n_panels = n.div_ceil(NR);
        let mut panels = vec![0.0f32; n_panels * k * NR];
        for (col, row) in weights.chunks_exact(k.max(1)).enumerate().take(n) {
            let (panel, lane) = (col / NR, col % NR);
            for (kk, &w) in row.iter().enumerate() {
                panels[(panel * k + kk) * NR + lane] = w;
            }
        }
        let mut padded_bias = bias.to_vec();
        padded_bias.resize(n_panels * NR, 0.0);
        PackedWeights {
            k,
            n,
            panels,
            bias: padded_bias,
        }
    }

    pub fn n(&self) -> usize {
        self.n
    }

    pub fn k(&self) -> usize {
        self.k
    }

    fn panel(&self, p: usize) -> &[f32] {
        &self.panels[p * self.k * NR..][..self.k * NR]
    }
}

/// `c[m × n] = activation(a[m × k] · Wᵀ + bias)`, `m = a.len() / k`.
pub fn matmul_packed(a: &[f32], w: &PackedWeights, activation: Activation, c: &mut [f32]) {
    let (k, n) = (w.k, w.n);
    assert!(
        k > 0 && a.len().is_multiple_of(k),
        "lhs is not a whole number of rows"
    );
    let m = a.len() / k;
    assert_eq!(c.len(), m * n, "output length");
    if m == 0 || n == 0 {
        return;
    }
    // Enough row blocks to keep every thread busy; whole register tiles per block.
    let tasks = (rayon::current_num_threads() * 4).max(1);
    let rows_per_task = m.div_ceil(tasks).div_ceil(MR).max(1) * MR;
    let work = rows_per_task * k * n;
    for_each_row_zip(
        c,
        rows_per_task * n,
        a,
        rows_per_task * k,
        work,
        |c_block, a_block| {
            Arch::new().dispatch(Block {
                a: a_block,
                w,
                activation,
                c: c_block,
            });
        },
    );
}

struct Block<'a> {
    a: &'a [f32],
    w: &'a PackedWeights,
    activation: Activation,
    c: &'a mut [f32],
}

impl WithSimd for Block<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Block {
            a,
            w,
            activation,
            c,
        } = self;
        let (k, n) = (w.k, w.n);
        let rows = a.len() / k;
        for p in 0..n.div_ceil(NR) {
            let panel = w.panel(p);
            let bias = &w.bias[p * NR..][..NR];
            let col0 = p * NR;
            let cols = NR.min(n - col0);
            let mut r = 0;
            while r < rows {
                let tile_rows = MR.min(rows - r);
                let a_tile = &a[r * k..][..tile_rows * k];
                let c_tile = &mut c[r * n..][..(tile_rows - 1) * n + col0 + cols];
                match tile_rows {
                    6 => tile::<S, 6>(
                        simd, a_tile, k, panel, bias, activation, c_tile, n, col0, cols,
                    ),
                    5 => tile::<S, 5>(
                        simd, a_tile, k, panel, bias, activation, c_tile, n, col0, cols,
                    ),
                    4 => tile::<S, 4>(
                        simd, a_tile, k, panel, bias, activation, c_tile, n, col0, cols,
                    ),
                    3 => tile::<S, 3>(
                        simd, a_tile, k, panel, bias, activation, c_tile, n, col0, cols,
                    ),
                    2 => tile::<S, 2>(
                        simd, a_tile, k, panel, bias, activation, c_tile, n, col0, cols,
                    ),
                    _ => tile::<S, 1>(
                        simd, a_tile, k, panel, bias, activation, c_tile, n, col0, cols,
                    ),
                }
                r += tile_rows;
            }
        }
    }
}

/// One `R × NR` register tile: rows `a[r·k ..]`, columns `col0 .. col0 + cols` of `c`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn tile<S: Simd, const R: usize>(
    simd: S,
    a: &[f32],
    k: usize,
    panel: &[f32],
    bias: &[f32],
    activation: Activation,
    c: &mut [f32],
    n: usize,
    col0: usize,
    cols: usize,
) {
    let lanes = S::F32_LANES;
    if lanes * 2 != NR {
        // Not the AVX-512 layout (scalar fallback machine): plain loops.
        for r in 0..R {
            let row = &a[r * k..][..k];
            for j in 0..cols {
                let mut acc = bias[j];
                for (kk, &x) in row.iter().enumerate() {
                    acc += x * panel[kk * NR + j];
                }
                c[r * n + col0 + j] = activation.apply_scalar(acc);
            }
        }
        return;
    }
    let (panel_vecs, _) = S::as_simd_f32s(panel);
    let (bias_vecs, _) = S::as_simd_f32s(bias);
    let rows: [&[f32]; R] = std::array::from_fn(|r| &a[r * k..][..k]);
    let mut acc = [[bias_vecs[0], bias_vecs[1]]; R];
    for (kk, w) in panel_vecs.chunks_exact(2).enumerate().take(k) {
        let (w0, w1) = (w[0], w[1]);
        for r in 0..R {
            let x = simd.splat_f32s(rows[r][kk]);
            acc[r][0] = simd.mul_add_e_f32s(x, w0, acc[r][0]);
            acc[r][1] = simd.mul_add_e_f32s(x, w1, acc[r][1]);
        }
    }
    // Clamping activations on the vectors; anything else per element after the store.
    // (Constant-index loops only: iterator adaptors over `acc` made it spill to memory.)
    let (lo, hi) = match activation {
        Activation::Relu => (0.0, f32::INFINITY),
        Activation::Relu6 => (0.0, 6.0),
        Activation::ReluN1To1 => (-1.0, 1.0),
        Activation::None | Activation::Tanh => (f32::NEG_INFINITY, f32::INFINITY),
    };
    let clamps = !matches!(activation, Activation::None | Activation::Tanh);
    let (lo, hi) = (simd.splat_f32s(lo), simd.splat_f32s(hi));
    for r in 0..R {
        let (mut v0, mut v1) = (acc[r][0], acc[r][1]);
        if clamps {
            v0 = simd.min_f32s(simd.max_f32s(v0, lo), hi);
            v1 = simd.min_f32s(simd.max_f32s(v1, lo), hi);
        }
        let out = &mut c[r * n + col0..][..cols];
        if cols == NR {
            let (out_vecs, _) = S::as_mut_simd_f32s(out);
            out_vecs[0] = v0;
            out_vecs[1] = v1;
        } else if cols <= lanes {
            simd.partial_store_f32s(out, v0);
        } else {
            // Masked stores: a copy through a stack tile costs a libc call per row.
            let (head, rest) = out.split_at_mut(lanes);
            S::as_mut_simd_f32s(head).0[0] = v0;
            simd.partial_store_f32s(rest, v1);
        }
        if activation == Activation::Tanh {
            out.iter_mut().for_each(|v| *v = v.tanh());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_naive_product() {
        for &(m, k, n) in &[
            (1, 1, 1),
            (7, 5, 3),
            (13, 16, 32),
            (6, 33, 70),
            (50, 24, 16),
            (49, 192, 100),
        ] {
            let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
            let w: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.11).cos()).collect();
            let bias: Vec<f32> = (0..n).map(|i| i as f32 * 0.1 - 1.0).collect();
            let packed = PackedWeights::new(&w, &bias, n, k);
            let mut c = vec![f32::NAN; m * n];
            matmul_packed(&a, &packed, Activation::None, &mut c);
            let mut clamped = vec![f32::NAN; m * n];
            matmul_packed(&a, &packed, Activation::Relu6, &mut clamped);
            for (x, y) in c.iter().zip(&clamped) {
                assert_eq!(x.clamp(0.0, 6.0), *y);
            }
            for i in 0..m {
                for j in 0..n {
                    let want: f32 =
                        bias[j] + (0..k).map(|kk| a[i * k + kk] * w[j * k + kk]).sum::<f32>();
                    let got = c[i * n + j];
                    assert!(
                        (got - want).abs() < 1e-4,
                        "{m}x{k}x{n} ({i},{j}): {got} vs {want}"
                    );
                }
            }
        }
    }

    /// The generic tile code on other vector widths than this machine's: 1 lane (scalar
    /// fallback), 8 lanes (AVX2-like, scalar tile path) and 16 emulated lanes.
    #[test]
    fn every_vector_width_matches_naive() {
        fn check<S: Simd>(simd: S) {
            let (m, k, n) = (13, 19, 45);
            let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
            let w: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.11).cos()).collect();
            let bias: Vec<f32> = (0..n).map(|i| i as f32 * 0.1 - 1.0).collect();
            let packed = PackedWeights::new(&w, &bias, n, k);
            let mut c = vec![f32::NAN; m * n];
            Block {
                a: &a,
                w: &packed,
                activation: Activation::Relu,
                c: &mut c,
            }
            .with_simd(simd);
            for i in 0..m {
                for j in 0..n {
                    let want = (bias[j]
                        + (0..k).map(|kk| a[i * k + kk] * w[j * k + kk]).sum::<f32>())
                    .max(0.0);
                    assert!(
                        (c[i * n + j] - want).abs() < 1e-4,
                        "{} lanes ({i},{j})",
                        S::F32_LANES
                    );
                }
            }
        }
        check(pulp::Scalar::new());
        check(pulp::Scalar256b);
        check(pulp::Scalar512b);
    }
}
