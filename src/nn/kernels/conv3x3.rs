//! The CPU kernels of the 3×3 convolutions in [`crate::nn::conv3x3`]: shifted GEMMs over
//! zero-padded planes (stride 1), the four-phase stride-2 conv and the upsampling conv with
//! folded 2×2 phase kernels, as candle custom ops over contiguous f32 storage. With bf16
//! weights the same taps run as [`super::gemm_bf16`] products over the planes rounded to
//! bf16 channel pairs.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape};
use gemm::{gemm, Parallelism};
use rayon::prelude::*;

use super::cpu::{contiguous_f32, SharedMut};
use super::gemm_bf16::{gemm_bf16, interleave_planes, PairsA, PairsB, WeightRows, NR};
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

/// The planes a conv's taps read, per batch item `groups` groups (the stride-2 conv's four
/// phases, else one) of `channels` planes of `plane` values: f32, or for bf16 weights the
/// same planes rounded to bf16 and interleaved by channel pairs (`channels.div_ceil(2)` pair
/// planes per group, the layout [`gemm_bf16`]'s B operand reads).
enum TapInput {
    F32(Vec<f32>),
    Pairs(Vec<u32>),
}

impl TapInput {
    /// `planes` (f32) in the precision of `weights`.
    fn new(planes: Vec<f32>, channels: usize, plane: usize, weights: &TapWeights) -> Self {
        match weights {
            TapWeights::F32(_) => TapInput::F32(planes),
            TapWeights::Bf16(_) => {
                let groups = planes.len() / (channels * plane).max(1);
                let cp = channels.div_ceil(2);
                let mut pairs = vec![0u32; groups * cp * plane];
                pairs
                    .par_chunks_mut(cp * plane)
                    .zip(planes.par_chunks(channels * plane))
                    .for_each(|(dst, src)| interleave_planes(src, channels, dst));
                TapInput::Pairs(pairs)
            }
        }
    }
}

/// A conv's weight matrices: tap matrix `t` is `[Cout, Cin]` at `t · matrix` with row stride
/// `row`, in units of the weights' elements (f32 values or bf16 channel pairs).
#[derive(Clone, Copy)]
enum MatrixLayout {
    /// OHWI `[Cout, taps, Cin]`: a tap is a column block of the rows.
    Ohwi { taps: usize },
    /// `[taps, Cout, Cin]`: one contiguous matrix per tap.
    Stacked,
}

impl MatrixLayout {
    /// `(matrix stride, row stride)` for `channels` elements per input-channel run.
    fn strides(self, c_out: usize, channels: usize) -> (usize, usize) {
        match self {
            MatrixLayout::Ohwi { taps } => (channels, taps * channels),
            MatrixLayout::Stacked => (c_out * channels, channels),
        }
    }
}

