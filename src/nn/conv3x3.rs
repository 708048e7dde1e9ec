//! 3×3 convolutions with stride 1 and padding 1 — the bulk of the VAE's compute — as shifted
//! GEMMs over a zero-padded copy of the input, without an im2col buffer; plus the same conv
//! fused with the nearest 2× upsampling that precedes it in every decoder up block.
//!
//! Pad the input to width `Wp = W + 2` and flatten each channel plane: the input pixel that tap
//! `(dy, dx)` reads for output `(y, x)` sits at `(y + dy)·Wp + x + dx`. Computing a block of
//! output rows on the padded width therefore makes every tap's input one contiguous column range
//! of the padded planes, a strided matrix gemm reads directly. Each block accumulates its tap
//! products in a cache-sized scratch buffer, then copies its valid columns (`x < W`) out with
//! the bias added. candle 0.11's CPU conv instead gathers an im2col tile element by element
//! after a single-threaded NHWC transpose, and runs several times slower.
//!
//! The encoder's stride-2 conv runs the same way over the four parity phases of its input.
//! Upsampling by repetition followed by a 3×3 conv equals, for each of the four output phases
//! `(y mod 2, x mod 2)`, a 2×2 conv of the low-resolution input whose weights are sums of the
//! original taps: 16 products per input pixel instead of 36, and no upsampled tensor.
//!
//! Weights are kept as `[Cout, 3, 3, Cin]` (OHWI): tap `(dy, dx)` is then the `[Cout, Cin]`
//! matrix at column `(3·dy + dx)·Cin` with row stride `9·Cin`, and the same tensor is the left
//! operand of an im2col product in tap-major order (`models::conv2d`, which runs 3×3 convs on
//! small images that way and large ones here).

use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor};
use gemm::{gemm, Parallelism};
use rayon::prelude::*;

use crate::alloc::uninit_f32;
use crate::nn::cpu::{all_cpu_f32, SharedMut};

/// Scratch columns per block: the block's `c_out × cols` accumulator stays around 1 MiB.
const SCRATCH_FLOATS: usize = 1 << 18;
const MIN_BLOCK_COLS: usize = 512;

fn add_channel_bias(x: Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    match bias {
        Some(b) => x.broadcast_add(&b.reshape((1, b.elem_count(), 1, 1))?),
        None => Ok(x),
    }
}

/// A 3×3, stride-1, padding-1 convolution with its weights kept as `[Cout, 9·Cin]` (OHWI, see
/// the module docs).
#[derive(Debug, Clone)]
pub struct Conv3x3 {
    weight: Tensor,
    bias: Vec<f32>,
}

impl Conv3x3 {
    /// From diffusers' `[Cout, Cin, 3, 3]` weight and `[Cout]` bias.
    pub fn new(weight: &Tensor, bias: Option<&Tensor>) -> Result<Self> {
        let (c_out, c_in, kh, kw) = weight.dims4()?;
        if (kh, kw) != (3, 3) {
            candle_core::bail!("3×3 conv: weight shape {:?}", weight.dims());
        }
        let weight = weight
            .permute((0, 2, 3, 1))?
            .contiguous()?
            .reshape((c_out, 9 * c_in))?;
        let bias = match bias {
            Some(b) => b.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?,
            None => vec![0.0; c_out],
        };
        Self::from_ohwi(weight, bias)
    }

    /// From a `[Cout, 9·Cin]` OHWI weight and `Cout` biases.
    pub(crate) fn from_ohwi(weight: Tensor, bias: Vec<f32>) -> Result<Self> {
        let (c_out, k_len) = weight.dims2()?;
        if k_len % 9 != 0 || bias.len() != c_out {
            candle_core::bail!(
                "3×3 conv: weight {:?} with {} biases",
                weight.dims(),
                bias.len()
            );
        }
        Ok(Self { weight, bias })
    }

    /// Loads `weight` `[out, in, 3, 3]` and `bias` `[out]`.
    pub fn load(vb: candle_nn::VarBuilder, in_c: usize, out_c: usize) -> Result<Self> {
        Self::new(
            &vb.get((out_c, in_c, 3, 3), "weight")?,
            Some(&vb.get(out_c, "bias")?),
        )
    }

    fn channels(&self) -> (usize, usize) {
        let (c_out, k_len) = self.weight.dims2().unwrap_or((0, 0));
        (c_out, k_len / 9)
    }

