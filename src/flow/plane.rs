//! Single-channel f32 images and the few filters the flow estimator needs.

use rayon::prelude::*;

/// A single-channel f32 image, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Plane {
    pub width: usize,
    pub height: usize,
    pub data: Vec<f32>,
}

impl Plane {
    pub fn new(width: usize, height: usize) -> Self {
        Self {
            width,
            height,
            data: vec![0.0; width * height],
        }
    }

    /// Luma (BT.601 weights) of a tight RGB24 buffer, in [0, 1].
    pub fn from_rgb(width: usize, height: usize, rgb: &[u8]) -> Self {
        assert_eq!(
            rgb.len(),
            width * height * 3,
            "RGB buffer size does not match {width}x{height}"
        );
        let data = rgb
            .chunks_exact(3)
            .map(|p| (0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32) / 255.0)
            .collect();
        Self {
            width,
            height,
            data,
        }
    }

    #[inline]
    pub fn at(&self, x: usize, y: usize) -> f32 {
        self.data[y * self.width + x]
    }

    /// Bilinear sample with coordinates clamped to the image (border replication).
    #[inline]
    pub fn sample(&self, x: f32, y: f32) -> f32 {
        let max_x = (self.width - 1) as f32;
        let max_y = (self.height - 1) as f32;
        let x = x.clamp(0.0, max_x);
        let y = y.clamp(0.0, max_y);
        let x0 = x.floor() as usize;
        let y0 = y.floor() as usize;
        let x1 = (x0 + 1).min(self.width - 1);
        let y1 = (y0 + 1).min(self.height - 1);
        let fx = x - x0 as f32;
        let fy = y - y0 as f32;
        let top = self.at(x0, y0) * (1.0 - fx) + self.at(x1, y0) * fx;
        let bottom = self.at(x0, y1) * (1.0 - fx) + self.at(x1, y1) * fx;
        top * (1.0 - fy) + bottom * fy
    }

    /// Separable convolution with a symmetric kernel (`kernel[0]` is the centre tap),
    /// borders replicated.
    pub fn blur_symmetric(&self, kernel: &[f32]) -> Plane {
        let (w, h) = (self.width, self.height);
        let r = kernel.len() - 1;
        let mut tmp = vec![0.0f32; w * h];
        tmp.par_chunks_mut(w).enumerate().for_each(|(y, row)| {
            let src = &self.data[y * w..(y + 1) * w];
            for (x, out) in row.iter_mut().enumerate() {
                let mut acc = kernel[0] * src[x];
                for k in 1..=r {
                    let l = x.saturating_sub(k);
                    let rr = (x + k).min(w - 1);
                    acc += kernel[k] * (src[l] + src[rr]);
                }
                *out = acc;
            }
        });
        let mut data = vec![0.0f32; w * h];
        data.par_chunks_mut(w).enumerate().for_each(|(y, row)| {
            for (x, out) in row.iter_mut().enumerate() {
                let mut acc = kernel[0] * tmp[y * w + x];
                for k in 1..=r {
                    let up = y.saturating_sub(k);
                    let down = (y + k).min(h - 1);
                    acc += kernel[k] * (tmp[up * w + x] + tmp[down * w + x]);
                }
                *out = acc;
            }
        });
        Plane {
            width: w,
            height: h,
            data,
        }
    }

    /// Gaussian blur then 2× decimation (one pyramid level down).
    pub fn pyr_down(&self) -> Plane {
        let blurred = self.blur_symmetric(&gaussian_kernel(1.0));
        let w = self.width.div_ceil(2).max(1);
        let h = self.height.div_ceil(2).max(1);
        let mut out = Plane::new(w, h);
        for y in 0..h {
            for x in 0..w {
                out.data[y * w + x] =
                    blurred.at((2 * x).min(self.width - 1), (2 * y).min(self.height - 1));
            }
        }
        out
    }

