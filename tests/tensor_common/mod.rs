//! Differences between tensors, shared by the parity tests.
#![allow(dead_code)]

use candle_core::Tensor;

/// `max |a − b|` over all elements.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    rotoscope::nn::tensor_diff::max_abs_diff(a, b).unwrap()
}

/// `max |a|` over all elements.
pub fn max_abs(a: &Tensor) -> f32 {
    a.abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}