    /// The weight as `[Cout, Cin, 3, 3]`, for candle's conv on other devices and dtypes.
    fn oihw(&self) -> Result<Tensor> {
        let (c_out, c_in) = self.channels();
        self.weight
            .reshape((c_out, 3, 3, c_in))?
            .permute((0, 3, 1, 2))
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_fused(x, None, None)
    }

    /// `forward(x) + residual`, the residual added while the output is written (a resnet's
    /// skip connection without another full-size pass and allocation).
    pub fn forward_add(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        self.forward_fused(x, None, Some(residual))
    }

    /// `forward(x)` plus `channel_offset` `(batch, Cout)` on every pixel of the matching sample
    /// and channel (a resnet's time embedding) plus `residual`, all added as the output is
    /// written.
    pub fn forward_fused(
        &self,
        x: &Tensor,
        channel_offset: Option<&Tensor>,
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (c_out, c_in) = self.channels();
        let (batch, x_in, h, w) = x.dims4()?;
        if x_in != c_in {
            candle_core::bail!("3×3 conv: input has {x_in} channels, weights expect {c_in}");
        }
        if let Some(r) = residual {
            if r.dims() != [batch, c_out, h, w] {
                candle_core::bail!(
                    "3×3 conv: residual shape {:?} differs from the output's {:?}",
                    r.dims(),
                    [batch, c_out, h, w]
                );
            }
        }
        if let Some(o) = channel_offset {
            if o.dims() != [batch, c_out] {
                candle_core::bail!(
                    "3×3 conv: channel offset {:?} for {batch}×{c_out}",
                    o.dims()
                );
            }
        }
        let mut tensors = vec![x, &self.weight];
        tensors.extend(residual);
        tensors.extend(channel_offset);
        if !all_cpu_f32(&tensors) {
            let bias = Tensor::from_slice(&self.bias, c_out, x.device())?.to_dtype(x.dtype())?;
            let mut out = add_channel_bias(x.conv2d(&self.oihw()?, 1, 1, 1, 1)?, Some(&bias))?;
            if let Some(o) = channel_offset {
                out = out.broadcast_add(&o.unsqueeze(2)?.unsqueeze(3)?)?;
            }
            return match residual {
                Some(r) => out + r,
                None => Ok(out),
            };
        }
        let residual = match residual {
            Some(r) => r.contiguous()?,
            None => Tensor::zeros(0, DType::F32, x.device())?,
        };
        let offset = match channel_offset {
            Some(o) => Some(o.flatten_all()?.to_vec1::<f32>()?),
            None => None,
        };
        x.contiguous()?.apply_op3_no_bwd(
            &self.weight,
            &residual,
            &ShiftedGemmConv {
                bias: self.bias.clone(),
                offset,
            },
        )
    }
}

/// `conv2d(x, weight, bias, stride=1, padding=1)` for `x: [B, Cin, H, W]`,
/// `weight: [Cout, Cin, 3, 3]` (packs the weights on every call; keep a [`Conv3x3`] instead
/// for repeated use). Non-f32 or non-CPU tensors go to candle's conv2d.
pub fn conv3x3(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    Conv3x3::new(weight, bias)?.forward(x)
}

/// diffusers' `Downsample2D` with a conv and `padding=0`: the input gets one zero row and column
/// at the bottom and right, then a 3×3 conv with stride 2. Run as stride-1 shifted GEMMs over
/// the four (row parity, column parity) phase planes of the input: tap `(dy, dx)` reads phase
/// `(dy mod 2, dx mod 2)` shifted by `(dy / 2, dx / 2)`.
#[derive(Debug, Clone)]
pub struct DownsampleConv3x3(Conv3x3);

impl DownsampleConv3x3 {
    pub fn new(weight: &Tensor, bias: Option<&Tensor>) -> Result<Self> {
        Ok(Self(Conv3x3::new(weight, bias)?))
    }

    pub fn load(vb: candle_nn::VarBuilder, in_c: usize, out_c: usize) -> Result<Self> {
        Ok(Self(Conv3x3::load(vb, in_c, out_c)?))
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let Self(conv) = self;
        let (c_out, c_in) = conv.channels();
        let (_, x_in, h, w) = x.dims4()?;
        if x_in != c_in || h < 2 || w < 2 {
            candle_core::bail!(
                "downsample conv: input {:?} for {c_in} input channels (at least 2×2)",
                x.dims()
            );
        }
        if !all_cpu_f32(&[x, &conv.weight]) {
            let bias = Tensor::from_slice(&conv.bias, c_out, x.device())?.to_dtype(x.dtype())?;
            let padded = x.pad_with_zeros(3, 0, 1)?.pad_with_zeros(2, 0, 1)?;
            return add_channel_bias(padded.conv2d(&conv.oihw()?, 0, 2, 1, 1)?, Some(&bias));
        }
        x.contiguous()?.apply_op2_no_bwd(
            &conv.weight,
            &PhaseStride2Conv {
                bias: conv.bias.clone(),
            },
        )
    }
}

