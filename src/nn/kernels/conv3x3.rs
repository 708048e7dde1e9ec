//! The CPU kernels of the 3×3 convolutions in [`crate::nn::conv3x3`]: shifted GEMMs over
//! zero-padded planes (stride 1), the four-phase stride-2 conv and the upsampling conv with
//! folded 2×2 phase kernels, as candle custom ops over contiguous f32 storage.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape};
use gemm::{gemm, Parallelism};
use rayon::prelude::*;

use super::cpu::{contiguous_f32, SharedMut};
use crate::alloc::uninit_f32;

/// Scratch columns per block: the block's `c_out × cols` accumulator stays around 1 MiB.
const SCRATCH_FLOATS: usize = 1 << 18;
const MIN_BLOCK_COLS: usize = 512;

fn slice_of<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    contiguous_f32(s, l, "3×3 conv")
}

/// Zero-padded channel planes of `x: [B, C, H, W]`: one ring of zeros, width `W + 2`, and two
/// spare floats so the last tap's column range stays inside the plane.
struct PaddedPlanes {
    data: Vec<f32>,
    width: usize,
    plane: usize,
}

impl PaddedPlanes {
    fn new(x: &[f32], h: usize, w: usize) -> Self {
        let width = w + 2;
        let plane = (h + 2) * width + 2;
        if h * w == 0 {
            return Self {
                data: vec![0.0; (x.len() / (h * w).max(1)) * plane],
                width,
                plane,
            };
        }
        // SAFETY: each plane is written completely below: the zero ring (top row, bottom row
        // with the two spare floats, the left and right column of every row) and the image.
        let mut data = unsafe { uninit_f32(x.len() / (h * w) * plane) };
        data.par_chunks_mut(plane)
            .zip(x.par_chunks(h * w))
            .for_each(|(dst, src)| {
                dst[..width + 1].fill(0.0);
                for (y, row) in src.chunks_exact(w).enumerate() {
                    let start = (y + 1) * width + 1;
                    dst[start..start + w].copy_from_slice(row);
                    // Right border of this row and left border of the next.
                    dst[start + w..start + w + 2].fill(0.0);
                }
                dst[(h + 1) * width + 1..].fill(0.0);
            });
        Self { data, width, plane }
    }
}

/// One GEMM tap: a `[Cout, Cin]` weight matrix (strided) applied to the padded planes shifted
/// by `offset`.
struct Tap {
    weight: *const f32,
    col_stride: isize,
    row_stride: isize,
    offset: usize,
}

/// `scratch[o, j] = Σ_taps Σ_i W_tap[o, i] · image[i·plane + tap.offset + j]` for `j < cols`.
///
/// # Safety
/// Every tap's weight matrix must be readable at the given strides for `c_out × c_in`
/// elements, and `tap.offset + cols` (plus `(c_in - 1)·plane`) must stay inside `image`.
unsafe fn accumulate_taps(
    scratch: &mut Vec<f32>,
    c_out: usize,
    cols: usize,
    c_in: usize,
    image: &[f32],
    plane: usize,
    taps: &[Tap],
) {
    scratch.clear();
    scratch.resize(c_out * cols, 0.0);
    for (t, tap) in taps.iter().enumerate() {
        debug_assert!((c_in - 1) * plane + tap.offset + cols <= image.len());
        gemm(
            c_out,
            cols,
            c_in,
            scratch.as_mut_ptr(),
            1,
            cols as isize,
            t > 0,
            tap.weight,
            tap.col_stride,
            tap.row_stride,
            image.as_ptr().add(tap.offset),
            1,
            plane as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            Parallelism::None,
        );
    }
}

/// Rows per block so a block has about `target_cols` padded columns and the blocks keep every
/// thread busy.
fn rows_per_block(batch: usize, h: usize, padded_w: usize, c_out: usize) -> usize {
    let target_cols = (SCRATCH_FLOATS / c_out.max(1)).max(MIN_BLOCK_COLS);
    let threads = rayon::current_num_threads().max(1);
    let mut blocks = (h * padded_w).div_ceil(target_cols).max(1);
    // At least two tasks per thread when the image allows it, for load balance.
    let min_blocks = (2 * threads).div_ceil(batch.max(1));
    blocks = blocks.max(min_blocks).min(h.max(1));
    h.div_ceil(blocks).max(1)
}

/// Operands: input, `[Cout, 9·Cin]` weights, and the residual to add (empty for none).
pub(crate) struct ShiftedGemmConv {
    pub(crate) bias: Vec<f32>,
    /// `batch × Cout` values added per sample and channel.
    pub(crate) offset: Option<Vec<f32>>,
}

