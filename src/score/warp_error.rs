//! Warp error of one frame pair (docs/ARCHITECTURE.md, "Temporal metrics").

use crate::flow::{consistency_mask, warp_rgb, FlowField};

/// Masked MSE between frame t and frame t+1 warped back to t by `forward` (flow t → t+1,
/// computed on the *input* video), over the pixels the forward–backward check trusts.
/// Values are in [0, 1]² units (RGB scaled to [0, 1], averaged over channels).
/// `None` when no pixel is trusted (e.g. a scene cut).
pub fn pair_warp_error(
    frame_t: &[u8],
    frame_t1: &[u8],
    forward: &FlowField,
    backward: &FlowField,
) -> Option<f64> {
    let trusted = consistency_mask(forward, backward);
    let (warped, inside) = warp_rgb(frame_t1, forward);
    let mut sum = 0.0f64;
    let mut count = 0usize;
    for (i, (&ok, &in_frame)) in trusted.iter().zip(&inside).enumerate() {
        if !(ok && in_frame) {
            continue;
        }
        for c in 0..3 {
            let d = (frame_t[i * 3 + c] as f64 - warped[i * 3 + c] as f64) / 255.0;
            sum += d * d;
        }
        count += 3;
    }
    (count > 0).then(|| sum / count as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn constant_flow(w: usize, h: usize, u: f32) -> FlowField {
        let mut f = FlowField::zeros(w, h);
        f.u.data.iter_mut().for_each(|d| *d = u);
        f
    }

    #[test]
    fn a_frame_moved_exactly_by_the_flow_has_zero_error() {
        let (w, h) = (8, 3);
        let t1: Vec<u8> = (0..w * h * 3).map(|i| (i * 13 % 256) as u8).collect();
        // Frame t is frame t+1 shifted right by 1 px: t(x) = t1(x + 1).
        let mut t = vec![0u8; w * h * 3];
        for y in 0..h {
            for x in 0..w - 1 {
                for c in 0..3 {
                    t[(y * w + x) * 3 + c] = t1[(y * w + x + 1) * 3 + c];
                }
            }
        }
        let e = pair_warp_error(
            &t,
            &t1,
            &constant_flow(w, h, 1.0),
            &constant_flow(w, h, -1.0),
        );
        assert_eq!(e, Some(0.0));
    }

    #[test]
    fn a_uniform_brightness_change_gives_its_square() {
        let (w, h) = (4, 4);
        let t = vec![100u8; w * h * 3];
        let t1 = vec![151u8; w * h * 3];
        let zero = FlowField::zeros(w, h);
        let e = pair_warp_error(&t, &t1, &zero, &zero).unwrap();
        assert!((e - 0.04).abs() < 1e-12, "error {e}");
    }
}
