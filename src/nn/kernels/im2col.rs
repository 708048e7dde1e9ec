//! The CPU kernel of [`crate::nn::conv2d::Conv2d`] for the convs that are not large 3×3
//! stride-1 ones: im2col tiles of whole output rows (contiguous copies of input rows) times
//! the OHWI weight, one gemm per tile, written straight into the NCHW output onto the
//! pre-loaded bias, channel offset and residual.

use candle_core::{DType, Result, Tensor};
use gemm::{gemm, Parallelism};
use rayon::prelude::*;

use super::conv3x3::TapWeights;
use super::cpu::{with_cpu_f32, SharedMut};
use super::gemm_bf16::{gemm_bf16, interleave_planes, PairsB, WeightRows, MR, NR};
use crate::alloc::uninit_f32;

/// im2col tile size in floats (16 MiB): large enough for efficient matmuls, small enough to keep
/// the transient memory of a 3×3 conv over 960 channels bounded.
const COL_TILE_FLOATS: usize = 1 << 22;

/// `conv(x) + bias + channel_offset + residual` for contiguous f32 CPU `x` `(b, c, h, w)`
/// and the `[out, k·k·c]` OHWI `weight`.
pub(crate) fn conv2d_im2col(
    x: &Tensor,
    weight: &TapWeights,
    bias: Option<&Tensor>,
    channel_offset: Option<&Tensor>,
    residual: Option<&Tensor>,
    geometry: Geometry,
) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let out_channels = match weight {
        TapWeights::F32(w) => w.len() / (geometry.k * geometry.k * c).max(1),
        TapWeights::Bf16(rows) => rows.rows(),
    };
    let Geometry { k, s, p, ow, .. } = geometry;
    debug_assert_eq!((geometry.h, geometry.w), (h, w));
    let oh = (h + 2 * p - k) / s + 1;
    let hw = oh * ow;
    let out_shape = (b, out_channels, oh, ow);
    let mut out = match residual {
        Some(r) if r.dims() == [b, out_channels, oh, ow] => r.flatten_all()?.to_vec1::<f32>()?,
        Some(r) => {
            candle_core::bail!("conv2d: residual {:?}, output {:?}", r.dims(), out_shape)
        }
        // Every element is written by the bias pre-load below: no zero fill needed.
        None => Vec::with_capacity(b * out_channels * hw),
    };
    let x = x.contiguous()?;
    let offset = match channel_offset {
        Some(t) => Some(t.to_dtype(DType::F32)?.contiguous()?.to_vec2::<f32>()?),
        None => None,
    };
    let bias = match bias {
        Some(t) => Some(t.to_dtype(DType::F32)?.to_vec1::<f32>()?),
        None => None,
    };
    // Pre-load bias + offset (+ residual) so the matmul accumulates onto it.
    let plane_value = |i: usize| {
        let (bi, co) = (i / out_channels, i % out_channels);
        bias.as_ref().map_or(0.0, |bv| bv[co]) + offset.as_ref().map_or(0.0, |o| o[bi][co])
    };
    if residual.is_some() {
        out.par_chunks_mut(hw).enumerate().for_each(|(i, plane)| {
            let v = plane_value(i);
            plane.iter_mut().for_each(|x| *x += v);
        });
    } else if hw > 0 {
        let len = b * out_channels * hw;
        out.spare_capacity_mut()[..len]
            .par_chunks_mut(hw)
            .enumerate()
            .for_each(|(i, plane)| {
                let v = plane_value(i);
                plane.iter_mut().for_each(|x| {
                    x.write(v);
                });
            });
        // SAFETY: the loop above initialised all `len` elements (b·out_channels planes of hw).
        unsafe { out.set_len(len) };
    }
    let weight = match weight {
        TapWeights::F32(w) => *w,
        TapWeights::Bf16(rows) => {
            with_cpu_f32(&x, "conv2d input", |input| {
                im2col_bf16(input, rows, geometry, c, b, &mut out);
                Ok(())
            })?;
            return Tensor::from_vec(out, out_shape, x.device());
        }
    };
    with_cpu_f32(&x, "conv2d input", |input| {
        {
            let threads = rayon::current_num_threads();
            let k_len = c * k * k;
            let pointwise = k == 1 && s == 1 && p == 0;
            // Whole output rows per tile.
            let rows_per_tile = if pointwise {
                oh
            } else {
                (COL_TILE_FLOATS / (k_len * ow)).clamp(1, oh)
            };
            let mut col = if pointwise {
                Vec::new()
            } else {
                // SAFETY: im2col writes every element of the part of a tile it uses.
                unsafe { uninit_f32(k_len * rows_per_tile * ow) }
            };
            for bi in 0..b {
                let image = &input[bi * c * h * w..(bi + 1) * c * h * w];
                let dst = &mut out[bi * out_channels * hw..(bi + 1) * out_channels * hw];
                for y0 in (0..oh).step_by(rows_per_tile) {
                    let rows = rows_per_tile.min(oh - y0);
                    let px = rows * ow;
                    let (rhs, rhs_rs) = if pointwise {
                        (image.as_ptr(), hw as isize)
                    } else {
                        geometry.im2col(image, y0, rows, &mut col[..k_len * px]);
                        (col.as_ptr(), px as isize)
                    };
                    // SAFETY: dst holds out_channels rows of hw floats; this tile writes
                    // columns y0·ow .. y0·ow + px of each; lhs is (out, k_len) row-major and
                    // rhs (k_len, px) with row stride rhs_rs.
                    unsafe {
                        gemm(
                            out_channels,
                            px,
                            k_len,
                            dst.as_mut_ptr().add(y0 * ow),
                            1,
                            hw as isize,
                            true,
                            weight.as_ptr(),
                            1,
                            k_len as isize,
                            rhs,
                            1,
                            rhs_rs,
                            1.0,
                            1.0,
                            false,
                            false,
                            false,
                            Parallelism::Rayon(threads),
                        );
                    }
                }
            }
            Ok(())
        }
    })?;
    Tensor::from_vec(out, out_shape, x.device())
}

