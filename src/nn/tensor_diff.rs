//! Comparing tensors: the largest element-wise difference, as parity checks report it.

use candle_core::{DType, Result, Tensor};

/// `max |a − b|` over all elements (computed in f32); an error if the shapes differ.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    if a.dims() != b.dims() {
        candle_core::bail!(
            "comparing tensors of shapes {:?} and {:?}",
            a.dims(),
            b.dims()
        );
    }
    if a.elem_count() == 0 {
        return Ok(0.0);
    }
    (a.to_dtype(DType::F32)? - b.to_dtype(DType::F32)?)?
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_scalar::<f32>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn largest_difference_and_shape_check() {
        let dev = Device::Cpu;
        let a = Tensor::new(&[[1f32, -2.0], [3.0, 4.0]], &dev).unwrap();
        let b = Tensor::new(&[[1.5f32, -2.0], [0.0, 4.25]], &dev).unwrap();
        assert_eq!(max_abs_diff(&a, &b).unwrap(), 3.0);
        assert_eq!(max_abs_diff(&a, &a).unwrap(), 0.0);
        let err = max_abs_diff(&a, &a.flatten_all().unwrap()).unwrap_err();
        assert!(err.to_string().contains("[2, 2]"), "{err}");
    }
}
