//! Coarse-to-fine dense Lucas–Kanade with iterative warping.

use super::{
    field::FlowField,
    plane::{gaussian_kernel, Plane},
    warp::warp_plane,
};
use rayon::prelude::*;

/// Tuning of the flow estimator. The defaults suit 256–1024 px video frames.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowParams {
    /// Pyramid levels; the coarsest is at least `min_level_size` px on its short side.
    pub max_levels: usize,
    pub min_level_size: usize,
    /// Warping iterations per level.
    pub iterations: usize,
    /// σ of the Gaussian window that integrates the structure tensor.
    pub window_sigma: f32,
    /// Tikhonov term: in flat regions the update falls to zero and the flow from the
    /// coarser level is kept.
    pub regularization: f32,
    /// Frames whose long side exceeds this are estimated at this size and the field is
    /// scaled back up: the finest levels cost most and add little for video motion.
    pub max_working_size: usize,
}

impl Default for FlowParams {
    fn default() -> Self {
        Self {
            max_levels: 6,
            min_level_size: 16,
            iterations: 3,
            window_sigma: 2.0,
            regularization: 1e-5,
            max_working_size: 384,
        }
    }
}

/// Dense flow from `prev` to `next` (same size): `prev(x) ≈ next(x + flow(x))`.
pub fn estimate_flow(prev: &Plane, next: &Plane, params: &FlowParams) -> FlowField {
    assert_eq!(
        (prev.width, prev.height),
        (next.width, next.height),
        "estimate_flow: frames differ in size"
    );
    let long_side = prev.width.max(prev.height);
    if long_side > params.max_working_size {
        let scale = params.max_working_size as f32 / long_side as f32;
        let w = ((prev.width as f32 * scale).round() as usize).max(1);
        let h = ((prev.height as f32 * scale).round() as usize).max(1);
        let small = estimate_flow(&prev.resize(w, h), &next.resize(w, h), params);
        return small.resize(prev.width, prev.height);
    }
    let pyr_prev = pyramid(prev, params);
    let pyr_next = pyramid(next, params);
    let window = gaussian_kernel(params.window_sigma);

    let coarsest = pyr_prev.len() - 1;
    let mut flow = FlowField::zeros(pyr_prev[coarsest].width, pyr_prev[coarsest].height);
    for level in (0..=coarsest).rev() {
        let (p0, p1) = (&pyr_prev[level], &pyr_next[level]);
        if flow.width() != p0.width || flow.height() != p0.height {
            flow = flow.resize(p0.width, p0.height);
        }
        for _ in 0..params.iterations {
            refine(p0, p1, &mut flow, &window, params.regularization);
        }
        flow = flow.median3();
    }
    flow
}

fn pyramid(image: &Plane, params: &FlowParams) -> Vec<Plane> {
    let mut levels = vec![image.clone()];
    while levels.len() < params.max_levels {
        let last = levels.last().expect("pyramid starts non-empty");
        if last.width.min(last.height) / 2 < params.min_level_size {
            break;
        }
        levels.push(last.pyr_down());
    }
    levels
}

/// One Gauss–Newton step: warp `next` by the current flow and solve the windowed 2×2
/// least-squares system for the update at every pixel.
fn refine(prev: &Plane, next: &Plane, flow: &mut FlowField, window: &[f32], regularization: f32) {
    let warped = warp_plane(next, flow);
    let (gx0, gy0) = prev.gradients();
    let (gx1, gy1) = warped.gradients();
    let n = prev.data.len();
    let (w, h) = (prev.width, prev.height);
    // Symmetric gradients (average of both images) make the step better conditioned.
    let mut products = [
        Plane::new(w, h),
        Plane::new(w, h),
        Plane::new(w, h),
        Plane::new(w, h),
        Plane::new(w, h),
    ];
    for i in 0..n {
        let ix = 0.5 * (gx0.data[i] + gx1.data[i]);
        let iy = 0.5 * (gy0.data[i] + gy1.data[i]);
        let it = warped.data[i] - prev.data[i];
        products[0].data[i] = ix * ix;
        products[1].data[i] = ix * iy;
        products[2].data[i] = iy * iy;
        products[3].data[i] = ix * it;
        products[4].data[i] = iy * it;
    }
    let [sxx, sxy, syy, sxt, syt] = products.map(|p| p.blur_symmetric(window));
    flow.u
        .data
        .par_iter_mut()
        .zip(flow.v.data.par_iter_mut())
        .enumerate()
        .for_each(|(i, (u, v))| {
            let a = sxx.data[i] + regularization;
            let b = sxy.data[i];
            let c = syy.data[i] + regularization;
            let det = a * c - b * b;
            if det <= f32::EPSILON * 1e-3 {
                return;
            }
            let du = -(c * sxt.data[i] - b * syt.data[i]) / det;
            let dv = -(a * syt.data[i] - b * sxt.data[i]) / det;
            // A single linearisation is only valid for small steps; larger motion is
            // recovered over iterations and levels.
            *u += du.clamp(-2.0, 2.0);
            *v += dv.clamp(-2.0, 2.0);
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A smooth, textured test pattern (sum of sinusoids), shifted by (dx, dy).
    fn pattern(w: usize, h: usize, dx: f32, dy: f32) -> Plane {
        let mut p = Plane::new(w, h);
        for y in 0..h {
            for x in 0..w {
                let (fx, fy) = (x as f32 - dx, y as f32 - dy);
                p.data[y * w + x] = 0.5
                    + 0.2 * (fx * 0.21).sin() * (fy * 0.17).cos()
                    + 0.15 * ((fx + fy) * 0.09).sin()
                    + 0.1 * (fx * 0.05 - fy * 0.13).cos();
            }
        }
        p
    }

    fn median(mut v: Vec<f32>) -> f32 {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    }

    #[test]
    fn identical_frames_give_zero_flow() {
        let p = pattern(64, 48, 0.0, 0.0);
        let f = estimate_flow(&p, &p, &FlowParams::default());
        assert!(
            f.mean_magnitude() < 1e-4,
            "mean |flow| = {}",
            f.mean_magnitude()
        );
    }

    #[test]
    fn recovers_a_subpixel_translation() {
        let (dx, dy) = (3.5, -2.25);
        let prev = pattern(128, 96, 0.0, 0.0);
        let next = pattern(128, 96, dx, dy);
        let f = estimate_flow(&prev, &next, &FlowParams::default());
        // Interior only: pixels near the border move out of view.
        let mut us = Vec::new();
        let mut vs = Vec::new();
        for y in 12..84 {
            for x in 12..116 {
                let (u, v) = f.at(x, y);
                us.push(u);
                vs.push(v);
            }
        }
        let (mu, mv) = (median(us), median(vs));
        assert!((mu - dx).abs() < 0.05, "u = {mu}, want {dx}");
        assert!((mv - dy).abs() < 0.05, "v = {mv}, want {dy}");
    }

    #[test]
    fn recovers_a_large_translation_through_the_pyramid() {
        let (dx, dy) = (14.0, 9.0);
        let prev = pattern(256, 192, 0.0, 0.0);
        let next = pattern(256, 192, dx, dy);
        let f = estimate_flow(&prev, &next, &FlowParams::default());
        let (u, v) = f.at(128, 96);
        assert!(
            (u - dx).abs() < 0.25 && (v - dy).abs() < 0.25,
            "flow ({u}, {v})"
        );
    }
}