/// Output columns per task of the bf16 product: four microkernel tiles.
const BF16_TASK_COLS: usize = 4 * NR;
/// Output channels per task of the bf16 product.
const BF16_TASK_ROWS: usize = 8 * MR;

/// The bf16 body of [`conv2d_im2col`]: each im2col tile rounded to bf16 pairs of channels
/// (per tap, as [`WeightRows`] pairs its channels), then one product split into tasks over
/// output channels and columns, accumulating onto the pre-loaded `out`.
fn im2col_bf16(
    input: &[f32],
    rows: &WeightRows,
    geometry: Geometry,
    c: usize,
    batch: usize,
    out: &mut [f32],
) {
    let Geometry { h, w, k, s, p, ow } = geometry;
    let oh = (h + 2 * p - k) / s + 1;
    let hw = oh * ow;
    let out_channels = rows.rows();
    let (taps, cp) = (k * k, c.div_ceil(2));
    let kp = taps * cp;
    let pointwise = k == 1 && s == 1 && p == 0;
    let rows_per_tile = if pointwise {
        oh
    } else {
        (COL_TILE_FLOATS / (taps * c * ow).max(1)).clamp(1, oh.max(1))
    };
    let mut col = if pointwise {
        Vec::new()
    } else {
        // SAFETY: im2col writes every element of the part of a tile it uses.
        unsafe { uninit_f32(taps * c * rows_per_tile * ow) }
    };
    let mut pairs = vec![0u32; kp * rows_per_tile * ow];
    for bi in 0..batch {
        let image = &input[bi * c * h * w..(bi + 1) * c * h * w];
        let dst = SharedMut::new(&mut out[bi * out_channels * hw..(bi + 1) * out_channels * hw]);
        for y0 in (0..oh).step_by(rows_per_tile) {
            let px = rows_per_tile.min(oh - y0) * ow;
            if pointwise {
                interleave_planes(image, c, &mut pairs[..cp * px]);
            } else {
                let col = &mut col[..taps * c * px];
                geometry.im2col(image, y0, px / ow, col);
                pairs[..kp * px]
                    .par_chunks_mut(cp * px)
                    .zip(col.par_chunks(c * px))
                    .for_each(|(d, s)| interleave_planes(s, c, d));
            }
            let (row_tasks, col_tasks) = (
                out_channels.div_ceil(BF16_TASK_ROWS),
                px.div_ceil(BF16_TASK_COLS),
            );
            let a = rows.tap(0);
            let b = PairsB { ptr: pairs.as_ptr(), ld: px };
            (0..row_tasks * col_tasks).into_par_iter().for_each(|task| {
                let (m0, n0) = (
                    (task / col_tasks) * BF16_TASK_ROWS,
                    (task % col_tasks) * BF16_TASK_COLS,
                );
                let (m, n) = (BF16_TASK_ROWS.min(out_channels - m0), BF16_TASK_COLS.min(px - n0));
                // SAFETY: A is out_channels × kp pairs, B kp × px; this task writes channels
                // m0..m0+m, columns y0·ow + n0 .. + n of the item's output only.
                unsafe {
                    gemm_bf16(
                        m,
                        n,
                        kp,
                        a.rows_from(m0),
                        b.cols_from(n0),
                        dst.at(m0 * hw + y0 * ow + n0),
                        hw,
                        true,
                    )
                };
            });
        }
    }
}