/// Nearest 2× upsampling followed by a 3×3 conv (diffusers' `Upsample2D` with a conv), with the
/// weights folded once into four 2×2 phase kernels.
#[derive(Debug, Clone)]
pub struct Upsample2xConv3x3 {
    /// The plain conv, for the non-CPU fallback.
    conv: Conv3x3,
    /// `[4 phases, 4 taps, Cout, Cin]`: phase `2·py + px`, tap `2·a + b` reads the padded
    /// low-resolution pixel `(y + py + a, x + px + b)`.
    phase_taps: Tensor,
    bias: Tensor,
}

/// For output phase `p` (0: even rows, 1: odd rows), the 3×3 rows that land on padded
/// low-resolution offsets `p` and `p + 1`.
fn phase_rows(phase: usize) -> [&'static [usize]; 2] {
    if phase == 0 {
        [&[0], &[1, 2]]
    } else {
        [&[0, 1], &[2]]
    }
}

impl Upsample2xConv3x3 {
    /// From diffusers' `[Cout, Cin, 3, 3]` weight and `[Cout]` bias.
    pub fn new(weight: &Tensor, bias: &Tensor) -> Result<Self> {
        Self::from_conv(&Conv3x3::new(weight, Some(bias))?)
    }

    /// The upsampling version of `conv` (which it keeps for the fallback; weights are shared).
    pub(crate) fn from_conv(conv: &Conv3x3) -> Result<Self> {
        let (c_out, c_in) = conv.channels();
        // OHWI: tap (ky, kx) of input channel i for output o at o·9·Cin + (3·ky + kx)·Cin + i.
        let w: Vec<f32> = conv.weight.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        let mut folded = vec![0f32; 16 * c_out * c_in];
        for py in 0..2 {
            for px in 0..2 {
                for a in 0..2 {
                    for b in 0..2 {
                        let base = ((2 * py + px) * 4 + 2 * a + b) * c_out * c_in;
                        for (o, dst) in folded[base..base + c_out * c_in]
                            .chunks_exact_mut(c_in)
                            .enumerate()
                        {
                            let kernel = &w[o * 9 * c_in..(o + 1) * 9 * c_in];
                            for (i, d) in dst.iter_mut().enumerate() {
                                *d = phase_rows(py)[a]
                                    .iter()
                                    .flat_map(|&ky| {
                                        phase_rows(px)[b]
                                            .iter()
                                            .map(move |&kx| kernel[(ky * 3 + kx) * c_in + i])
                                    })
                                    .sum();
                            }
                        }
                    }
                }
            }
        }
        let device = conv.weight.device();
        Ok(Self {
            conv: conv.clone(),
            phase_taps: Tensor::from_vec(folded, (4, 4, c_out, c_in), device)?,
            bias: Tensor::from_slice(&conv.bias, c_out, device)?,
        })
    }

    /// `conv3x3(upsample_nearest2d(x, 2H, 2W))`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (_, x_in, h, w) = x.dims4()?;
        if !all_cpu_f32(&[x, &self.phase_taps]) {
            return self.conv.forward(&x.upsample_nearest2d(2 * h, 2 * w)?);
        }
        let (_, c_in) = self.conv.channels();
        if x_in != c_in {
            candle_core::bail!("upsample conv: input has {x_in} channels, weights expect {c_in}");
        }
        x.contiguous()?
            .apply_op3_no_bwd(&self.phase_taps, &self.bias, &Upsample2xConv)
    }
}

fn slice_of<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&s.as_slice::<f32>()?[a..b]),
        None => candle_core::bail!("3×3 conv: operands must be contiguous"),
    }
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
struct ShiftedGemmConv {
    bias: Vec<f32>,
    /// `batch × Cout` values added per sample and channel.
    offset: Option<Vec<f32>>,
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
struct PhaseStride2Conv {
    bias: Vec<f32>,
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

struct Upsample2xConv;

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

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        crate::nn::tensor_diff::max_abs_diff(a, b).unwrap()
    }

    fn random(shape: (usize, usize, usize, usize), std: f32) -> Tensor {
        Tensor::randn(0f32, std, shape, &Device::Cpu).unwrap()
    }

