//! `nn.Linear` as a single gemm whose output buffer is pre-loaded with the bias (and, where the
//! model adds a residual right after, with the residual too), so neither costs an extra pass.
//! It also reads and writes channels-first `(b, c, h·w)` tensors through gemm strides, which
//! removes the token/channel transposes around spatial transformers.

use candle_core::{Module, Result, Tensor};

use crate::nn::kernels::gemm_bf16::WeightPanels;
use crate::nn::kernels::linear::{add_transposed, linear_bf16, linear_gemm, InputLayout, Strides};
use crate::nn::path::use_fast_kernel;
use crate::nn::weights::{Fast, MatrixWeight};

#[derive(Debug, Clone)]
pub struct Linear {
    weight: MatrixWeight,
    bias: Option<Tensor>,
    in_dim: usize,
    out_dim: usize,
}

impl Linear {
    /// From an `(out, in)` weight, kept in the precision chosen by
    /// [`crate::nn::precision::with_weight_precision`] (the bias stays as given).
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Result<Self> {
        let (out_dim, in_dim) = weight.dims2()?;
        Ok(Self {
            weight: MatrixWeight::new(weight)?,
            bias,
            in_dim,
            out_dim,
        })
    }

    /// Bytes the weight matrix takes in memory.
    pub fn weight_bytes(&self) -> usize {
        self.weight.bytes()
    }

    /// The bf16 panels, when this layer has them and `tensors` take the CPU kernel.
    fn panels_for(&self, tensors: &[&Tensor]) -> Option<&WeightPanels> {
        match self.weight.fast() {
            Some(Fast::Bf16(p)) if use_fast_kernel(tensors) => Some(p),
            _ => None,
        }
    }

    /// The f32 weight, when `tensors` take the f32 CPU kernel.
    fn f32_kernel(&self, tensors: &[&Tensor]) -> Option<&Tensor> {
        match self.weight.fast() {
            Some(Fast::F32(w)) if use_fast_kernel(tensors) => Some(w),
            _ => None,
        }
    }

    /// The portable path: candle's matmul in `x`'s dtype.
    fn forward_portable(&self, x: &Tensor) -> Result<Tensor> {
        let bias = match &self.bias {
            Some(b) => Some(b.to_dtype(x.dtype())?),
            None => None,
        };
        candle_nn::Linear::new(self.weight.tensor(x.dtype())?, bias).forward(x)
    }

    /// `x @ Wᵀ + b + residual` for `x` `(..., in)`; `residual` has the output's shape.
    pub fn forward_add(&self, x: &Tensor, residual: Option<&Tensor>) -> Result<Tensor> {
        let mut out_dims = x.dims().to_vec();
        let Some(last) = out_dims.last_mut() else {
            candle_core::bail!("linear: scalar input");
        };
        if *last != self.in_dim {
            candle_core::bail!(
                "linear: input has {} features, expected {}",
                *last,
                self.in_dim
            );
        }
        *last = self.out_dim;
        if let Some(r) = residual {
            if r.dims() != out_dims.as_slice() {
                candle_core::bail!("linear: residual {:?} but output {:?}", r.dims(), out_dims);
            }
        }
        let rows = x.elem_count() / self.in_dim;
        let mut tensors = vec![x];
        tensors.extend(residual);
        if let Some(panels) = self.panels_for(&tensors) {
            let x = x.contiguous()?;
            let out = linear_bf16(panels, self.bias.as_ref(), &x, 1, rows, InputLayout::Tokens, residual)?;
            return Tensor::from_vec(out, out_dims, x.device());
        }
        let Some(weight) = self.f32_kernel(&tensors) else {
            let y = self.forward_portable(x)?;
            return match residual {
                Some(r) => y + r,
                None => Ok(y),
            };
        };
        let strides = Strides {
            in_row: self.in_dim as isize,
            in_col: 1,
            out_row: self.out_dim as isize,
            out_col: 1,
        };
        let out = linear_gemm(
            weight,
            self.bias.as_ref(),
            &x.contiguous()?,
            1,
            rows,
            strides,
            residual,
            false,
        )?;
        Tensor::from_vec(out, out_dims, x.device())
    }

