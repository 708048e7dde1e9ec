//! MEAN over a set of axes.

use crate::preprocess::tflite::array::Array;

/// Mean of `input` over `axes` (normalised, deduplicated by the caller or here);
/// reduced dims are kept as 1 when `keep_dims`, dropped otherwise.
pub fn mean(input: &Array, axes: &[usize], keep_dims: bool) -> Result<Array, String> {
    let rank = input.rank();
    if let Some(&bad) = axes.iter().find(|&&a| a >= rank) {
        return Err(format!("axis {bad} out of range for rank {rank}"));
    }
    let reduced: Vec<bool> = (0..rank).map(|d| axes.contains(&d)).collect();
    let kept_shape: Vec<usize> = input
        .shape
        .iter()
        .zip(&reduced)
        .map(|(&d, &r)| if r { 1 } else { d })
        .collect();
    let count: usize = input
        .shape
        .iter()
        .zip(&reduced)
        .filter(|(_, &r)| r)
        .map(|(&d, _)| d)
        .product();
    let out_strides = super::shape::strides(&kept_shape);
    let mut sums = vec![0.0f64; kept_shape.iter().product()];
    let mut index = vec![0usize; rank];
    for &x in &input.data {
        let at: usize = (0..rank)
            .filter(|&d| !reduced[d])
            .map(|d| index[d] * out_strides[d])
            .sum();
        sums[at] += x as f64;
        for d in (0..rank).rev() {
            index[d] += 1;
            if index[d] < input.shape[d] {
                break;
            }
            index[d] = 0;
        }
    }
    let data = sums
        .into_iter()
        .map(|s| (s / count.max(1) as f64) as f32)
        .collect();
    let shape = if keep_dims {
        kept_shape
    } else {
        input
            .shape
            .iter()
            .zip(&reduced)
            .filter(|(_, &r)| !r)
            .map(|(&d, _)| d)
            .collect()
    };
    Ok(Array::new(shape, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spatial_mean() {
        // 1x2x2x2: channel 0 = 1,2,3,4 ; channel 1 = 10,20,30,40
        let a = Array::new(vec![1, 2, 2, 2], vec![1., 10., 2., 20., 3., 30., 4., 40.]);
        let m = mean(&a, &[1, 2], false).unwrap();
        assert_eq!(m.shape, vec![1, 2]);
        assert_eq!(m.data, vec![2.5, 25.0]);
        let k = mean(&a, &[1, 2], true).unwrap();
        assert_eq!(k.shape, vec![1, 1, 1, 2]);
    }
}
