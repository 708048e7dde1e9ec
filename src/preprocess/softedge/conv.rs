//! 3×3 'same' convolution + bias + ReLU on channels-last (HWC) images, as a candle custom op.
//!
//! Why not `Tensor::conv2d`: candle 0.11's CPU conv2d converts NCHW to NHWC on every call and
//! runs one small gemm per 512-pixel tile with a strided im2col; on VGG16 layers it measured
//! 1.5–1.7× slower than a plain gemm of the same size. Here activations stay channels-last,
//! so the im2col rows of a band of output rows are nine contiguous copies per pixel, and the
//! Keras kernel layout (HWIO, i.e. `[3·3·C_in, C_out]` row-major) is already the gemm's right
//! operand: one gemm per band, with the bias preloaded into the output and ReLU applied in place.

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::nn::kernels::cpu::contiguous_f32;

/// Upper bound on an im2col band (floats): 2 MiB, so a band's columns stay in a core's L2 while
/// the gemm reads them back. Measured per VGG16 layer (CPU-seconds, loaded 2-core AVX-512
/// machine): 8 MiB bands ran 512²·64→64 at 62 GFLOP/cpu-s, 256²·128→128 at 86 and
/// 128²·256→256 at 107; 2 MiB bands at 110, 129 and 129 (1 MiB and 0.5 MiB: no better).
const BAND_FLOATS: usize = 1 << 19;

thread_local! {
    /// im2col buffer of the bands this thread runs (every element is rewritten per band).
    static COLUMNS: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// `relu(conv3x3_same(x, kernel) + bias)` for `x: [H, W, C]`, `kernel: [3, 3, C, O]` (HWIO),
/// `bias: [O]`, all f32; returns `[H, W, O]`.
pub fn conv3x3_bias_relu(
    x: &Tensor,
    kernel: &Tensor,
    bias: &Tensor,
) -> candle_core::Result<Tensor> {
    x.apply_op3_no_bwd(kernel, bias, &Conv3x3BiasRelu)
}

struct Conv3x3BiasRelu;

impl CustomOp3 for Conv3x3BiasRelu {
    fn name(&self) -> &'static str {
        "conv3x3-bias-relu-hwc"
    }

    fn cpu_fwd(
        &self,
        s_x: &CpuStorage,
        l_x: &Layout,
        s_k: &CpuStorage,
        l_k: &Layout,
        s_b: &CpuStorage,
        l_b: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (h, w, c) = l_x.shape().dims3()?;
        let (kh, kw, kc, o) = l_k.shape().dims4()?;
        let bias_len = l_b.shape().dims1()?;
        if (kh, kw, kc) != (3, 3, c) || bias_len != o {
            candle_core::bail!(
                "conv3x3: input [{h}, {w}, {c}] needs kernel [3, 3, {c}, O] and bias [O], got kernel {:?} and bias [{bias_len}]",
                l_k.shape().dims()
            );
        }
        let x = contiguous_f32(s_x, l_x, "conv3x3 input")?;
        let kernel = contiguous_f32(s_k, l_k, "conv3x3 kernel")?;
        let bias = contiguous_f32(s_b, l_b, "conv3x3 bias")?;
        let mut out = vec![0f32; h * w * o];
        conv3x3_bias_relu_hwc(x, (h, w, c), kernel, bias, &mut out);
        Ok((CpuStorage::F32(out), Shape::from((h, w, o))))
    }
}

/// The kernel behind [`conv3x3_bias_relu`] on plain slices (row-major HWC / HWIO).
pub fn conv3x3_bias_relu_hwc(
    x: &[f32],
    dims: (usize, usize, usize),
    kernel: &[f32],
    bias: &[f32],
    out: &mut [f32],
) {
    conv_in_bands(x, dims, kernel, bias, out, BAND_FLOATS)
}

