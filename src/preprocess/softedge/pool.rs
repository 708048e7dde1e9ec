//! Keras `MaxPooling2D(pool_size=2, strides=2, padding='same')` on channels-last `[H, W, C]`
//! f32 tensors, as a candle custom op (one pass over contiguous rows; candle's own reductions
//! over the strided window axes are several times slower on 512² activations).
//!
//! 'same' pads odd sizes at the bottom/right with −∞, so the output is `[⌈H/2⌉, ⌈W/2⌉, C]` and
//! the last window of an odd axis holds one row or column.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::nn::kernels::cpu::contiguous_f32;

/// 2×2, stride-2 'same' max pooling of `x: [H, W, C]`.
pub fn max_pool_2x2_same(x: &Tensor) -> candle_core::Result<Tensor> {
    x.apply_op1_no_bwd(&MaxPool2x2Same)
}

struct MaxPool2x2Same;

impl CustomOp1 for MaxPool2x2Same {
    fn name(&self) -> &'static str {
        "max-pool-2x2-same-hwc"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (h, w, c) = layout.shape().dims3()?;
        let data = contiguous_f32(storage, layout, "max pool")?;
        let out = max_pool_2x2_same_hwc(data, (h, w, c));
        Ok((
            CpuStorage::F32(out),
            Shape::from((h.div_ceil(2), w.div_ceil(2), c)),
        ))
    }
}

/// The pooling on a row-major `[H, W, C]` slice.
pub fn max_pool_2x2_same_hwc(x: &[f32], (h, w, c): (usize, usize, usize)) -> Vec<f32> {
    assert_eq!(x.len(), h * w * c, "max pool: input size");
    let (h2, w2) = (h.div_ceil(2), w.div_ceil(2));
    let mut out = vec![0f32; h2 * w2 * c];
    if out.is_empty() {
        return out;
    }
    out.par_chunks_mut(w2 * c)
        .enumerate()
        .for_each(|(oy, row)| {
            // An odd last window repeats its only row/column: the same max as −∞ padding.
            let rows = [2 * oy, (2 * oy + 1).min(h - 1)];
            for ox in 0..w2 {
                let cols = [2 * ox, (2 * ox + 1).min(w - 1)];
                let dst = &mut row[ox * c..(ox + 1) * c];
                dst.fill(f32::NEG_INFINITY);
                for y in rows {
                    for x_ in cols {
                        let src = &x[(y * w + x_) * c..(y * w + x_ + 1) * c];
                        for (d, s) in dst.iter_mut().zip(src) {
                            *d = d.max(*s);
                        }
                    }
                }
            }
        });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn same_pooling_rounds_odd_sizes_up() -> candle_core::Result<()> {
        // 3x5x2: channel 0 = index, channel 1 = −index.
        let data: Vec<f32> = (0..15).flat_map(|i| [i as f32, -(i as f32)]).collect();
        let x = Tensor::from_vec(data, (3, 5, 2), &Device::Cpu)?;
        let y = max_pool_2x2_same(&x)?;
        assert_eq!(y.dims(), &[2, 3, 2]);
        let c0: Vec<Vec<f32>> = y.narrow(2, 0, 1)?.squeeze(2)?.to_vec2()?;
        let c1: Vec<Vec<f32>> = y.narrow(2, 1, 1)?.squeeze(2)?.to_vec2()?;
        assert_eq!(c0, vec![vec![6.0, 8.0, 9.0], vec![11.0, 13.0, 14.0]]);
        assert_eq!(c1, vec![vec![0.0, -2.0, -4.0], vec![-10.0, -12.0, -14.0]]);
        Ok(())
    }

    #[test]
    fn even_sizes_take_the_max_of_each_window() {
        let x = [1.0, 5.0, 2.0, 0.0, -1.0, 3.0, 7.0, 4.0];
        // [2, 4, 1]: windows {1, 5, −1, 3} and {2, 0, 7, 4}.
        assert_eq!(max_pool_2x2_same_hwc(&x, (2, 4, 1)), vec![5.0, 7.0]);
    }
}
