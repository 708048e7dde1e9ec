//! 3×3 convolution with stride 1 and padding 1 — the bulk of the VAE's (and UNet's) compute —
//! as nine shifted GEMMs over a zero-padded copy of the input, without an im2col buffer.
//!
//! Pad the input to width `Wp = W + 2` and flatten each channel: the input pixel that tap
//! `(dy, dx)` reads for output `(y, x)` sits at `(y + dy)·Wp + x + dx`. Computing a block of
//! output rows on the padded width therefore makes every tap's input one contiguous column range
//! of the padded channel planes, a plain strided matrix gemm reads directly. Each block
//! accumulates its nine products in a cache-sized scratch buffer, then copies its valid columns
//! (`x < W`) out with the bias added. candle 0.11's CPU conv instead gathers an im2col tile
//! element by element after a single-threaded NHWC transpose, and runs several times slower.

use candle_core::{CpuStorage, CustomOp3, DType, Device, Layout, Result, Shape, Tensor};
use gemm::{gemm, Parallelism};
use rayon::prelude::*;

/// Scratch columns per block: the block's `c_out × cols` accumulator stays around 1 MiB.
const SCRATCH_FLOATS: usize = 1 << 18;
const MIN_BLOCK_COLS: usize = 512;

/// `conv2d(x, weight, bias, stride=1, padding=1)` for `x: [B, Cin, H, W]`,
/// `weight: [Cout, Cin, 3, 3]`, f32 on the CPU; other cases go to candle's conv2d.
pub fn conv3x3(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let fast = matches!(x.device(), Device::Cpu)
        && x.dtype() == DType::F32
        && weight.dtype() == DType::F32
        && weight.dims4()?.2 == 3
        && weight.dims4()?.3 == 3;
    if !fast {
        let out = x.conv2d(weight, 1, 1, 1, 1)?;
        return match bias {
            Some(b) => out.broadcast_add(&b.reshape((1, b.elem_count(), 1, 1))?),
            None => Ok(out),
        };
    }
    let (_, c_in, _, _) = x.dims4()?;
    let (c_out, k_in, _, _) = weight.dims4()?;
    if c_in != k_in {
        candle_core::bail!("conv3x3: input has {c_in} channels, weight expects {k_in}");
    }
    let bias = match bias {
        Some(b) => b.clone(),
        None => Tensor::zeros(c_out, DType::F32, x.device())?,
    };
    x.contiguous()?
        .apply_op3_no_bwd(&weight.contiguous()?, &bias.contiguous()?, &Conv3x3)
}

struct Conv3x3;

fn slice_of<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&s.as_slice::<f32>()?[a..b]),
        None => candle_core::bail!("conv3x3: operands must be contiguous"),
    }
}

/// Raw output pointer shared by tasks that write disjoint rows.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: every task writes a disjoint set of output rows (distinct batch item or row block).
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// A method (not field access) so closures capture the whole `Send` wrapper.
    fn at(&self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}

/// Rows per block so a block has about `target_cols` padded columns and the blocks keep every
/// thread busy.
fn rows_per_block(batch: usize, h: usize, padded_w: usize, target_cols: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    let mut blocks = (h * padded_w).div_ceil(target_cols.max(1)).max(1);
    // At least two tasks per thread when the image allows it, for load balance.
    let min_blocks = (2 * threads).div_ceil(batch.max(1));
    blocks = blocks.max(min_blocks).min(h);
    h.div_ceil(blocks)
}

impl CustomOp3 for Conv3x3 {
    fn name(&self) -> &'static str {
        "conv3x3"
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
        let (c_out, _, _, _) = wl.shape().dims4()?;
        let padded_w = width + 2;
        // Two extra floats so the last tap's column range stays inside the plane.
        let plane = (h + 2) * padded_w + 2;

        let mut padded = vec![0f32; batch * c_in * plane];
        padded
            .par_chunks_mut(plane)
            .zip(x.par_chunks(h * width))
            .for_each(|(dst, src)| {
                for (y, row) in src.chunks_exact(width).enumerate() {
                    let start = (y + 1) * padded_w + 1;
                    dst[start..start + width].copy_from_slice(row);
                }
            });

