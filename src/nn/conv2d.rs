//! 2-D convolution (`nn.Conv2d`) for the UNet, ControlNet and VAE. 3×3 stride-1 convs on
//! images of at least [`SHIFTED_MIN_PIXELS`] run as the shifted GEMMs of
//! [`crate::nn::conv3x3`]; every other conv as im2col + one large matrix product per tile of output
//! pixels, written straight into the NCHW output with the bias (and optionally a per-sample
//! channel offset, the resnet's time embedding) pre-loaded, so no separate add passes are needed.
//! Weights are kept once, as `[Cout, k, k, Cin]` (OHWI), the layout both kernels read.
//!
//! candle's CPU conv converts to NHWC, builds im2col element by element and scatters the result
//! back; here the im2col rows are contiguous copies of input rows and the output needs no
//! reordering. Non-f32 or non-CPU tensors fall back to candle's conv.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;
use gemm::{gemm, Parallelism};
use rayon::prelude::*;

use crate::alloc::uninit_f32;
use crate::nn::conv3x3::Conv3x3;
use crate::nn::cpu::{all_cpu_f32, with_cpu_f32};

/// Output pixels (per sample) from which 3×3 stride-1 convs use the shifted GEMMs. Measured at
/// SD shapes, batch 2 (GFLOP/s, im2col vs shifted): 64² 320→320 279 vs 317, 32² 640→640 298 vs
/// 345, 128² 96→96 107 vs 262; but 16² 1280→1280 323 vs 300 and 8² 2560→1280 281 vs 229, where
/// the two padding columns per row are a larger share of the work.
pub(crate) const SHIFTED_MIN_PIXELS: usize = 32 * 32;

/// im2col tile size in floats (16 MiB): large enough for efficient matmuls, small enough to keep
/// the transient memory of a 3×3 conv over 960 channels bounded.
const COL_TILE_FLOATS: usize = 1 << 22;

/// `nn.Conv2d` (square kernel, same stride and padding on both axes, no dilation or groups).
#[derive(Debug, Clone)]
pub(crate) struct Conv2d {
    /// `[out, k·k·in]`, OHWI.
    weight: Tensor,
    bias: Option<Tensor>,
    in_channels: usize,
    out_channels: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    /// The same weights as a 3×3 shifted-GEMM conv, when this is one.
    shifted: Option<Conv3x3>,
}

