//! MEAN over a set of axes.

use crate::tflite::array::Array;

/// Mean of `input` over `axes` (normalised, deduplicated by the caller or here);
/// reduced dims are kept as 1 when `keep_dims`, dropped otherwise.
pub fn mean(input: &Array, axes: &[usize], keep_dims: bool) -> Result<Array, String> {
    let rank = input.rank();
    if let Some(&bad) = axes.iter().find(|&&a| a >= rank) {
        return Err(format!("axis {bad} out of range for rank {rank}"));
    }
    let reduced: Vec<bool> = (0..rank).map(|d| axes.contains(&d)).collect();
    // Contiguous reduced dims (e.g. H and W of NHWC): sum whole inner rows.
    if let (Some(&first), Some(&last)) = (axes.iter().min(), axes.iter().max()) {
        if last - first + 1 == axes.len() {
            let outer: usize = input.shape[..first].iter().product();
            let count: usize = input.shape[first..=last].iter().product();
            let inner: usize = input.shape[last + 1..].iter().product();
            let mut sums = vec![0.0f64; outer * inner];
            for (o, block) in input.data.chunks_exact(count * inner).enumerate() {
                let acc = &mut sums[o * inner..][..inner];
                for row in block.chunks_exact(inner) {
                    acc.iter_mut().zip(row).for_each(|(a, &x)| *a += x as f64);
                }
            }
            let data = sums
                .into_iter()
                .map(|s| (s / count.max(1) as f64) as f32)
                .collect();
            return Ok(Array::new(
                reduced_shape(&input.shape, &reduced, keep_dims),
                data,
            ));
        }
    }
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
    Ok(Array::new(
        reduced_shape(&input.shape, &reduced, keep_dims),
        data,
    ))
}

/// `shape` with the reduced dims set to 1 (`keep_dims`) or dropped.
fn reduced_shape(shape: &[usize], reduced: &[bool], keep_dims: bool) -> Vec<usize> {
    shape
        .iter()
        .zip(reduced)
        .filter_map(|(&d, &r)| match (r, keep_dims) {
            (false, _) => Some(d),
            (true, true) => Some(1),
            (true, false) => None,
        })
        .collect()
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
        // Non-contiguous axes take the general path: mean over N and W.
        let g = mean(&a, &[0, 2], false).unwrap();
        assert_eq!(g.shape, vec![2, 2]);
        assert_eq!(g.data, vec![1.5, 15.0, 3.5, 35.0]);
    }
}
