//! Bilinear resize with half-pixel centres, as TensorFlow's `tf.image.resize(method='bilinear')`
//! (the `ResizeBilinear` kernel with `half_pixel_centers=True`), written as interpolation matrices.
//!
//! HED upsamples each 1-channel side output to the input size; `rows · map · colsᵀ` with the
//! matrices below gives the same values as TF's per-pixel lerps, with one small matmul per axis.

use candle_core::{Device, Tensor};

/// The `[out_size, in_size]` matrix whose row `i` holds the bilinear weights of output sample `i`.
///
/// TF computes, in f32: `scale = in / out`, `src = (i + 0.5)·scale − 0.5`,
/// `lower = max(floor(src), 0)`, `upper = min(ceil(src), in − 1)`, `lerp = src − floor(src)`,
/// value = `v[lower]·(1 − lerp) + v[upper]·lerp` (so samples before the first or after the last
/// input sample take that sample's value).
pub fn half_pixel_weights(in_size: usize, out_size: usize) -> Vec<f32> {
    let mut weights = vec![0f32; out_size * in_size];
    if in_size == 0 {
        return weights;
    }
    let scale = in_size as f32 / out_size as f32;
    for i in 0..out_size {
        let src = (i as f32 + 0.5) * scale - 0.5;
        let floor = src.floor();
        let lerp = src - floor;
        let lower = (floor.max(0.0) as usize).min(in_size - 1);
        let upper = (src.ceil().max(0.0) as usize).min(in_size - 1);
        let row = &mut weights[i * in_size..(i + 1) * in_size];
        row[lower] += 1.0 - lerp;
        row[upper] += lerp;
    }
    weights
}

/// Resize a `[h, w]` map to `[out_h, out_w]` (TF half-pixel bilinear).
pub fn resize_bilinear_half_pixel(
    map: &Tensor,
    out_h: usize,
    out_w: usize,
) -> candle_core::Result<Tensor> {
    let (h, w) = map.dims2()?;
    if (h, w) == (out_h, out_w) {
        return Ok(map.clone());
    }
    let device: &Device = map.device();
    let rows = Tensor::from_vec(half_pixel_weights(h, out_h), (out_h, h), device)?;
    let cols = Tensor::from_vec(half_pixel_weights(w, out_w), (out_w, w), device)?;
    rows.matmul(map)?.matmul(&cols.t()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// TF's per-sample formula, written out.
    fn tf_resize_1d(v: &[f32], out: usize) -> Vec<f32> {
        let n = v.len();
        let scale = n as f32 / out as f32;
        (0..out)
            .map(|i| {
                let src = (i as f32 + 0.5) * scale - 0.5;
                let lower = (src.floor() as i64).max(0) as usize;
                let upper = (src.ceil() as i64).min(n as i64 - 1) as usize;
                let lerp = src - src.floor();
                v[lower] + (v[upper] - v[lower]) * lerp
            })
            .collect()
    }

    #[test]
    fn weights_match_tf_formula() {
        let v: Vec<f32> = (0..7).map(|i| (i * i) as f32 - 3.0).collect();
        for out in [7, 13, 14, 100, 3] {
            let w = half_pixel_weights(v.len(), out);
            let want = tf_resize_1d(&v, out);
            for i in 0..out {
                let got: f32 = (0..v.len()).map(|j| w[i * v.len() + j] * v[j]).sum();
                assert!(
                    (got - want[i]).abs() < 1e-5,
                    "out {out} sample {i}: {got} vs {}",
                    want[i]
                );
            }
        }
    }

    #[test]
    fn rows_sum_to_one_and_integer_upsampling_is_symmetric() {
        let w = half_pixel_weights(4, 16);
        for i in 0..16 {
            let s: f32 = w[i * 4..(i + 1) * 4].iter().sum();
            assert!((s - 1.0).abs() < 1e-6);
        }
        // ×4: the first two outputs sit before the first input centre and copy it.
        assert_eq!(&w[0..4], &[1.0, 0.0, 0.0, 0.0]);
        assert_eq!(&w[4..8], &[1.0, 0.0, 0.0, 0.0]);
        assert_eq!(&w[8..12], &[0.875, 0.125, 0.0, 0.0]);
    }

    #[test]
    fn resizes_2d_separably() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let map = Tensor::from_vec((0..12).map(|i| i as f32).collect::<Vec<_>>(), (3, 4), &dev)?;
        let up = resize_bilinear_half_pixel(&map, 6, 8)?;
        assert_eq!(up.dims(), &[6, 8]);
        let rows: Vec<Vec<f32>> = up.to_vec2()?;
        // A linear ramp stays a ramp inside, clamps at the borders.
        assert!((rows[0][0] - 0.0).abs() < 1e-6);
        assert!((rows[5][7] - 11.0).abs() < 1e-6);
        assert!(
            (rows[2][3]
                - (tf_resize_1d(&[0.0, 4.0, 8.0], 6)[2]
                    + tf_resize_1d(&[0.0, 1.0, 2.0, 3.0], 8)[3]))
                .abs()
                < 1e-5
        );
        Ok(())
    }
}