    fn reference(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Tensor {
        let c_out = bias.elem_count();
        x.conv2d(weight, 1, 1, 1, 1)
            .unwrap()
            .broadcast_add(&bias.reshape((1, c_out, 1, 1)).unwrap())
            .unwrap()
    }

    fn check(batch: usize, c_in: usize, c_out: usize, h: usize, w: usize) {
        let x = random((batch, c_in, h, w), 1.0);
        let weight = random((c_out, c_in, 3, 3), 0.2);
        let bias = Tensor::randn(0f32, 0.5, c_out, &Device::Cpu).unwrap();
        let got = conv3x3(&x, &weight, Some(&bias)).unwrap();
        let diff = max_diff(&got, &reference(&x, &weight, &bias));
        assert!(diff < 1e-4, "{batch}x{c_in}->{c_out} {h}x{w}: {diff}");

        let up = x.upsample_nearest2d(2 * h, 2 * w).unwrap();
        let fused = Upsample2xConv3x3::new(&weight, &bias)
            .unwrap()
            .forward(&x)
            .unwrap();
        let diff = max_diff(&fused, &reference(&up, &weight, &bias));
        assert!(
            diff < 1e-4,
            "upsample {batch}x{c_in}->{c_out} {h}x{w}: {diff}"
        );
    }

    #[test]
    fn matches_candle_conv2d() {
        check(1, 3, 8, 5, 7);
        check(2, 16, 4, 33, 9);
        check(1, 4, 4, 1, 1);
        check(3, 7, 5, 2, 40);
    }

    #[test]
    fn downsample_matches_padded_stride2_conv() {
        for (batch, c_in, c_out, h, w) in [(1, 3, 4, 8, 8), (2, 5, 3, 7, 10), (1, 2, 2, 2, 3)] {
            let x = random((batch, c_in, h, w), 1.0);
            let weight = random((c_out, c_in, 3, 3), 0.2);
            let bias = Tensor::randn(0f32, 0.5, c_out, &Device::Cpu).unwrap();
            let padded = x
                .pad_with_zeros(3, 0, 1)
                .unwrap()
                .pad_with_zeros(2, 0, 1)
                .unwrap();
            let want = padded
                .conv2d(&weight, 0, 2, 1, 1)
                .unwrap()
                .broadcast_add(&bias.reshape((1, c_out, 1, 1)).unwrap())
                .unwrap();
            let got = DownsampleConv3x3::new(&weight, Some(&bias))
                .unwrap()
                .forward(&x)
                .unwrap();
            assert!(max_diff(&got, &want) < 1e-4, "{batch}x{c_in} {h}x{w}");
        }
    }

    #[test]
    fn residual_and_channel_offset_are_added() {
        let x = random((2, 5, 6, 7), 1.0);
        let weight = random((4, 5, 3, 3), 0.2);
        let bias = Tensor::randn(0f32, 0.5, 4, &Device::Cpu).unwrap();
        let residual = random((2, 4, 6, 7), 1.0);
        let want = (reference(&x, &weight, &bias) + &residual).unwrap();
        let conv = Conv3x3::new(&weight, Some(&bias)).unwrap();
        let got = conv.forward_add(&x, &residual).unwrap();
        assert!(max_diff(&got, &want) < 1e-4);
        let offset = Tensor::randn(0f32, 1.0, (2, 4), &Device::Cpu).unwrap();
        let want = want
            .broadcast_add(&offset.unsqueeze(2).unwrap().unsqueeze(3).unwrap())
            .unwrap();
        let got = conv
            .forward_fused(&x, Some(&offset), Some(&residual))
            .unwrap();
        assert!(max_diff(&got, &want) < 1e-4);
        let wrong = random((2, 4, 6, 6), 1.0);
        assert!(conv.forward_add(&x, &wrong).is_err());
    }

    #[test]
    fn strided_input_and_no_bias() {
        let x = random((1, 6, 10, 12), 1.0).transpose(2, 3).unwrap();
        let weight = random((3, 6, 3, 3), 0.2);
        let want = x.conv2d(&weight, 1, 1, 1, 1).unwrap();
        let got = conv3x3(&x, &weight, None).unwrap();
        assert!(max_diff(&got, &want) < 1e-4);
    }

    #[test]
    fn wrong_weight_shape_is_an_error() {
        let x = random((1, 6, 4, 4), 1.0);
        let weight = random((3, 5, 3, 3), 0.2);
        assert!(conv3x3(&x, &weight, None).is_err());
    }
}