impl Conv2d {
    pub(crate) fn load(
        vb: VarBuilder,
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> Result<Self> {
        let weight = vb.get((out_channels, in_channels, kernel, kernel), "weight")?;
        let bias = vb.get(out_channels, "bias")?;
        Self::new(&weight, Some(bias), stride, padding)
    }

    /// From a PyTorch `[out, in, k, k]` weight.
    pub(crate) fn new(
        weight: &Tensor,
        bias: Option<Tensor>,
        stride: usize,
        padding: usize,
    ) -> Result<Self> {
        let (out_channels, in_channels, kernel, kw) = weight.dims4()?;
        if kw != kernel || stride == 0 {
            candle_core::bail!("conv2d: weight {:?}, stride {stride}", weight.dims());
        }
        let weight = weight
            .permute((0, 2, 3, 1))?
            .contiguous()?
            .reshape((out_channels, kernel * kernel * in_channels))?;
        let shifted = if (kernel, stride, padding) == (3, 1, 1) && weight.dtype() == DType::F32 {
            let bias = match &bias {
                Some(b) => b.to_dtype(DType::F32)?.to_vec1::<f32>()?,
                None => vec![0.0; out_channels],
            };
            Some(Conv3x3::from_ohwi(weight.clone(), bias)?)
        } else {
            None
        };
        Ok(Self {
            weight,
            bias,
            in_channels,
            out_channels,
            kernel,
            stride,
            padding,
            shifted,
        })
    }

    /// This conv as a shifted-GEMM 3×3 conv (same weights), if it is a 3×3 stride-1 one.
    pub(crate) fn as_conv3x3(&self) -> Option<&Conv3x3> {
        self.shifted.as_ref()
    }

    /// The weight as `[out, in, k, k]`, for candle's conv.
    fn oihw(&self) -> Result<Tensor> {
        let k = self.kernel;
        self.weight
            .reshape((self.out_channels, k, k, self.in_channels))?
            .permute((0, 3, 1, 2))
    }

    /// Convolution plus `channel_offset` `(batch, out_channels)` added to every pixel of the
    /// matching sample and channel.
    pub(crate) fn forward_with_offset(
        &self,
        x: &Tensor,
        channel_offset: Option<&Tensor>,
    ) -> Result<Tensor> {
        self.forward_fused(x, channel_offset, None)
    }

    /// Convolution plus `channel_offset` (see [`Self::forward_with_offset`]) plus `residual`,
    /// a tensor of the output's shape.
    pub(crate) fn forward_fused(
        &self,
        x: &Tensor,
        channel_offset: Option<&Tensor>,
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        if !all_cpu_f32(&[x, &self.weight]) || residual.is_some_and(|r| !all_cpu_f32(&[r])) {
            return self.forward_candle(x, channel_offset, residual);
        }
        let (b, c, h, w) = x.dims4()?;
        if c != self.in_channels {
            candle_core::bail!(
                "conv2d: input has {c} channels, expected {}",
                self.in_channels
            );
        }
        let (k, s, p) = (self.kernel, self.stride, self.padding);
        if h + 2 * p < k || w + 2 * p < k {
            candle_core::bail!("conv2d: {h}x{w} input smaller than the {k}x{k} kernel");
        }
        let (oh, ow) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
        let hw = oh * ow;
        if let Some(shifted) = &self.shifted {
            if hw >= SHIFTED_MIN_PIXELS {
                return shifted.forward_fused(x, channel_offset, residual);
            }
        }
        let out_shape = (b, self.out_channels, oh, ow);
        let mut out = match residual {
            Some(r) if r.dims() == [b, self.out_channels, oh, ow] => {
                r.flatten_all()?.to_vec1::<f32>()?
            }
            Some(r) => {
                candle_core::bail!("conv2d: residual {:?}, output {:?}", r.dims(), out_shape)
            }
            // Every element is written by the bias pre-load below: no zero fill needed.
            None => Vec::with_capacity(b * self.out_channels * hw),
        };
        let x = x.contiguous()?;
        let offset = match channel_offset {
            Some(t) => Some(t.to_dtype(DType::F32)?.contiguous()?.to_vec2::<f32>()?),
            None => None,
        };
        let bias = match &self.bias {
            Some(t) => Some(t.to_dtype(DType::F32)?.to_vec1::<f32>()?),
            None => None,
        };
        // Pre-load bias + offset (+ residual) so the matmul accumulates onto it.
        let plane_value = |i: usize| {
            let (bi, co) = (i / self.out_channels, i % self.out_channels);
            bias.as_ref().map_or(0.0, |bv| bv[co]) + offset.as_ref().map_or(0.0, |o| o[bi][co])
        };
        if residual.is_some() {
            out.par_chunks_mut(hw).enumerate().for_each(|(i, plane)| {
                let v = plane_value(i);
                plane.iter_mut().for_each(|x| *x += v);
            });
        } else if hw > 0 {
            let len = b * self.out_channels * hw;
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
        let geometry = Geometry { h, w, k, s, p, ow };
        with_cpu_f32(&x, "conv2d input", |input| {
            with_cpu_f32(&self.weight, "conv2d weight", |weight| {
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
                    let dst =
                        &mut out[bi * self.out_channels * hw..(bi + 1) * self.out_channels * hw];
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
                                self.out_channels,
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
            })
        })?;
        Tensor::from_vec(out, out_shape, x.device())
    }

    fn forward_candle(
        &self,
        x: &Tensor,
        channel_offset: Option<&Tensor>,
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        let y = x.conv2d(&self.oihw()?, self.padding, self.stride, 1, 1)?;
        let y = match &self.bias {
            Some(bias) => y.broadcast_add(&bias.reshape((1, self.out_channels, 1, 1))?)?,
            None => y,
        };
        let y = match channel_offset {
            Some(o) => y.broadcast_add(&o.unsqueeze(2)?.unsqueeze(3)?)?,
            None => y,
        };
        match residual {
            Some(r) => y + r,
            None => Ok(y),
        }
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_with_offset(x, None)
    }
}

/// Input/output geometry of one convolution.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    h: usize,
    w: usize,
    k: usize,
    s: usize,
    p: usize,
    ow: usize,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::tensor_diff::max_abs_diff;
    use candle_core::Device;

    fn check(c_in: usize, c_out: usize, k: usize, s: usize, p: usize, h: usize, w: usize) {
        let dev = Device::Cpu;
        let weight = Tensor::randn(0f32, 0.3, (c_out, c_in, k, k), &dev).unwrap();
        let bias = Tensor::randn(0f32, 1.0, c_out, &dev).unwrap();
        let x = Tensor::randn(0f32, 1.0, (2, c_in, h, w), &dev).unwrap();
        let offset = Tensor::randn(0f32, 1.0, (2, c_out), &dev).unwrap();
        let conv = Conv2d::new(&weight, Some(bias.clone()), s, p).unwrap();
        let expected = x
            .conv2d(&weight, p, s, 1, 1)
            .unwrap()
            .broadcast_add(&bias.reshape((1, c_out, 1, 1)).unwrap())
            .unwrap()
            .broadcast_add(&offset.unsqueeze(2).unwrap().unsqueeze(3).unwrap())
            .unwrap();
        let got = conv.forward_with_offset(&x, Some(&offset)).unwrap();
        let residual = Tensor::randn(0f32, 1.0, got.dims(), &dev).unwrap();
        let fused = conv
            .forward_fused(&x, Some(&offset), Some(&residual))
            .unwrap();
        let err_fused = max_abs_diff(&fused, &(&expected + &residual).unwrap()).unwrap();
        assert!(err_fused < 1e-4, "fused residual: {err_fused}");
        let err = max_abs_diff(&got, &expected).unwrap();
        assert!(
            err < 1e-4,
            "conv {c_in}->{c_out} k{k} s{s} p{p} {h}x{w}: {err}"
        );
    }

    #[test]
    fn matches_candle_conv() {
        check(3, 5, 3, 1, 1, 7, 6);
        check(4, 8, 3, 2, 1, 9, 8);
        check(4, 8, 3, 2, 0, 9, 9);
        check(6, 4, 1, 1, 0, 5, 5);
        check(2, 3, 3, 1, 0, 4, 6);
        check(3, 2, 5, 1, 2, 6, 3);
        // Large enough for the shifted-GEMM path (with offset and residual).
        check(5, 6, 3, 1, 1, 40, 30);
    }
}