    /// Channels-first input `(b, in, h, w)` → tokens `(b, h·w, out)`.
    pub fn forward_from_channels_first(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        if c != self.in_dim {
            candle_core::bail!("linear: input has {c} channels, expected {}", self.in_dim);
        }
        if let Some(panels) = self.panels_for(&[x]) {
            let x = x.contiguous()?;
            let out = linear_bf16(panels, self.bias.as_ref(), &x, b, h * w, InputLayout::ChannelsFirst, None)?;
            return Tensor::from_vec(out, (b, h * w, self.out_dim), x.device());
        }
        let Some(weight) = self.f32_kernel(&[x]) else {
            let tokens = x.reshape((b, c, h * w))?.transpose(1, 2)?.contiguous()?;
            return self.forward_add(&tokens, None);
        };
        let strides = Strides {
            in_row: 1,
            in_col: (h * w) as isize,
            out_row: self.out_dim as isize,
            out_col: 1,
        };
        let out = linear_gemm(
            weight,
            self.bias.as_ref(),
            &x.contiguous()?,
            b,
            h * w,
            strides,
            None,
            false,
        )?;
        Tensor::from_vec(out, (b, h * w, self.out_dim), x.device())
    }

    /// Tokens `(b, h·w, in)` → channels-first `(b, out, h, w)` plus `residual` `(b, out, h, w)`.
    pub fn forward_to_channels_first_add(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        let (b, out, h, w) = residual.dims4()?;
        let (xb, n, c) = x.dims3()?;
        if (xb, n, c, out) != (b, h * w, self.in_dim, self.out_dim) {
            candle_core::bail!(
                "linear: tokens {:?} do not fit the residual {:?}",
                x.dims(),
                residual.dims()
            );
        }
        if let Some(panels) = self.panels_for(&[x, residual]) {
            // The product in token layout, then transposed onto the residual.
            let x = x.contiguous()?;
            let tokens = linear_bf16(panels, self.bias.as_ref(), &x, b, h * w, InputLayout::Tokens, None)?;
            let mut y = residual.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
            add_transposed(&tokens, &mut y, h * w, out);
            return Tensor::from_vec(y, (b, out, h, w), x.device());
        }
        let Some(weight) = self.f32_kernel(&[x, residual]) else {
            let y = self
                .forward_add(x, None)?
                .transpose(1, 2)?
                .reshape((b, out, h, w))?;
            return y + residual;
        };
        let strides = Strides {
            in_row: self.in_dim as isize,
            in_col: 1,
            out_row: 1,
            out_col: (h * w) as isize,
        };
        let y = linear_gemm(
            weight,
            self.bias.as_ref(),
            &x.contiguous()?,
            b,
            h * w,
            strides,
            Some(residual),
            true,
        )?;
        Tensor::from_vec(y, (b, out, h, w), x.device())
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_add(x, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        crate::nn::tensor_diff::max_abs_diff(a, b).unwrap()
    }

    #[test]
    fn every_layout_matches_candle() {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 0.5, (6, 5), &dev).unwrap();
        let bias = Tensor::randn(0f32, 1.0, 6, &dev).unwrap();
        let reference = candle_nn::Linear::new(w.clone(), Some(bias.clone()));
        let ours = Linear::new(w.clone(), Some(bias)).unwrap();
        let no_bias = Linear::new(w.clone(), None).unwrap();

        let x = Tensor::randn(0f32, 1.0, (2, 7, 5), &dev).unwrap();
        let r = Tensor::randn(0f32, 1.0, (2, 7, 6), &dev).unwrap();
        let expected = reference.forward(&x).unwrap();
        assert!(max_diff(&ours.forward(&x).unwrap(), &expected) < 1e-5);
        assert!(
            max_diff(
                &ours.forward_add(&x, Some(&r)).unwrap(),
                &(&expected + &r).unwrap()
            ) < 1e-5
        );
        let plain = x
            .matmul(&w.t().unwrap().broadcast_left(2).unwrap())
            .unwrap();
        assert!(max_diff(&no_bias.forward(&x).unwrap(), &plain) < 1e-5);

        // (b, c, h, w) → tokens
        let img = Tensor::randn(0f32, 1.0, (2, 5, 3, 4), &dev).unwrap();
        let tokens = img
            .reshape((2, 5, 12))
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .contiguous()
            .unwrap();
        let got = ours.forward_from_channels_first(&img).unwrap();
        assert!(max_diff(&got, &reference.forward(&tokens).unwrap()) < 1e-5);

        // tokens → (b, c, h, w) + residual
        let res = Tensor::randn(0f32, 1.0, (2, 6, 3, 4), &dev).unwrap();
        let expected = (reference
            .forward(&tokens)
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .reshape((2, 6, 3, 4))
            .unwrap()
            + &res)
            .unwrap();
        let got = ours.forward_to_channels_first_add(&tokens, &res).unwrap();
        assert!(max_diff(&got, &expected) < 1e-5);
    }