impl CustomOp3 for ShiftedGemmConv {
    fn name(&self) -> &'static str {
        "conv3x3"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        rs: &CpuStorage,
        rl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = slice_of(xs, xl)?;
        let w = slice_of(ws, wl)?;
        let residual = slice_of(rs, rl)?;
        let (batch, c_in, h, width) = xl.shape().dims4()?;
        let (c_out, _) = wl.shape().dims2()?;
        let channel_value = |b: usize, o: usize| {
            self.bias[o] + self.offset.as_ref().map_or(0.0, |off| off[b * c_out + o])
        };
        let padded = PaddedPlanes::new(x, h, width);
        // SAFETY: the blocks below write every row of every output plane.
        let mut out = unsafe { uninit_f32(batch * c_out * h * width) };
        let out_ptr = SharedMut::new(&mut out);
        let rows = rows_per_block(batch, h, padded.width, c_out);
        let blocks = h.div_ceil(rows);
        let padded = &padded;
        (0..batch * blocks)
            .into_par_iter()
            .for_each_init(Vec::<f32>::new, |scratch, task| {
                let (b, block) = (task / blocks, task % blocks);
                let y0 = block * rows;
                let r = rows.min(h - y0);
                let cols = r * padded.width;
                let image = &padded.data[b * c_in * padded.plane..(b + 1) * c_in * padded.plane];
                // Tap (dy, dx) = 3·dy + dx is the c_out × c_in matrix at column tap·c_in.
                let taps: Vec<Tap> = (0..9)
                    .map(|tap| Tap {
                        weight: w.as_ptr().wrapping_add(tap * c_in),
                        col_stride: 1,
                        row_stride: 9 * c_in as isize,
                        offset: (y0 + tap / 3) * padded.width + tap % 3,
                    })
                    .collect();
                // SAFETY: weights are c_out × 9·c_in floats; the largest offset is
                // (y0 + r + 1)·Wp + 2 and offset + cols ≤ (h + 2)·Wp + 2 = plane.
                unsafe { accumulate_taps(scratch, c_out, cols, c_in, image, padded.plane, &taps) };
                for (o, acc) in scratch.chunks_exact(cols).enumerate() {
                    let value = channel_value(b, o);
                    for i in 0..r {
                        let src = &acc[i * padded.width..i * padded.width + width];
                        let start = ((b * c_out + o) * h + y0 + i) * width;
                        // SAFETY: rows y0..y0+r of batch item b belong to this task only.
                        let dst =
                            unsafe { std::slice::from_raw_parts_mut(out_ptr.at(start), width) };
                        if residual.is_empty() {
                            for (d, s) in dst.iter_mut().zip(src) {
                                *d = s + value;
                            }
                        } else {
                            let skip = &residual[start..start + width];
                            for ((d, s), r) in dst.iter_mut().zip(src).zip(skip) {
                                *d = s + value + r;
                            }
                        }
                    }
                }
            });
        Ok((CpuStorage::F32(out), Shape::from((batch, c_out, h, width))))
    }
}

/// Operands: input `[B, Cin, H, W]` and `[Cout, 9·Cin]` weights.
pub(crate) struct PhaseStride2Conv {
    pub(crate) bias: Vec<f32>,
}

