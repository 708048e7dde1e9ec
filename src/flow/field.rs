//! A dense flow field: pixel (x, y) of the first image moves to (x + u, y + v) in the second.

use super::plane::Plane;

#[derive(Debug, Clone, PartialEq)]
pub struct FlowField {
    pub u: Plane,
    pub v: Plane,
}

impl FlowField {
    pub fn zeros(width: usize, height: usize) -> Self {
        Self {
            u: Plane::new(width, height),
            v: Plane::new(width, height),
        }
    }

    pub fn width(&self) -> usize {
        self.u.width
    }

    pub fn height(&self) -> usize {
        self.u.height
    }

    /// Displacement at a pixel.
    #[inline]
    pub fn at(&self, x: usize, y: usize) -> (f32, f32) {
        (self.u.at(x, y), self.v.at(x, y))
    }

    /// Bilinearly sampled displacement at a sub-pixel position.
    #[inline]
    pub fn sample(&self, x: f32, y: f32) -> (f32, f32) {
        (self.u.sample(x, y), self.v.sample(x, y))
    }

    /// Resample to another resolution; vectors are scaled with the image.
    pub fn resize(&self, width: usize, height: usize) -> FlowField {
        let sx = width as f32 / self.width() as f32;
        let sy = height as f32 / self.height() as f32;
        let mut u = self.u.resize(width, height);
        let mut v = self.v.resize(width, height);
        u.data.iter_mut().for_each(|d| *d *= sx);
        v.data.iter_mut().for_each(|d| *d *= sy);
        FlowField { u, v }
    }

    /// 3×3 median of each component: removes isolated outliers without blurring motion edges.
    pub fn median3(&self) -> FlowField {
        FlowField {
            u: median3(&self.u),
            v: median3(&self.v),
        }
    }

    /// Mean vector length, a quick summary used in tests and reports.
    pub fn mean_magnitude(&self) -> f32 {
        let n = self.u.data.len().max(1) as f32;
        self.u
            .data
            .iter()
            .zip(&self.v.data)
            .map(|(u, v)| (u * u + v * v).sqrt())
            .sum::<f32>()
            / n
    }
}

fn median3(p: &Plane) -> Plane {
    let (w, h) = (p.width, p.height);
    let mut out = Plane::new(w, h);
    let mut window = [0.0f32; 9];
    for y in 0..h {
        for x in 0..w {
            let mut n = 0;
            for dy in -1i64..=1 {
                for dx in -1i64..=1 {
                    let xx = (x as i64 + dx).clamp(0, w as i64 - 1) as usize;
                    let yy = (y as i64 + dy).clamp(0, h as i64 - 1) as usize;
                    window[n] = p.at(xx, yy);
                    n += 1;
                }
            }
            out.data[y * w + x] = *window.select_nth_unstable_by(4, |a, b| a.total_cmp(b)).1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_scales_vectors_with_the_image() {
        let mut f = FlowField::zeros(4, 4);
        f.u.data.iter_mut().for_each(|d| *d = 1.0);
        f.v.data.iter_mut().for_each(|d| *d = -2.0);
        let g = f.resize(8, 2);
        assert!(g.u.data.iter().all(|d| (d - 2.0).abs() < 1e-6));
        assert!(g.v.data.iter().all(|d| (d + 1.0).abs() < 1e-6));
    }

    #[test]
    fn median_removes_a_single_outlier() {
        let mut f = FlowField::zeros(5, 5);
        f.u.data[12] = 100.0;
        assert_eq!(f.median3().u.data[12], 0.0);
    }
}
