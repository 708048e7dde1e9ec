//! A layer's weights in the precision it was built with ([`crate::nn::precision`]): f32 (or,
//! on a non-CPU device, bf16) candle tensors, or on the CPU in bf16 the packed pairs of
//! [`crate::nn::kernels::gemm_bf16`], which are then the only copy. Layers ask for the form
//! their CPU kernel reads ([`MatrixWeight::fast`], [`ConvWeight::fast`]) and fall back to the
//! candle tensor ([`MatrixWeight::tensor`], [`ConvWeight::tensor`]) on the portable path.

use std::sync::Arc;

use candle_core::{DType, Device, Result, Tensor};

use crate::nn::kernels::gemm_bf16::{WeightPanels, WeightRows};
use crate::nn::precision::{weight_precision, WeightPrecision};

/// What a layer's CPU kernel multiplies by.
pub(crate) enum Fast<'a, P> {
    /// f32 on the CPU.
    F32(&'a Tensor),
    /// bf16 pairs.
    Bf16(&'a Arc<P>),
}

#[derive(Debug, Clone)]
enum Stored<P> {
    /// f32, or bf16 on a non-CPU device.
    Tensor(Tensor),
    Packed(Arc<P>, Device),
}

impl<P> Stored<P> {
    fn fast(&self) -> Option<Fast<'_, P>> {
        match self {
            Stored::Tensor(t) if t.device().is_cpu() && t.dtype() == DType::F32 => {
                Some(Fast::F32(t))
            }
            Stored::Tensor(_) => None,
            Stored::Packed(p, _) => Some(Fast::Bf16(p)),
        }
    }

    /// `weight` as the chosen precision stores it: packed by `pack` (from its f32 values) on
    /// the CPU in bf16.
    fn new(weight: Tensor, pack: impl FnOnce(&[f32]) -> P) -> Result<Self> {
        Ok(match weight_precision() {
            WeightPrecision::F32 => Stored::Tensor(weight.contiguous()?),
            WeightPrecision::Bf16 if weight.device().is_cpu() => {
                let values = weight.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
                Stored::Packed(Arc::new(pack(&values)), weight.device().clone())
            }
            WeightPrecision::Bf16 => Stored::Tensor(weight.to_dtype(DType::BF16)?.contiguous()?),
        })
    }

    /// Another weight (`values` derived from this one) stored the same way.
    fn same_as(&self, values: Tensor, pack: impl FnOnce(&[f32]) -> P) -> Result<Self> {
        let precision = match self {
            Stored::Tensor(t) if t.dtype() == DType::F32 => WeightPrecision::F32,
            _ => WeightPrecision::Bf16,
        };
        crate::nn::precision::with_weight_precision(precision, || Self::new(values, pack))
    }

    fn tensor(&self, dtype: DType, dims: (usize, usize), unpack: impl FnOnce(&P) -> Vec<f32>) -> Result<Tensor> {
        match self {
            Stored::Tensor(t) => t.to_dtype(dtype),
            Stored::Packed(p, device) => Tensor::from_vec(unpack(p), dims, device)?.to_dtype(dtype),
        }
    }
}

/// An `(out, in)` matrix (a linear layer).
#[derive(Debug, Clone)]
pub(crate) struct MatrixWeight {
    stored: Stored<WeightPanels>,
    dims: (usize, usize),
}

impl MatrixWeight {
    pub(crate) fn new(weight: Tensor) -> Result<Self> {
        let dims = weight.dims2()?;
        let stored = Stored::new(weight, |w| WeightPanels::pack(w, dims.0, dims.1))?;
        Ok(Self { stored, dims })
    }

    pub(crate) fn fast(&self) -> Option<Fast<'_, WeightPanels>> {
        self.stored.fast()
    }

    /// The matrix in `dtype` (unpacked from bf16 pairs if need be).
    pub(crate) fn tensor(&self, dtype: DType) -> Result<Tensor> {
        self.stored.tensor(dtype, self.dims, WeightPanels::unpack)
    }

    pub(crate) fn bytes(&self) -> usize {
        match &self.stored {
            Stored::Tensor(t) => t.elem_count() * t.dtype().size_in_bytes(),
            Stored::Packed(p, _) => p.bytes(),
        }
    }
}

/// A conv weight `[out, taps · in]` in OHWI order (`taps` = k·k), or any stack of
/// `[rows, channels]` matrices with `taps = 1`.
#[derive(Debug, Clone)]
pub(crate) struct ConvWeight {
    stored: Stored<WeightRows>,
    rows: usize,
    taps: usize,
    channels: usize,
}

impl ConvWeight {
    /// From `[rows, taps · channels]`.
    pub(crate) fn new(weight: Tensor, taps: usize, channels: usize) -> Result<Self> {
        let (rows, len) = weight.dims2()?;
        if len != taps * channels {
            candle_core::bail!("conv weight {:?} for {taps} taps of {channels}", weight.dims());
        }
        let stored = Stored::new(weight, |w| WeightRows::pack(w, rows, taps, channels))?;
        Ok(Self {
            stored,
            rows,
            taps,
            channels,
        })
    }

    /// `weight` (`[rows, taps · channels]`, derived from this one) in this one's precision.
    pub(crate) fn same_precision(&self, weight: Tensor, taps: usize, channels: usize) -> Result<Self> {
        let (rows, _) = weight.dims2()?;
        let stored = self
            .stored
            .same_as(weight, |w| WeightRows::pack(w, rows, taps, channels))?;
        Ok(Self {
            stored,
            rows,
            taps,
            channels,
        })
    }

    pub(crate) fn rows(&self) -> usize {
        self.rows
    }

    pub(crate) fn channels(&self) -> usize {
        self.channels
    }

    pub(crate) fn fast(&self) -> Option<Fast<'_, WeightRows>> {
        self.stored.fast()
    }

    /// The weight `[rows, taps · channels]` in `dtype`.
    pub(crate) fn tensor(&self, dtype: DType) -> Result<Tensor> {
        self.stored
            .tensor(dtype, (self.rows, self.taps * self.channels), WeightRows::unpack)
    }

    /// The f32 values `[rows, taps · channels]` (bf16 ones widened).
    pub(crate) fn values(&self) -> Result<Vec<f32>> {
        self.tensor(DType::F32)?.flatten_all()?.to_vec1()
    }
}