fn conv_in_bands(
    x: &[f32],
    (h, w, c): (usize, usize, usize),
    kernel: &[f32],
    bias: &[f32],
    out: &mut [f32],
    band_limit: usize,
) {
    let o = bias.len();
    assert_eq!(x.len(), h * w * c, "input size");
    assert_eq!(kernel.len(), 9 * c * o, "kernel size");
    assert_eq!(out.len(), h * w * o, "output size");
    if out.is_empty() {
        return;
    }
    let rows_per_band = (band_limit / (w * 9 * c)).clamp(1, h);
    let bands = h.div_ceil(rows_per_band);
    let threads = rayon::current_num_threads();
    let band_floats = rows_per_band * w * o;
    // Many bands: one band per task, single-threaded gemms. Few bands (small, deep layers):
    // bands in sequence, each gemm split across the threads.
    if bands >= 2 * threads {
        out.par_chunks_mut(band_floats)
            .enumerate()
            .for_each(|(band, dst)| {
                conv_band(x, (h, w, c), kernel, bias, band * rows_per_band, dst, None)
            });
    } else {
        for (band, dst) in out.chunks_mut(band_floats).enumerate() {
            conv_band(
                x,
                (h, w, c),
                kernel,
                bias,
                band * rows_per_band,
                dst,
                Some(threads),
            );
        }
    }
}