/// Input/output geometry of one convolution.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Geometry {
    pub(crate) h: usize,
    pub(crate) w: usize,
    pub(crate) k: usize,
    pub(crate) s: usize,
    pub(crate) p: usize,
    pub(crate) ow: usize,
}

impl Geometry {
    /// Fills `col` `(k·k·c, rows·ow)` with the patches of output rows `y0 .. y0 + rows`; row
    /// `(ky, kx, ci)` (the OHWI weight's column order) holds input pixel
    /// `(y·s + ky − p, x·s + kx − p)` of channel `ci` for every output pixel `(y, x)`, zero
    /// outside the image.
    fn im2col(&self, image: &[f32], y0: usize, rows: usize, col: &mut [f32]) {
        let Geometry { h, w, k, s, p, ow } = *self;
        let px = rows * ow;
        let channels = image.len() / (h * w).max(1);
        col.par_chunks_mut(px).enumerate().for_each(|(row, dst)| {
            let (kk, ci) = (row / channels, row % channels);
            let (ky, kx) = (kk / k, kk % k);
            let plane = &image[ci * h * w..(ci + 1) * h * w];
            for r in 0..rows {
                let out_row = &mut dst[r * ow..(r + 1) * ow];
                let iy = ((y0 + r) * s + ky) as isize - p as isize;
                if iy < 0 || iy >= h as isize {
                    out_row.fill(0.0);
                    continue;
                }
                let src = &plane[iy as usize * w..(iy as usize + 1) * w];
                if s == 1 {
                    // Output x reads input x + kx - p: one shifted copy with zero ends.
                    let shift = kx as isize - p as isize;
                    let lo = (-shift).clamp(0, ow as isize) as usize;
                    let hi = (w as isize - shift).clamp(lo as isize, ow as isize) as usize;
                    out_row[..lo].fill(0.0);
                    out_row[hi..].fill(0.0);
                    let from = (lo as isize + shift) as usize;
                    out_row[lo..hi].copy_from_slice(&src[from..from + (hi - lo)]);
                } else {
                    for (x, o) in out_row.iter_mut().enumerate() {
                        let ix = (x * s + kx) as isize - p as isize;
                        *o = if ix >= 0 && ix < w as isize {
                            src[ix as usize]
                        } else {
                            0.0
                        };
                    }
                }
            }
        });
    }
}