    /// bf16 weights: every layout equals the f32 product of the bf16-rounded weight and
    /// input (the products are exact; only the order of the f32 sums differs), on the CPU
    /// kernel and on the portable path.
    #[test]
    fn bf16_weights_match_the_rounded_product() {
        use crate::nn::path::{with_kernel_path, KernelPath};
        use crate::nn::precision::{with_weight_precision, WeightPrecision};
        let bf16_rounded = |t: &Tensor| crate::nn::tensor_diff::bf16_rounded(t).unwrap();
        let dev = Device::Cpu;
        let (inp, out) = (37, 70);
        let w = Tensor::randn(0f32, 0.5, (out, inp), &dev).unwrap();
        let bias = Tensor::randn(0f32, 1.0, out, &dev).unwrap();
        let ours = with_weight_precision(WeightPrecision::Bf16, || {
            Linear::new(w.clone(), Some(bias.clone())).unwrap()
        });
        assert_eq!(ours.weight_bytes(), 70usize.div_ceil(64) * 64 * 19 * 4);
        let reference = Linear::new(bf16_rounded(&w), Some(bias)).unwrap();

        let x = Tensor::randn(0f32, 1.0, (2, 9, inp), &dev).unwrap();
        let r = Tensor::randn(0f32, 1.0, (2, 9, out), &dev).unwrap();
        let want = reference.forward_add(&bf16_rounded(&x), Some(&r)).unwrap();
        let got = ours.forward_add(&x, Some(&r)).unwrap();
        assert!(max_diff(&got, &want) < 1e-4, "{}", max_diff(&got, &want));
        let portable = with_kernel_path(KernelPath::Portable, || {
            ours.forward_add(&bf16_rounded(&x), Some(&r)).unwrap()
        });
        assert!(max_diff(&portable, &want) < 1e-4);

        let img = Tensor::randn(0f32, 1.0, (2, inp, 3, 5), &dev).unwrap();
        let want = reference
            .forward_from_channels_first(&bf16_rounded(&img))
            .unwrap();
        let got = ours.forward_from_channels_first(&img).unwrap();
        assert!(max_diff(&got, &want) < 1e-4);

        let tokens = Tensor::randn(0f32, 1.0, (2, 15, inp), &dev).unwrap();
        let res = Tensor::randn(0f32, 1.0, (2, out, 3, 5), &dev).unwrap();
        let want = reference
            .forward_to_channels_first_add(&bf16_rounded(&tokens), &res)
            .unwrap();
        let got = ours.forward_to_channels_first_add(&tokens, &res).unwrap();
        assert!(max_diff(&got, &want) < 1e-4);
    }
}
