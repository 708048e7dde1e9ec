//! Optical flow between consecutive *input* frames at the render size, and warping a
//! rendered frame along it. The flow is computed on the source video (never on outputs),
//! with the classical dense estimator of [`crate::flow`], so it is the same motion the
//! warp-error metric of `rotoscope score` judges by.

use image::RgbImage;

use crate::flow::{consistency_mask, estimate_flow, warp_rgb, FlowField, FlowParams, Plane};

/// Luma of an RGB image, the plane the flow estimator works on.
pub fn luma(image: &RgbImage) -> Plane {
    let (w, h) = image.dimensions();
    Plane::from_rgb(w as usize, h as usize, image.as_raw())
}

/// Motion between the previous input frame and the current one.
#[derive(Debug, Clone)]
pub struct InputFlow {
    /// Current → previous: `current(x) ≈ previous(x + to_previous(x))`; warps anything
    /// aligned with the previous frame onto the current one.
    pub to_previous: FlowField,
    /// Previous → current, for the forward–backward check; only when asked for.
    pub from_previous: Option<FlowField>,
}

impl InputFlow {
    /// Estimate the flow between two luma planes of the same size. `with_check` also
    /// estimates the reverse flow, which [`InputFlow::trusted`] needs.
    pub fn estimate(
        previous: &Plane,
        current: &Plane,
        with_check: bool,
        params: &FlowParams,
    ) -> Self {
        Self {
            to_previous: estimate_flow(current, previous, params),
            from_previous: with_check.then(|| estimate_flow(previous, current, params)),
        }
    }

    /// `image` (aligned with the previous frame, same size) moved onto the current frame,
    /// and where the sample fell inside the image.
    pub fn warp_to_current(&self, image: &RgbImage) -> (RgbImage, Vec<bool>) {
        let (w, h) = image.dimensions();
        let (warped, inside) = warp_rgb(image.as_raw(), &self.to_previous);
        let bytes = warped
            .iter()
            .map(|&v| v.round().clamp(0.0, 255.0) as u8)
            .collect();
        let image = RgbImage::from_raw(w, h, bytes).expect("warp keeps the image size");
        (image, inside)
    }

    /// Pixels of the current frame whose motion both flows agree on and whose source lies
    /// inside the previous frame: where the warped previous frame can be trusted. Without
    /// the reverse flow, only the inside test applies.
    pub fn trusted(&self) -> Vec<bool> {
        match &self.from_previous {
            Some(from_previous) => consistency_mask(&self.to_previous, from_previous),
            None => {
                let (w, h) = (self.to_previous.width(), self.to_previous.height());
                let mut inside = vec![false; w * h];
                for y in 0..h {
                    for x in 0..w {
                        let (u, v) = self.to_previous.at(x, y);
                        let (sx, sy) = (x as f32 + u, y as f32 + v);
                        inside[y * w + x] =
                            sx >= 0.0 && sy >= 0.0 && sx <= (w - 1) as f32 && sy <= (h - 1) as f32;
                    }
                }
                inside
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A smooth texture shifted right by `shift` pixels.
    fn textured(w: u32, h: u32, shift: f32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            let fx = x as f32 - shift;
            let v = 0.5
                + 0.25 * (fx * 0.3).sin() * (y as f32 * 0.23).cos()
                + 0.2 * (fx * 0.07 + y as f32 * 0.11).sin();
            let b = (v * 255.0).clamp(0.0, 255.0) as u8;
            image::Rgb([b, b / 2, 255 - b])
        })
    }

    #[test]
    fn warping_the_previous_frame_lands_on_the_current_one() {
        let (w, h) = (64, 48);
        let previous = textured(w, h, 0.0);
        let current = textured(w, h, 2.0);
        let flow = InputFlow::estimate(
            &luma(&previous),
            &luma(&current),
            true,
            &FlowParams::default(),
        );
        let (warped, inside) = flow.warp_to_current(&previous);
        let trusted = flow.trusted();
        let mut err = 0.0;
        let mut n = 0;
        let mut unwarped = 0.0;
        for i in 0..(w * h) as usize {
            if !(trusted[i] && inside[i]) {
                continue;
            }
            err += (warped.as_raw()[i * 3] as f64 - current.as_raw()[i * 3] as f64).abs();
            unwarped += (previous.as_raw()[i * 3] as f64 - current.as_raw()[i * 3] as f64).abs();
            n += 1;
        }
        assert!(n > (w * h) as usize / 2, "too few trusted pixels: {n}");
        let (err, unwarped) = (err / n as f64, unwarped / n as f64);
        assert!(
            err < 0.25 * unwarped,
            "warped error {err} vs unwarped {unwarped}"
        );
        // The columns entering from the left have no source in the previous frame.
        assert!(!trusted[0] || !inside[0] || flow.to_previous.at(0, 0).0 > -1.0);
    }

    #[test]
    fn without_the_reverse_flow_only_inside_is_checked() {
        let mut flow = InputFlow {
            to_previous: FlowField::zeros(4, 2),
            from_previous: None,
        };
        flow.to_previous.u.data.iter_mut().for_each(|u| *u = -1.0);
        let trusted = flow.trusted();
        assert_eq!(
            trusted,
            vec![false, true, true, true, false, true, true, true]
        );
    }
}
