//! Data-movement ops: PAD (zeros), CONCATENATION, RESHAPE, DEPTH_TO_SPACE.

use crate::alloc::uninit_f32;
use crate::tflite::array::Array;

/// Row-major strides of `shape`.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1usize; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        s[d] = s[d + 1] * shape[d + 1];
    }
    s
}

/// PAD with zeros: `paddings[d] = (before, after)` for every dim.
pub fn pad(input: &Array, paddings: &[(usize, usize)]) -> Result<Array, String> {
    if paddings.len() != input.rank() {
        return Err(format!(
            "{} padding pairs for a rank-{} input",
            paddings.len(),
            input.rank()
        ));
    }
    let out_shape: Vec<usize> = input
        .shape
        .iter()
        .zip(paddings)
        .map(|(&d, &(a, b))| d + a + b)
        .collect();
    let mut out = Array::zeros(out_shape.clone());
    if input.is_empty() {
        return Ok(out);
    }
    let rank = input.rank();
    let out_strides = strides(&out_shape);
    // Copy innermost rows at a time.
    let inner = input.shape[rank - 1];
    let offset_inner = paddings[rank - 1].0;
    let rows = input.len() / inner;
    let mut index = vec![0usize; rank.saturating_sub(1)];
    for row in 0..rows {
        let mut at = offset_inner;
        for (d, &i) in index.iter().enumerate() {
            at += (i + paddings[d].0) * out_strides[d];
        }
        out.data[at..at + inner].copy_from_slice(&input.data[row * inner..][..inner]);
        // Advance the multi-index over the outer dims.
        for d in (0..index.len()).rev() {
            index[d] += 1;
            if index[d] < input.shape[d] {
                break;
            }
            index[d] = 0;
        }
    }
    Ok(out)
}

/// CONCATENATION along `axis` (already normalised to 0..rank).
pub fn concatenate(inputs: &[&Array], axis: usize) -> Result<Array, String> {
    let first = inputs.first().ok_or("no inputs")?;
    if axis >= first.rank() {
        return Err(format!(
            "axis {axis} out of range for rank {}",
            first.rank()
        ));
    }
    for a in inputs {
        let same = a.rank() == first.rank()
            && a.shape
                .iter()
                .zip(&first.shape)
                .enumerate()
                .all(|(d, (x, y))| d == axis || x == y);
        if !same {
            return Err(format!(
                "cannot concatenate shapes {:?} and {:?} on axis {axis}",
                first.shape, a.shape
            ));
        }
    }
    let outer: usize = first.shape[..axis].iter().product();
    let inner: usize = first.shape[axis + 1..].iter().product();
    let mut shape = first.shape.clone();
    shape[axis] = inputs.iter().map(|a| a.shape[axis]).sum();
    let mut data = Vec::with_capacity(shape.iter().product());
    for o in 0..outer {
        for a in inputs {
            let block = a.shape[axis] * inner;
            data.extend_from_slice(&a.data[o * block..][..block]);
        }
    }
    Ok(Array::new(shape, data))
}

/// The output shape of RESHAPE: `new_shape` may hold one -1, inferred from the element count.
pub fn reshape_shape(len: usize, new_shape: &[i32]) -> Result<Vec<usize>, String> {
    let known: usize = new_shape
        .iter()
        .filter(|&&d| d >= 0)
        .map(|&d| d as usize)
        .product();
    let unknown = new_shape.iter().filter(|&&d| d < 0).count();
    let shape: Vec<usize> = match unknown {
        0 => new_shape.iter().map(|&d| d as usize).collect(),
        1 if known > 0 && len.is_multiple_of(known) => new_shape
            .iter()
            .map(|&d| if d < 0 { len / known } else { d as usize })
            .collect(),
        _ => return Err(format!("cannot reshape {len} elements to {new_shape:?}")),
    };
    if shape.iter().product::<usize>() != len {
        return Err(format!("cannot reshape {len} elements to {new_shape:?}"));
    }
    Ok(shape)
}

