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

use crate::nn::conv3x3::Conv3x3;
use crate::nn::kernels::conv3x3::TapWeights;
use crate::nn::kernels::cpu::with_cpu_f32;
use crate::nn::kernels::im2col::{conv2d_im2col, Geometry};
use crate::nn::path::use_fast_kernel;
use crate::nn::weights::{ConvWeight, Fast};

/// Output pixels (per sample) from which 3×3 stride-1 convs use the shifted GEMMs. Measured at
/// SD shapes, batch 2 (GFLOP/s, im2col vs shifted): 64² 320→320 279 vs 317, 32² 640→640 298 vs
/// 345, 128² 96→96 107 vs 262; but 16² 1280→1280 323 vs 300 and 8² 2560→1280 281 vs 229, where
/// the two padding columns per row are a larger share of the work.
pub(crate) const SHIFTED_MIN_PIXELS: usize = 32 * 32;

/// `nn.Conv2d` (square kernel, same stride and padding on both axes, no dilation or groups).
#[derive(Debug, Clone)]
pub struct Conv2d {
    /// `[out, k·k·in]`, OHWI, in the precision the model was built with.
    weight: ConvWeight,
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
    pub fn load(
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
    pub fn new(
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
        let is_f32 = weight.dtype() == DType::F32;
        let weight = ConvWeight::new(weight, kernel * kernel, in_channels)?;
        let shifted = if (kernel, stride, padding) == (3, 1, 1) && is_f32 {
            let bias = match &bias {
                Some(b) => b.to_dtype(DType::F32)?.to_vec1::<f32>()?,
                None => vec![0.0; out_channels],
            };
            Some(Conv3x3::from_weight(weight.clone(), bias)?)
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

    /// The weight as `[out, in, k, k]` in `dtype`, for candle's conv.
    fn oihw(&self, dtype: DType) -> Result<Tensor> {
        let k = self.kernel;
        self.weight
            .tensor(dtype)?
            .reshape((self.out_channels, k, k, self.in_channels))?
            .permute((0, 3, 1, 2))
    }

    /// Convolution plus `channel_offset` `(batch, out_channels)` added to every pixel of the
    /// matching sample and channel.
    pub fn forward_with_offset(
        &self,
        x: &Tensor,
        channel_offset: Option<&Tensor>,
    ) -> Result<Tensor> {
        self.forward_fused(x, channel_offset, None)
    }

    /// Convolution plus `channel_offset` (see [`Self::forward_with_offset`]) plus `residual`,
    /// a tensor of the output's shape.
    pub fn forward_fused(
        &self,
        x: &Tensor,
        channel_offset: Option<&Tensor>,
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        let mut tensors = vec![x];
        tensors.extend(residual);
        let Some(fast) = self.weight.fast().filter(|_| use_fast_kernel(&tensors)) else {
            return self.forward_candle(x, channel_offset, residual);
        };
        let (_, c, h, w) = x.dims4()?;
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
        let geometry = Geometry { h, w, k, s, p, ow };
        let x = x.contiguous()?;
        let run = |weights: TapWeights| {
            conv2d_im2col(&x, &weights, self.bias.as_ref(), channel_offset, residual, geometry)
        };
        match fast {
            Fast::F32(w) => with_cpu_f32(w, "conv2d weight", |w| run(TapWeights::F32(w))),
            Fast::Bf16(rows) => run(TapWeights::Bf16(rows)),
        }
    }

    fn forward_candle(
        &self,
        x: &Tensor,
        channel_offset: Option<&Tensor>,
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        let y = x.conv2d(&self.oihw(x.dtype())?, self.padding, self.stride, 1, 1)?;
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

    /// bf16 weights: every conv path (im2col, pointwise, shifted 3×3, odd channel counts)
    /// equals the f32 conv of the bf16-rounded weight and input.
    #[test]
    fn bf16_weights_match_the_rounded_conv() {
        use crate::nn::path::{with_kernel_path, KernelPath};
        use crate::nn::precision::{with_weight_precision, WeightPrecision};
        let rounded = |t: &Tensor| crate::nn::tensor_diff::bf16_rounded(t).unwrap();
        let dev = Device::Cpu;
        for (c_in, c_out, k, s, p, h, w) in [
            (3, 5, 3, 1, 1, 7, 6),
            (4, 8, 3, 2, 1, 9, 8),
            (6, 70, 1, 1, 0, 5, 5),
            (5, 6, 3, 1, 1, 40, 30),
            (7, 9, 3, 1, 1, 33, 34),
        ] {
            let weight = Tensor::randn(0f32, 0.3, (c_out, c_in, k, k), &dev).unwrap();
            let bias = Tensor::randn(0f32, 1.0, c_out, &dev).unwrap();
            let x = Tensor::randn(0f32, 1.0, (2, c_in, h, w), &dev).unwrap();
            let offset = Tensor::randn(0f32, 1.0, (2, c_out), &dev).unwrap();
            let conv = with_weight_precision(WeightPrecision::Bf16, || {
                Conv2d::new(&weight, Some(bias.clone()), s, p).unwrap()
            });
            let reference = Conv2d::new(&rounded(&weight), Some(bias), s, p).unwrap();
            let want = reference
                .forward_with_offset(&rounded(&x), Some(&offset))
                .unwrap();
            let got = conv.forward_with_offset(&x, Some(&offset)).unwrap();
            let err = max_abs_diff(&got, &want).unwrap();
            assert!(err < 1e-4, "bf16 conv {c_in}->{c_out} k{k} s{s} {h}x{w}: {err}");
            let portable = with_kernel_path(KernelPath::Portable, || {
                conv.forward_with_offset(&rounded(&x), Some(&offset)).unwrap()
            });
            assert!(max_abs_diff(&portable, &want).unwrap() < 1e-4);
        }
    }
}
