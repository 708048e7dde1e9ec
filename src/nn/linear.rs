//! `nn.Linear` as a single gemm whose output buffer is pre-loaded with the bias (and, where the
//! model adds a residual right after, with the residual too), so neither costs an extra pass.
//! It also reads and writes channels-first `(b, c, h·w)` tensors through gemm strides, which
//! removes the token/channel transposes around spatial transformers.

use candle_core::{Module, Result, Tensor};

use crate::nn::kernels::linear::{linear_gemm, Strides};
use crate::nn::path::use_fast_kernel;

#[derive(Debug, Clone)]
pub struct Linear {
    /// `(out, in)`, contiguous.
    weight: Tensor,
    bias: Option<Tensor>,
    in_dim: usize,
    out_dim: usize,
}

impl Linear {
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Result<Self> {
        let (out_dim, in_dim) = weight.dims2()?;
        Ok(Self {
            weight: weight.contiguous()?,
            bias,
            in_dim,
            out_dim,
        })
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
        if !use_fast_kernel(&[x, &self.weight]) {
            let y = candle_nn::Linear::new(self.weight.clone(), self.bias.clone()).forward(x)?;
            return match residual {
                Some(r) => y + r,
                None => Ok(y),
            };
        }
        let rows = x.elem_count() / self.in_dim;
        let strides = Strides {
            in_row: self.in_dim as isize,
            in_col: 1,
            out_row: self.out_dim as isize,
            out_col: 1,
        };
        let out = linear_gemm(
            &self.weight,
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
        if !use_fast_kernel(&[x, &self.weight]) {
            let tokens = x.reshape((b, c, h * w))?.transpose(1, 2)?.contiguous()?;
            return self.forward_add(&tokens, None);
        }
        let strides = Strides {
            in_row: 1,
            in_col: (h * w) as isize,
            out_row: self.out_dim as isize,
            out_col: 1,
        };
        let out = linear_gemm(
            &self.weight,
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
        if !use_fast_kernel(&[x, &self.weight, residual]) {
            let y = self
                .forward_add(x, None)?
                .transpose(1, 2)?
                .reshape((b, out, h, w))?;
            return y + residual;
        }
        let strides = Strides {
            in_row: self.in_dim as isize,
            in_col: 1,
            out_row: 1,
            out_col: (h * w) as isize,
        };
        let y = linear_gemm(
            &self.weight,
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
}
