//! RESIZE_BILINEAR in NHWC, TFLite's float reference formula (`reference_ops::ResizeBilinear`):
//! source coordinate `(y + 0.5)·scale − 0.5` with half-pixel centres, else `y·scale`;
//! `scale = in/out`, or `(in−1)/(out−1)` with align_corners; the lower neighbour is
//! `max(floor(src), 0)`, the upper `min(ceil(src), in−1)`, and the weights use the unclamped
//! source coordinate (so at the borders both neighbours coincide and the weights still sum to 1).

use super::parallel::for_each_row;

use crate::alloc::uninit_f32;
use crate::tflite::array::Array;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResizeBilinear {
    pub out_h: usize,
    pub out_w: usize,
    pub align_corners: bool,
    pub half_pixel_centers: bool,
}

/// Source position and neighbours along one axis for output coordinate `index`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub src: f32,
    pub lower: usize,
    pub upper: usize,
}

impl ResizeBilinear {
    fn scale(&self, input: usize, output: usize) -> f32 {
        if self.align_corners && output > 1 {
            (input - 1) as f32 / (output - 1) as f32
        } else {
            input as f32 / output as f32
        }
    }

    /// TFLite's `ComputeInterpolationValues`.
    pub fn sample(&self, index: usize, input: usize, output: usize) -> Sample {
        let scale = self.scale(input, output);
        let src = if self.half_pixel_centers {
            (index as f32 + 0.5) * scale - 0.5
        } else {
            index as f32 * scale
        };
        let lower = (src.floor() as i64).max(0) as usize;
        let upper = ((src.ceil() as i64).min(input as i64 - 1)).max(0) as usize;
        Sample { src, lower, upper }
    }

    pub fn run(&self, input: &Array) -> Result<Array, String> {
        let (batch, h, w, c) = input
            .nhwc()
            .ok_or_else(|| format!("input must be NHWC, got shape {:?}", input.shape))?;
        if h == 0 || w == 0 || self.out_h == 0 || self.out_w == 0 {
            return Err(format!(
                "cannot resize {h}x{w} to {}x{}",
                self.out_h, self.out_w
            ));
        }
        let xs: Vec<Sample> = (0..self.out_w)
            .map(|x| self.sample(x, w, self.out_w))
            .collect();
        // SAFETY: every channel of every output pixel is assigned below.
        let mut out = unsafe { uninit_f32(batch * self.out_h * self.out_w * c) };
        for_each_row(&mut out, self.out_w * c, self.out_w * c * 4, |row, dst| {
            let (b, y) = (row / self.out_h, row % self.out_h);
            let sy = self.sample(y, h, self.out_h);
            let dy = sy.src - sy.lower as f32;
            let row0 = &input.data[(b * h + sy.lower) * w * c..][..w * c];
            let row1 = &input.data[(b * h + sy.upper) * w * c..][..w * c];
            for (sx, px) in xs.iter().zip(dst.chunks_exact_mut(c)) {
                let dx = sx.src - sx.lower as f32;
                let (a, b2) = (&row0[sx.lower * c..][..c], &row0[sx.upper * c..][..c]);
                let (cc, d) = (&row1[sx.lower * c..][..c], &row1[sx.upper * c..][..c]);
                for i in 0..c {
                    // Same term order as the reference kernel.
                    px[i] = a[i] * (1.0 - dy) * (1.0 - dx)
                        + cc[i] * dy * (1.0 - dx)
                        + b2[i] * (1.0 - dy) * dx
                        + d[i] * dy * dx;
                }
            }
        });
        Ok(Array::new(vec![batch, self.out_h, self.out_w, c], out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resize(
        input: &[f32],
        w: usize,
        out_w: usize,
        align_corners: bool,
        half_pixel_centers: bool,
    ) -> Vec<f32> {
        let r = ResizeBilinear {
            out_h: 1,
            out_w,
            align_corners,
            half_pixel_centers,
        };
        r.run(&Array::new(vec![1, 1, w, 1], input.to_vec()))
            .unwrap()
            .data
    }

    fn close(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-6, "{a:?} vs {b:?}");
        }
    }

    /// 1-D upsampling of [0, 4, 8] (width 3) to width 6, values worked out by hand from the
    /// formula in the module docs.
    #[test]
    fn half_pixel_centers() {
        // scale 0.5; src = (x + 0.5)/2 - 0.5 = -0.25, 0.25, 0.75, 1.25, 1.75, 2.25.
        // x=0: lower 0 upper 0 -> 0. x=1: 0 + 0.25*4 = 1. x=2: 3. x=3: 4 + 0.25*4 = 5.
        // x=4: 7. x=5: lower 2, upper min(3, 2) = 2 -> 8*(1-0.25) + 8*0.25 = 8.
        close(
            &resize(&[0.0, 4.0, 8.0], 3, 6, false, true),
            &[0.0, 1.0, 3.0, 5.0, 7.0, 8.0],
        );
    }

    #[test]
    fn align_corners() {
        // scale (3-1)/(6-1) = 0.4; src = 0, 0.4, 0.8, 1.2, 1.6, 2.0 -> 0, 1.6, 3.2, 4.8, 6.4, 8.
        close(
            &resize(&[0.0, 4.0, 8.0], 3, 6, true, false),
            &[0.0, 1.6, 3.2, 4.8, 6.4, 8.0],
        );
    }

    #[test]
    fn neither_flag() {
        // scale 0.5; src = 0, 0.5, 1, 1.5, 2, 2.5 -> 0, 2, 4, 6, 8, 8 (upper clamps to 2).
        close(
            &resize(&[0.0, 4.0, 8.0], 3, 6, false, false),
            &[0.0, 2.0, 4.0, 6.0, 8.0, 8.0],
        );
    }

    #[test]
    fn two_dimensional_half_pixel() {
        // 2x2 -> 4x4 of [[0, 1], [2, 3]]: src coords -0.25, 0.25, 0.75, 1.25 on both axes.
        // Row 1 (sy 0.25): 0.75*row0 + 0.25*row1 = [0.5, 1.5]; its x-interp at 0.25 -> 0.75.
        let r = ResizeBilinear {
            out_h: 4,
            out_w: 4,
            align_corners: false,
            half_pixel_centers: true,
        };
        let out = r
            .run(&Array::new(vec![1, 2, 2, 1], vec![0.0, 1.0, 2.0, 3.0]))
            .unwrap();
        close(
            &out.data,
            &[
                0.0, 0.25, 0.75, 1.0, 0.5, 0.75, 1.25, 1.5, 1.5, 1.75, 2.25, 2.5, 2.0, 2.25, 2.75,
                3.0,
            ],
        );
    }
}