        let mut out = vec![0f32; batch * c_out * h * width];
        let out_ptr = OutPtr(out.as_mut_ptr());
        let target_cols = (SCRATCH_FLOATS / c_out.max(1)).max(MIN_BLOCK_COLS);
        let rows = rows_per_block(batch, h, padded_w, target_cols);
        let blocks = h.div_ceil(rows);
        let padded = &padded;
        (0..batch * blocks)
            .into_par_iter()
            .for_each_init(Vec::<f32>::new, |scratch, task| {
                let (b, block) = (task / blocks, task % blocks);
                let y0 = block * rows;
                let r = rows.min(h - y0);
                let cols = r * padded_w;
                scratch.clear();
                scratch.resize(c_out * cols, 0.0);
                let image = &padded[b * c_in * plane..(b + 1) * c_in * plane];
                for tap in 0..9 {
                    let (dy, dx) = (tap / 3, tap % 3);
                    let offset = (y0 + dy) * padded_w + dx;
                    // SAFETY: dst is c_out × cols inside `scratch`; lhs element (o, i) is
                    // w[o·9·c_in + i·9 + tap] < w.len(); rhs element (i, j) is
                    // image[i·plane + offset + j] with offset + cols ≤ plane by the padding.
                    unsafe {
                        gemm(
                            c_out,
                            cols,
                            c_in,
                            scratch.as_mut_ptr(),
                            1,
                            cols as isize,
                            tap > 0,
                            w.as_ptr().add(tap),
                            9,
                            (9 * c_in) as isize,
                            image.as_ptr().add(offset),
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
                for (o, acc) in scratch.chunks_exact(cols).enumerate() {
                    let beta = bias[o];
                    for i in 0..r {
                        let src = &acc[i * padded_w..i * padded_w + width];
                        let start = ((b * c_out + o) * h + y0 + i) * width;
                        // SAFETY: rows y0..y0+r of batch item b belong to this task only.
                        let dst =
                            unsafe { std::slice::from_raw_parts_mut(out_ptr.at(start), width) };
                        for (d, s) in dst.iter_mut().zip(src) {
                            *d = s + beta;
                        }
                    }
                }
            });
        Ok((CpuStorage::F32(out), Shape::from((batch, c_out, h, width))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(batch: usize, c_in: usize, c_out: usize, h: usize, w: usize) {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (batch, c_in, h, w), &dev).unwrap();
        let weight = Tensor::randn(0f32, 0.2, (c_out, c_in, 3, 3), &dev).unwrap();
        let bias = Tensor::randn(0f32, 0.5, c_out, &dev).unwrap();
        let want = x
            .conv2d(&weight, 1, 1, 1, 1)
            .unwrap()
            .broadcast_add(&bias.reshape((1, c_out, 1, 1)).unwrap())
            .unwrap();
        let got = conv3x3(&x, &weight, Some(&bias)).unwrap();
        let diff = (got - want)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(diff < 1e-4, "{batch}x{c_in}->{c_out} {h}x{w}: {diff}");
    }

    #[test]
    fn matches_candle_conv2d() {
        check(1, 3, 8, 5, 7);
        check(2, 16, 4, 33, 9);
        check(1, 4, 4, 1, 1);
        check(3, 7, 5, 2, 40);
    }

    #[test]
    fn strided_input_and_no_bias() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (1, 6, 10, 12), &dev)
            .unwrap()
            .transpose(2, 3)
            .unwrap();
        let weight = Tensor::randn(0f32, 0.2, (3, 6, 3, 3), &dev).unwrap();
        let want = x.conv2d(&weight, 1, 1, 1, 1).unwrap();
        let got = conv3x3(&x, &weight, None).unwrap();
        let diff = (got - want).unwrap().abs().unwrap().max_all().unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() < 1e-4);
    }
}