    /// Bilinear resize (pixel centres aligned, as OpenCV's INTER_LINEAR).
    pub fn resize(&self, width: usize, height: usize) -> Plane {
        let sx = self.width as f32 / width as f32;
        let sy = self.height as f32 / height as f32;
        let mut out = Plane::new(width, height);
        out.data
            .par_chunks_mut(width)
            .enumerate()
            .for_each(|(y, row)| {
                let src_y = (y as f32 + 0.5) * sy - 0.5;
                for (x, v) in row.iter_mut().enumerate() {
                    *v = self.sample((x as f32 + 0.5) * sx - 0.5, src_y);
                }
            });
        out
    }

    /// Central-difference gradients (one-sided at the borders).
    pub fn gradients(&self) -> (Plane, Plane) {
        let (w, h) = (self.width, self.height);
        let mut gx = Plane::new(w, h);
        let mut gy = Plane::new(w, h);
        for y in 0..h {
            let up = y.saturating_sub(1);
            let down = (y + 1).min(h - 1);
            for x in 0..w {
                let l = x.saturating_sub(1);
                let r = (x + 1).min(w - 1);
                let dx = (r - l).max(1) as f32;
                let dy = (down - up).max(1) as f32;
                gx.data[y * w + x] = (self.at(r, y) - self.at(l, y)) / dx;
                gy.data[y * w + x] = (self.at(x, down) - self.at(x, up)) / dy;
            }
        }
        (gx, gy)
    }
}

/// One half of a normalised Gaussian kernel (`[centre, 1, 2, ...]`), radius ⌈3σ⌉.
pub fn gaussian_kernel(sigma: f32) -> Vec<f32> {
    let radius = (3.0 * sigma).ceil().max(1.0) as usize;
    let mut half: Vec<f32> = (0..=radius)
        .map(|i| (-(i as f32).powi(2) / (2.0 * sigma * sigma)).exp())
        .collect();
    let total = half[0] + 2.0 * half[1..].iter().sum::<f32>();
    half.iter_mut().for_each(|v| *v /= total);
    half
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaussian_kernel_sums_to_one() {
        let k = gaussian_kernel(1.5);
        let total = k[0] + 2.0 * k[1..].iter().sum::<f32>();
        assert!((total - 1.0).abs() < 1e-6);
        assert!(k.windows(2).all(|w| w[0] > w[1]));
    }

    #[test]
    fn blur_keeps_constant_images_constant() {
        let p = Plane {
            width: 5,
            height: 4,
            data: vec![0.25; 20],
        };
        let b = p.blur_symmetric(&gaussian_kernel(2.0));
        assert!(b.data.iter().all(|v| (v - 0.25).abs() < 1e-6));
    }

    #[test]
    fn bilinear_sample_interpolates_between_pixels() {
        let p = Plane {
            width: 2,
            height: 2,
            data: vec![0.0, 1.0, 2.0, 3.0],
        };
        assert!((p.sample(0.5, 0.0) - 0.5).abs() < 1e-6);
        assert!((p.sample(0.5, 0.5) - 1.5).abs() < 1e-6);
        assert!(
            (p.sample(-4.0, 9.0) - 2.0).abs() < 1e-6,
            "clamped to the border"
        );
    }

    #[test]
    fn gradients_of_a_ramp_are_its_slope() {
        let w = 6;
        let data = (0..w * 3).map(|i| (i % w) as f32 * 0.5).collect();
        let p = Plane {
            width: w,
            height: 3,
            data,
        };
        let (gx, gy) = p.gradients();
        assert!(gx.data.iter().all(|v| (v - 0.5).abs() < 1e-6));
        assert!(gy.data.iter().all(|v| v.abs() < 1e-6));
    }

    #[test]
    fn luma_of_white_is_one() {
        let p = Plane::from_rgb(1, 1, &[255, 255, 255]);
        assert!((p.data[0] - 1.0).abs() < 1e-5);
    }
}