/// Output rows `y0 .. y0 + dst.len() / (w·O)`: im2col of those rows, then one gemm.
fn conv_band(
    x: &[f32],
    (h, w, c): (usize, usize, usize),
    kernel: &[f32],
    bias: &[f32],
    y0: usize,
    dst: &mut [f32],
    threads: Option<usize>,
) {
    let o = bias.len();
    let rows = dst.len() / (w * o);
    let k = 9 * c;
    // Reuse this thread's column buffer (taken, not borrowed: rayon may run another band on
    // this thread while a gemm waits, which then simply allocates its own).
    let mut col = COLUMNS.with(|cell| cell.take());
    col.resize(rows * w * k, 0.0);
    for r in 0..rows {
        let y = y0 + r;
        for xo in 0..w {
            let patch = &mut col[(r * w + xo) * k..(r * w + xo + 1) * k];
            for (dy, taps) in patch.chunks_exact_mut(3 * c).enumerate() {
                // 'same' padding: taps outside the image are zero.
                let Some(sy) = (y + dy).checked_sub(1).filter(|&sy| sy < h) else {
                    taps.fill(0.0);
                    continue;
                };
                let row = &x[sy * w * c..(sy + 1) * w * c];
                if xo >= 1 && xo + 1 < w {
                    // The three horizontal taps are adjacent in the source row too.
                    taps.copy_from_slice(&row[(xo - 1) * c..(xo + 2) * c]);
                    continue;
                }
                for (dx, tap) in taps.chunks_exact_mut(c).enumerate() {
                    match (xo + dx).checked_sub(1).filter(|&sx| sx < w) {
                        Some(sx) => tap.copy_from_slice(&row[sx * c..(sx + 1) * c]),
                        None => tap.fill(0.0),
                    }
                }
            }
        }
    }
    for pixel in dst.chunks_exact_mut(o) {
        pixel.copy_from_slice(bias);
    }
    let m = rows * w;
    let parallelism = match threads {
        Some(n) if n > 1 => gemm::Parallelism::Rayon(n),
        _ => gemm::Parallelism::None,
    };
    // SAFETY: dst is [m, o], col is [m, k] and kernel is [k, o], all row-major with the strides
    // given (column stride 1, row stride = width); the asserts in `conv3x3_bias_relu_hwc` and the
    // sizes computed above guarantee every addressed element is in bounds, and `dst` is a
    // unique borrow. dst := 1·dst + 1·col·kernel (read_dst: the preloaded bias).
    unsafe {
        gemm::gemm(
            m,
            o,
            k,
            dst.as_mut_ptr(),
            1,
            o as isize,
            true,
            col.as_ptr(),
            1,
            k as isize,
            kernel.as_ptr(),
            1,
            o as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
    COLUMNS.with(|cell| cell.replace(col));
    for v in dst.iter_mut() {
        *v = v.max(0.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    /// Direct (definition) convolution: sum over taps inside the image.
    fn reference(x: &[f32], (h, w, c): (usize, usize, usize), k: &[f32], b: &[f32]) -> Vec<f32> {
        let o = b.len();
        let mut out = vec![0f32; h * w * o];
        for y in 0..h {
            for xo in 0..w {
                for oc in 0..o {
                    let mut acc = b[oc] as f64;
                    for dy in 0..3 {
                        for dx in 0..3 {
                            let (sy, sx) =
                                (y as isize + dy as isize - 1, xo as isize + dx as isize - 1);
                            if sy < 0 || sx < 0 || sy >= h as isize || sx >= w as isize {
                                continue;
                            }
                            for ic in 0..c {
                                let xv = x[((sy as usize) * w + sx as usize) * c + ic] as f64;
                                acc += xv * k[((dy * 3 + dx) * c + ic) * o + oc] as f64;
                            }
                        }
                    }
                    out[(y * w + xo) * o + oc] = acc.max(0.0) as f32;
                }
            }
        }
        out
    }

    fn ramp(n: usize, scale: f32) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 7919 % 97) as f32 / 48.0 - 1.0) * scale)
            .collect()
    }

    #[test]
    fn matches_direct_convolution_on_odd_sizes() {
        for &(h, w, c, o) in &[(5usize, 7usize, 3usize, 4usize), (9, 4, 6, 5), (1, 1, 2, 3)] {
            let x = ramp(h * w * c, 1.0);
            let k = ramp(9 * c * o, 0.5);
            let b = ramp(o, 0.1);
            let want = reference(&x, (h, w, c), &k, &b);
            // One band, one row per band (parallel bands), and uneven bands of two rows.
            for band_limit in [BAND_FLOATS, 9 * c * w, 2 * 9 * c * w] {
                let mut out = vec![0f32; h * w * o];
                conv_in_bands(&x, (h, w, c), &k, &b, &mut out, band_limit);
                for (i, (a, e)) in out.iter().zip(&want).enumerate() {
                    assert!(
                        (a - e).abs() <= 1e-5,
                        "{h}x{w}x{c}->{o} band limit {band_limit} at {i}: {a} vs {e}"
                    );
                }
            }
        }
    }

    #[test]
    fn custom_op_agrees_with_candle_conv2d() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let (h, w, c, o) = (6, 11, 4, 3);
        let x = Tensor::from_vec(ramp(h * w * c, 1.0), (h, w, c), &dev)?;
        let k = Tensor::from_vec(ramp(9 * c * o, 0.5), (3, 3, c, o), &dev)?;
        let b = Tensor::from_vec(ramp(o, 0.1), o, &dev)?;
        let ours = conv3x3_bias_relu(&x, &k, &b)?;
        // candle: NCHW input, OIHW kernel.
        let nchw = x.permute((2, 0, 1))?.unsqueeze(0)?.contiguous()?;
        let oihw = k.permute((3, 2, 0, 1))?.contiguous()?;
        let theirs = nchw
            .conv2d(&oihw, 1, 1, 1, 1)?
            .broadcast_add(&b.reshape((1, o, 1, 1))?)?
            .relu()?
            .squeeze(0)?
            .permute((1, 2, 0))?;
        let diff = (ours - theirs)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff <= 1e-5, "max abs diff {diff}");
        Ok(())
    }

    #[test]
    fn rejects_mismatched_kernel() {
        let dev = Device::Cpu;
        let x = Tensor::zeros((4, 4, 3), candle_core::DType::F32, &dev).unwrap();
        let k = Tensor::zeros((3, 3, 2, 5), candle_core::DType::F32, &dev).unwrap();
        let b = Tensor::zeros(5, candle_core::DType::F32, &dev).unwrap();
        let err = conv3x3_bias_relu(&x, &k, &b).unwrap_err().to_string();
        assert!(err.contains("kernel"), "{err}");
    }
}