/// The weights a conv op multiplies by.
pub(crate) enum TapWeights<'a> {
    F32(&'a [f32]),
    /// bf16 pairs (see [`WeightRows`]).
    Bf16(&'a WeightRows),
}

/// One GEMM tap: weight matrix `matrix`, applied to group `group` of the planes shifted by
/// `offset` values.
struct Tap {
    matrix: usize,
    group: usize,
    offset: usize,
}

/// `scratch[o, j] = Σ_taps Σ_i W_tap[o, i] · image[(group·C + i)·plane + offset + j]` for
/// `j < cols`, with `image` the planes of batch item `item` (`groups` groups each).
///
/// # Safety
/// Every tap matrix must lie inside the weights, and `tap.offset + cols` plus the group's
/// last plane must stay inside the item's planes.
#[allow(clippy::too_many_arguments)]
unsafe fn accumulate_taps(
    scratch: &mut Vec<f32>,
    c_out: usize,
    cols: usize,
    c_in: usize,
    weights: &TapWeights,
    layout: MatrixLayout,
    input: &TapInput,
    item: usize,
    groups: usize,
    plane: usize,
    taps: &[Tap],
) {
    scratch.clear();
    scratch.resize(c_out * cols, 0.0);
    match (weights, input) {
        (TapWeights::F32(w), TapInput::F32(planes)) => {
            let (matrix, row) = layout.strides(c_out, c_in);
            let image = &planes[item * groups * c_in * plane..];
            for (t, tap) in taps.iter().enumerate() {
                let start = tap.group * c_in * plane + tap.offset;
                debug_assert!(start + (c_in - 1) * plane + cols <= image.len());
                gemm(
                    c_out,
                    cols,
                    c_in,
                    scratch.as_mut_ptr(),
                    1,
                    cols as isize,
                    t > 0,
                    w.as_ptr().add(tap.matrix * matrix),
                    1,
                    row as isize,
                    image.as_ptr().add(start),
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
        (TapWeights::Bf16(w), TapInput::Pairs(planes)) => {
            let cp = c_in.div_ceil(2);
            let (matrix, row) = layout.strides(c_out, cp);
            let base = w.tap(0).ptr;
            let image = &planes[item * groups * cp * plane..];
            // Column tiles outermost: a tile's columns stay in cache across all taps.
            for n0 in (0..cols).step_by(NR) {
                let n = NR.min(cols - n0);
                for (t, tap) in taps.iter().enumerate() {
                    let start = tap.group * cp * plane + tap.offset + n0;
                    debug_assert!(start + (cp - 1) * plane + n <= image.len());
                    let a = PairsA {
                        ptr: base.add(tap.matrix * matrix),
                        row,
                        pair: 1,
                    };
                    let b = PairsB {
                        ptr: image.as_ptr().add(start),
                        ld: plane,
                    };
                    gemm_bf16(c_out, n, cp, a, b, scratch.as_mut_ptr().add(n0), cols, t > 0);
                }
            }
        }
        _ => unreachable!("conv planes are built in the precision of their weights"),
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

/// Operands: input, `[Cout, 9·Cin]` f32 weights (empty with `bf16`), and the residual to
/// add (empty for none).
pub(crate) struct ShiftedGemmConv {
    pub(crate) bias: Vec<f32>,
    /// `batch × Cout` values added per sample and channel.
    pub(crate) offset: Option<Vec<f32>>,
    /// The weights as bf16 pairs (`[Cout, 9, Cin]`), instead of the f32 operand.
    pub(crate) bf16: Option<Arc<WeightRows>>,
}

/// The weights of an op: its bf16 pairs, or else its f32 operand.
fn tap_weights<'a>(
    bf16: &'a Option<Arc<WeightRows>>,
    ws: &'a CpuStorage,
    wl: &Layout,
) -> Result<TapWeights<'a>> {
    Ok(match bf16 {
        Some(rows) => TapWeights::Bf16(rows),
        None => TapWeights::F32(slice_of(ws, wl)?),
    })
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
        let weights = tap_weights(&self.bf16, ws, wl)?;
        let residual = slice_of(rs, rl)?;
        let (batch, c_in, h, width) = xl.shape().dims4()?;
        let c_out = self.bias.len();
        let channel_value = |b: usize, o: usize| {
            self.bias[o] + self.offset.as_ref().map_or(0.0, |off| off[b * c_out + o])
        };
        let padded = PaddedPlanes::new(x, h, width);
        let (pw, plane) = (padded.width, padded.plane);
        let input = TapInput::new(padded.data, c_in, plane, &weights);
        // SAFETY: the blocks below write every row of every output plane.
        let mut out = unsafe { uninit_f32(batch * c_out * h * width) };
        let out_ptr = SharedMut::new(&mut out);
        let rows = rows_per_block(batch, h, pw, c_out);
        let blocks = h.div_ceil(rows);
        let (input, weights) = (&input, &weights);
        (0..batch * blocks)
            .into_par_iter()
            .for_each_init(Vec::<f32>::new, |scratch, task| {
                let (b, block) = (task / blocks, task % blocks);
                let y0 = block * rows;
                let r = rows.min(h - y0);
                let cols = r * pw;
                // Tap (dy, dx) = 3·dy + dx is the c_out × c_in matrix at column tap·c_in.
                let taps: Vec<Tap> = (0..9)
                    .map(|tap| Tap {
                        matrix: tap,
                        group: 0,
                        offset: (y0 + tap / 3) * pw + tap % 3,
                    })
                    .collect();
                // SAFETY: weights are c_out × 9 taps × c_in; the largest offset is
                // (y0 + r + 1)·Wp + 2 and offset + cols ≤ (h + 2)·Wp + 2 = plane.
                unsafe {
                    accumulate_taps(
                        scratch,
                        c_out,
                        cols,
                        c_in,
                        weights,
                        MatrixLayout::Ohwi { taps: 9 },
                        input,
                        b,
                        1,
                        plane,
                        &taps,
                    )
                };
                for (o, acc) in scratch.chunks_exact(cols).enumerate() {
                    let value = channel_value(b, o);
                    for i in 0..r {
                        let src = &acc[i * pw..i * pw + width];
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

/// Operands: input `[B, Cin, H, W]` and `[Cout, 9·Cin]` f32 weights (empty with `bf16`).
pub(crate) struct PhaseStride2Conv {
    pub(crate) bias: Vec<f32>,
    /// The weights as bf16 pairs (`[Cout, 9, Cin]`), instead of the f32 operand.
    pub(crate) bf16: Option<Arc<WeightRows>>,
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
        let weights = tap_weights(&self.bf16, ws, wl)?;
        let bias = &self.bias;
        let (batch, c_in, h, width) = xl.shape().dims4()?;
        let c_out = bias.len();
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
        let input = TapInput::new(phases, c_in, plane, &weights);
        let (input, weights) = (&input, &weights);
        (0..batch * blocks)
            .into_par_iter()
            .for_each_init(Vec::<f32>::new, |scratch, task| {
                let (b, block) = (task / blocks, task % blocks);
                let y0 = block * rows;
                let r = rows.min(out_h - y0);
                let cols = r * pitch;
                let taps: Vec<Tap> = (0..9)
                    .map(|tap| {
                        let (dy, dx) = (tap / 3, tap % 3);
                        Tap {
                            matrix: tap,
                            group: 2 * (dy % 2) + dx % 2,
                            offset: (y0 + dy / 2) * pitch + dx / 2,
                        }
                    })
                    .collect();
                // SAFETY: weights are c_out × 9 taps × c_in; within a phase the largest
                // offset is (y0 + 1)·pitch + 1 and offset + cols ≤ (out_h + 1)·pitch + 1 = plane.
                unsafe {
                    accumulate_taps(
                        scratch,
                        c_out,
                        cols,
                        c_in,
                        weights,
                        MatrixLayout::Ohwi { taps: 9 },
                        input,
                        b,
                        4,
                        plane,
                        &taps,
                    )
                };
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

/// Operands: input `[B, Cin, H, W]` and the `[4 phases · 4 taps, Cout, Cin]` folded f32
/// weights (empty with `bf16`).
pub(crate) struct Upsample2xConv {
    pub(crate) bias: Vec<f32>,
    /// The folded weights as bf16 pairs (16·Cout rows of Cin), instead of the f32 operand.
    pub(crate) bf16: Option<Arc<WeightRows>>,
}

impl CustomOp2 for Upsample2xConv {
    fn name(&self) -> &'static str {
        "upsample2x-conv3x3"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = slice_of(xs, xl)?;
        let weights = tap_weights(&self.bf16, ws, wl)?;
        let bias = &self.bias;
        let (batch, c_in, h, width) = xl.shape().dims4()?;
        let c_out = bias.len();
        let (out_h, out_w) = (2 * h, 2 * width);
        let padded = PaddedPlanes::new(x, h, width);
        let (pw, plane) = (padded.width, padded.plane);
        let input = TapInput::new(padded.data, c_in, plane, &weights);
        // SAFETY: the blocks below write every pixel of every output plane.
        let mut out = unsafe { uninit_f32(batch * c_out * out_h * out_w) };
        let out_ptr = SharedMut::new(&mut out);
        let rows = rows_per_block(batch, h, pw, c_out);
        let blocks = h.div_ceil(rows);
        let (input, weights) = (&input, &weights);
        (0..batch * blocks)
            .into_par_iter()
            .for_each_init(Vec::<f32>::new, |scratch, task| {
                let (b, block) = (task / blocks, task % blocks);
                let y0 = block * rows;
                let r = rows.min(h - y0);
                let cols = r * pw;
                for (py, px) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                    let phase = 2 * py + px;
                    let taps: Vec<Tap> = (0..4)
                        .map(|tap| Tap {
                            matrix: phase * 4 + tap,
                            group: 0,
                            offset: (y0 + py + tap / 2) * pw + px + tap % 2,
                        })
                        .collect();
                    // SAFETY: each folded matrix is c_out × c_in contiguous values; the largest
                    // offset is (y0 + r + 1)·Wp + 2, inside the plane as for the plain conv.
                    unsafe {
                        accumulate_taps(
                            scratch,
                            c_out,
                            cols,
                            c_in,
                            weights,
                            MatrixLayout::Stacked,
                            input,
                            b,
                            1,
                            plane,
                            &taps,
                        )
                    };
                    for (o, acc) in scratch.chunks_exact(cols).enumerate() {
                        for i in 0..r {
                            let src = &acc[i * pw..i * pw + width];
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
