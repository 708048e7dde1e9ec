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

/// `‖a − b‖₂ / ‖b‖₂` (in f64): the relative error of `a` against the reference `b`, the
/// drift measure of bf16 against f32.
pub fn relative_l2_error(a: &Tensor, b: &Tensor) -> Result<f64> {
    if a.dims() != b.dims() {
        candle_core::bail!(
            "comparing tensors of shapes {:?} and {:?}",
            a.dims(),
            b.dims()
        );
    }
    let a = a.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let b = b.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let (mut diff, mut norm) = (0f64, 0f64);
    for (x, y) in a.iter().zip(&b) {
        diff += (*x as f64 - *y as f64).powi(2);
        norm += (*y as f64).powi(2);
    }
    Ok(if norm == 0.0 { diff.sqrt() } else { (diff / norm).sqrt() })
}

/// `t` rounded to bf16 and back to f32: what the bf16 kernels multiply.
pub fn bf16_rounded(t: &Tensor) -> Result<Tensor> {
    t.to_dtype(DType::BF16)?.to_dtype(DType::F32)
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

    #[test]
    fn relative_error_and_rounding() {
        let dev = Device::Cpu;
        let b = Tensor::new(&[3f32, 4.0], &dev).unwrap();
        let a = Tensor::new(&[3f32, 4.5], &dev).unwrap();
        assert!((relative_l2_error(&a, &b).unwrap() - 0.1).abs() < 1e-12);
        let x = Tensor::new(&[1.0f32 + 1.0 / 256.0, 1.0 + 3.0 / 256.0], &dev).unwrap();
        let r = bf16_rounded(&x).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(r, vec![1.0, 1.0 + 4.0 / 256.0]);
    }
}