/// DEPTH_TO_SPACE (NHWC, TensorFlow's DCR order): output pixel (y·bs + i, x·bs + j) channel
/// `k` comes from input (y, x) channel `(i·bs + j)·C_out + k`.
pub fn depth_to_space(input: &Array, block: usize) -> Result<Array, String> {
    let (n, h, w, c) = input
        .nhwc()
        .ok_or_else(|| format!("input must be NHWC, got shape {:?}", input.shape))?;
    if block == 0 || c % (block * block) != 0 {
        return Err(format!(
            "{c} channels are not divisible by block size {block} squared"
        ));
    }
    let oc = c / (block * block);
    let (oh, ow) = (h * block, w * block);
    // SAFETY: the block copies cover every output element (same element count as the input).
    let mut out = unsafe { uninit_f32(input.len()) };
    for b in 0..n {
        for y in 0..h {
            for x in 0..w {
                let src = &input.data[((b * h + y) * w + x) * c..][..c];
                for i in 0..block {
                    for j in 0..block {
                        let at = ((b * oh + y * block + i) * ow + x * block + j) * oc;
                        out[at..at + oc].copy_from_slice(&src[(i * block + j) * oc..][..oc]);
                    }
                }
            }
        }
    }
    Ok(Array::new(vec![n, oh, ow, oc], out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pad_zeros_around() {
        let a = Array::new(vec![1, 2, 2, 1], vec![1.0, 2.0, 3.0, 4.0]);
        let p = pad(&a, &[(0, 0), (1, 0), (0, 1), (0, 0)]).unwrap();
        assert_eq!(p.shape, vec![1, 3, 3, 1]);
        assert_eq!(p.data, vec![0.0, 0.0, 0.0, 1.0, 2.0, 0.0, 3.0, 4.0, 0.0]);
        // channel padding, as face_detection's residual branches do
        let c = pad(
            &Array::new(vec![1, 1, 2, 2], vec![1.0, 2.0, 3.0, 4.0]),
            &[(0, 0), (0, 0), (0, 0), (0, 2)],
        )
        .unwrap();
        assert_eq!(c.data, vec![1.0, 2.0, 0.0, 0.0, 3.0, 4.0, 0.0, 0.0]);
    }

    #[test]
    fn concat_middle_axis() {
        let a = Array::new(vec![1, 2, 2], vec![1.0, 2.0, 3.0, 4.0]);
        let b = Array::new(vec![1, 1, 2], vec![5.0, 6.0]);
        let c = concatenate(&[&a, &b], 1).unwrap();
        assert_eq!(c.shape, vec![1, 3, 2]);
        assert_eq!(c.data, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let d = concatenate(&[&a, &a], 2).unwrap();
        assert_eq!(d.data, vec![1.0, 2.0, 1.0, 2.0, 3.0, 4.0, 3.0, 4.0]);
    }

    #[test]
    fn reshape_infers_one_dim() {
        assert_eq!(reshape_shape(12, &[1, -1, 3]).unwrap(), vec![1, 4, 3]);
        assert!(reshape_shape(12, &[5, -1]).is_err());
        assert!(reshape_shape(12, &[-1, -1]).is_err());
    }

    #[test]
    fn depth_to_space_dcr() {
        // 1x1x1x4 -> 1x2x2x1: channels fill (0,0), (0,1), (1,0), (1,1).
        let a = Array::new(vec![1, 1, 1, 4], vec![1.0, 2.0, 3.0, 4.0]);
        let d = depth_to_space(&a, 2).unwrap();
        assert_eq!(d.shape, vec![1, 2, 2, 1]);
        assert_eq!(d.data, vec![1.0, 2.0, 3.0, 4.0]);
        // 1x1x2x8 -> 1x2x4x2
        let a = Array::new(vec![1, 1, 2, 8], (0..16).map(|v| v as f32).collect());
        let d = depth_to_space(&a, 2).unwrap();
        assert_eq!(
            d.data,
            vec![0., 1., 2., 3., 8., 9., 10., 11., 4., 5., 6., 7., 12., 13., 14., 15.]
        );
    }
}
