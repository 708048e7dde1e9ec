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
//! operand of an im2col product in tap-major order ([`crate::nn::conv2d`], which runs 3×3 convs on
//! small images that way and large ones here).

use candle_core::{DType, Result, Tensor};

use crate::nn::kernels::conv3x3::{PhaseStride2Conv, ShiftedGemmConv, Upsample2xConv};
use crate::nn::path::use_fast_kernel;
use crate::nn::weights::{ConvWeight, Fast};

/// The f32 weight operand of a conv op and its bf16 pairs: the op reads one of the two (an
/// empty tensor stands in for the f32 operand of a bf16 op).
fn op_weights(
    weight: Fast<'_, crate::nn::kernels::gemm_bf16::WeightRows>,
    device: &candle_core::Device,
) -> Result<(Tensor, Option<std::sync::Arc<crate::nn::kernels::gemm_bf16::WeightRows>>)> {
    Ok(match weight {
        Fast::F32(w) => (w.clone(), None),
        Fast::Bf16(rows) => (Tensor::zeros(0, DType::F32, device)?, Some(rows.clone())),
    })
}

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
    /// `[Cout, 9·Cin]`, OHWI.
    weight: ConvWeight,
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
        Self::from_weight(ConvWeight::new(weight, 9, k_len / 9)?, bias)
    }

    /// From a stored OHWI weight (shared with a [`crate::nn::conv2d::Conv2d`]).
    pub(crate) fn from_weight(weight: ConvWeight, bias: Vec<f32>) -> Result<Self> {
        if weight.rows() != bias.len() {
            candle_core::bail!("3×3 conv: {} rows with {} biases", weight.rows(), bias.len());
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
        (self.weight.rows(), self.weight.channels())
    }

    /// The weight as `[Cout, Cin, 3, 3]` in `dtype`, for candle's conv on the portable path.
    fn oihw(&self, dtype: DType) -> Result<Tensor> {
        let (c_out, c_in) = self.channels();
        self.weight
            .tensor(dtype)?
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
        let mut tensors = vec![x];
        tensors.extend(residual);
        tensors.extend(channel_offset);
        let fast = self.weight.fast().filter(|_| use_fast_kernel(&tensors));
        let Some(fast) = fast else {
            let bias = Tensor::from_slice(&self.bias, c_out, x.device())?.to_dtype(x.dtype())?;
            let mut out =
                add_channel_bias(x.conv2d(&self.oihw(x.dtype())?, 1, 1, 1, 1)?, Some(&bias))?;
            if let Some(o) = channel_offset {
                out = out.broadcast_add(&o.unsqueeze(2)?.unsqueeze(3)?)?;
            }
            return match residual {
                Some(r) => out + r,
                None => Ok(out),
            };
        };
        let (weight, bf16) = op_weights(fast, x.device())?;
        let residual = match residual {
            Some(r) => r.contiguous()?,
            None => Tensor::zeros(0, DType::F32, x.device())?,
        };
        let offset = match channel_offset {
            Some(o) => Some(o.flatten_all()?.to_vec1::<f32>()?),
            None => None,
        };
        x.contiguous()?.apply_op3_no_bwd(
            &weight,
            &residual,
            &ShiftedGemmConv {
                bias: self.bias.clone(),
                offset,
                bf16,
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
        let Some(fast) = conv.weight.fast().filter(|_| use_fast_kernel(&[x])) else {
            let bias = Tensor::from_slice(&conv.bias, c_out, x.device())?.to_dtype(x.dtype())?;
            let padded = x.pad_with_zeros(3, 0, 1)?.pad_with_zeros(2, 0, 1)?;
            return add_channel_bias(
                padded.conv2d(&conv.oihw(x.dtype())?, 0, 2, 1, 1)?,
                Some(&bias),
            );
        };
        let (weight, bf16) = op_weights(fast, x.device())?;
        x.contiguous()?.apply_op2_no_bwd(
            &weight,
            &PhaseStride2Conv {
                bias: conv.bias.clone(),
                bf16,
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
    /// `[4 phases · 4 taps · Cout, Cin]`: phase `2·py + px`, tap `2·a + b` reads the padded
    /// low-resolution pixel `(y + py + a, x + px + b)`; in the conv's precision.
    phase_taps: ConvWeight,
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
        let w: Vec<f32> = conv.weight.values()?;
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
        let folded = Tensor::from_vec(folded, (16 * c_out, c_in), &candle_core::Device::Cpu)?;
        Ok(Self {
            conv: conv.clone(),
            phase_taps: conv.weight.same_precision(folded, 1, c_in)?,
        })
    }

    /// `conv3x3(upsample_nearest2d(x, 2H, 2W))`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (_, x_in, h, w) = x.dims4()?;
        let Some(fast) = self.phase_taps.fast().filter(|_| use_fast_kernel(&[x])) else {
            return self.conv.forward(&x.upsample_nearest2d(2 * h, 2 * w)?);
        };
        let (_, c_in) = self.conv.channels();
        if x_in != c_in {
            candle_core::bail!("upsample conv: input has {x_in} channels, weights expect {c_in}");
        }
        let (weight, bf16) = op_weights(fast, x.device())?;
        x.contiguous()?.apply_op2_no_bwd(
            &weight,
            &Upsample2xConv {
                bias: self.conv.bias.clone(),
                bf16,
            },
        )
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

    /// bf16 weights: the plain, fused (offset + residual), stride-2 and upsampling convs equal
    /// the f32 ones on bf16-rounded weights and inputs (the upsampling conv folds its taps in
    /// f32 before rounding, so it is compared with a looser bound).
    #[test]
    fn bf16_weights_match_the_rounded_convs() {
        use crate::nn::precision::{with_weight_precision, WeightPrecision};
        let rounded = |t: &Tensor| crate::nn::tensor_diff::bf16_rounded(t).unwrap();
        let bf16 = |f: &dyn Fn() -> Tensor| with_weight_precision(WeightPrecision::Bf16, f);
        for (batch, c_in, c_out, h, w) in [(1, 3, 8, 5, 7), (2, 17, 70, 9, 12), (1, 4, 4, 2, 3)] {
            let x = random((batch, c_in, h, w), 1.0);
            let weight = random((c_out, c_in, 3, 3), 0.2);
            let bias = Tensor::randn(0f32, 0.5, c_out, &Device::Cpu).unwrap();
            let (rx, rw) = (rounded(&x), rounded(&weight));

            let residual = random((batch, c_out, h, w), 1.0);
            let offset = Tensor::randn(0f32, 1.0, (batch, c_out), &Device::Cpu).unwrap();
            let want = Conv3x3::new(&rw, Some(&bias))
                .unwrap()
                .forward_fused(&rx, Some(&offset), Some(&residual))
                .unwrap();
            let got = bf16(&|| {
                Conv3x3::new(&weight, Some(&bias))
                    .unwrap()
                    .forward_fused(&x, Some(&offset), Some(&residual))
                    .unwrap()
            });
            assert!(max_diff(&got, &want) < 1e-4, "{c_in}->{c_out} {h}x{w}");

            let want = DownsampleConv3x3::new(&rw, Some(&bias))
                .unwrap()
                .forward(&rx)
                .unwrap();
            let got = bf16(&|| {
                DownsampleConv3x3::new(&weight, Some(&bias))
                    .unwrap()
                    .forward(&x)
                    .unwrap()
            });
            assert!(max_diff(&got, &want) < 1e-4, "downsample {c_in}->{c_out}");

            let want = reference(&x.upsample_nearest2d(2 * h, 2 * w).unwrap(), &weight, &bias);
            let got = bf16(&|| {
                Upsample2xConv3x3::new(&weight, &bias)
                    .unwrap()
                    .forward(&x)
                    .unwrap()
            });
            let scale = want.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(max_diff(&got, &want) < 0.02 * scale, "upsample {c_in}->{c_out}");
        }
    }
}