impl CustomOp2 for PhaseStride2Conv {
    fn name(&self) -> &'static str {
        "downsample-conv3x3"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = slice_of(xs, xl)?;
        let w = slice_of(ws, wl)?;
        let bias = &self.bias;
        let (batch, c_in, h, width) = xl.shape().dims4()?;
        let (c_out, _) = wl.shape().dims2()?;
        // Padded to (h + 1) × (width + 1), then a 3×3 window every 2 pixels.
        let (out_h, out_w) = ((h - 2) / 2 + 1, (width - 2) / 2 + 1);
        // Phase planes: out_h + 1 rows of pitch out_w + 1, plus one spare float for the last
        // tap's column range. Pixels beyond the input are the zero padding.
        let pitch = out_w + 1;
        let plane = (out_h + 1) * pitch + 1;
        let mut phases = vec![0f32; batch * 4 * c_in * plane];
        phases
            .par_chunks_mut(4 * c_in * plane)
            .zip(x.par_chunks(c_in * h * width))
            .for_each(|(dst, src)| {
                for (phase, planes) in dst.chunks_exact_mut(c_in * plane).enumerate() {
                    let (py, px) = (phase / 2, phase % 2);
                    for (plane_dst, channel) in planes
                        .chunks_exact_mut(plane)
                        .zip(src.chunks_exact(h * width))
                    {
                        for a in 0..=out_h {
                            let row = 2 * a + py;
                            if row >= h {
                                break;
                            }
                            let src_row = &channel[row * width..(row + 1) * width];
                            let dst_row = &mut plane_dst[a * pitch..(a + 1) * pitch];
                            for (d, s) in dst_row.iter_mut().zip(src_row.iter().skip(px).step_by(2))
                            {
                                *d = *s;
                            }
                        }
                    }
                }
            });
        // SAFETY: the blocks below write every pixel of every output plane.
        let mut out = unsafe { uninit_f32(batch * c_out * out_h * out_w) };
        let out_ptr = SharedMut::new(&mut out);
        let rows = rows_per_block(batch, out_h, pitch, c_out);
        let blocks = out_h.div_ceil(rows);
        let phases = &phases;
        (0..batch * blocks)
            .into_par_iter()
            .for_each_init(Vec::<f32>::new, |scratch, task| {
                let (b, block) = (task / blocks, task % blocks);
                let y0 = block * rows;
                let r = rows.min(out_h - y0);
                let cols = r * pitch;
                let image = &phases[b * 4 * c_in * plane..(b + 1) * 4 * c_in * plane];
                let taps: Vec<Tap> = (0..9)
                    .map(|tap| {
                        let (dy, dx) = (tap / 3, tap % 3);
                        let phase = 2 * (dy % 2) + dx % 2;
                        Tap {
                            weight: w.as_ptr().wrapping_add(tap * c_in),
                            col_stride: 1,
                            row_stride: 9 * c_in as isize,
                            offset: phase * c_in * plane + (y0 + dy / 2) * pitch + dx / 2,
                        }
                    })
                    .collect();
                // SAFETY: weights are c_out × 9·c_in floats; within a phase the largest
                // offset is (y0 + 1)·pitch + 1 and offset + cols ≤ (out_h + 1)·pitch + 1 = plane.
                unsafe { accumulate_taps(scratch, c_out, cols, c_in, image, plane, &taps) };
                for (o, acc) in scratch.chunks_exact(cols).enumerate() {
                    for i in 0..r {
                        let src = &acc[i * pitch..i * pitch + out_w];
                        let start = ((b * c_out + o) * out_h + y0 + i) * out_w;
                        // SAFETY: rows y0..y0+r of batch item b belong to this task only.
                        let dst =
                            unsafe { std::slice::from_raw_parts_mut(out_ptr.at(start), out_w) };
                        for (d, s) in dst.iter_mut().zip(src) {
                            *d = s + bias[o];
                        }
                    }
                }
            });
        Ok((
            CpuStorage::F32(out),
            Shape::from((batch, c_out, out_h, out_w)),
        ))
    }
}

pub(crate) struct Upsample2xConv;

impl CustomOp3 for Upsample2xConv {
    fn name(&self) -> &'static str {
        "upsample2x-conv3x3"
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
        let w = slice_of(ws, wl)?;
        let bias = slice_of(bs, bl)?;
        let (batch, c_in, h, width) = xl.shape().dims4()?;
        let (_, _, c_out, _) = wl.shape().dims4()?;
        let (out_h, out_w) = (2 * h, 2 * width);
        let padded = PaddedPlanes::new(x, h, width);
        // SAFETY: the blocks below write every pixel of every output plane.
        let mut out = unsafe { uninit_f32(batch * c_out * out_h * out_w) };
        let out_ptr = SharedMut::new(&mut out);
        let rows = rows_per_block(batch, h, padded.width, c_out);
        let blocks = h.div_ceil(rows);
        let padded = &padded;
        let matrix = c_out * c_in;
        (0..batch * blocks)
            .into_par_iter()
            .for_each_init(Vec::<f32>::new, |scratch, task| {
                let (b, block) = (task / blocks, task % blocks);
                let y0 = block * rows;
                let r = rows.min(h - y0);
                let cols = r * padded.width;
                let image = &padded.data[b * c_in * padded.plane..(b + 1) * c_in * padded.plane];
                for (py, px) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                    let phase = 2 * py + px;
                    let taps: Vec<Tap> = (0..4)
                        .map(|tap| Tap {
                            weight: w.as_ptr().wrapping_add((phase * 4 + tap) * matrix),
                            col_stride: 1,
                            row_stride: c_in as isize,
                            offset: (y0 + py + tap / 2) * padded.width + px + tap % 2,
                        })
                        .collect();
                    // SAFETY: each folded matrix is c_out × c_in contiguous floats; the largest
                    // offset is (y0 + r + 1)·Wp + 2, inside the plane as for the plain conv.
                    unsafe {
                        accumulate_taps(scratch, c_out, cols, c_in, image, padded.plane, &taps)
                    };
                    for (o, acc) in scratch.chunks_exact(cols).enumerate() {
                        for i in 0..r {
                            let src = &acc[i * padded.width..i * padded.width + width];
                            let row = 2 * (y0 + i) + py;
                            let start = ((b * c_out + o) * out_h + row) * out_w;
                            // SAFETY: output rows 2·y0..2·(y0 + r) of batch item b belong to this
                            // task only.
                            let dst =
                                unsafe { std::slice::from_raw_parts_mut(out_ptr.at(start), out_w) };
                            for (d, s) in dst.iter_mut().skip(px).step_by(2).zip(src) {
                                *d = s + bias[o];
                            }
                        }
                    }
                }
            });
        Ok((
            CpuStorage::F32(out),
            Shape::from((batch, c_out, out_h, out_w)),
        ))
    }
}
