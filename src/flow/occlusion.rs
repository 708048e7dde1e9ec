//! Forward–backward consistency (Sundaram et al. 2010; the check used by Ruder et al. and
//! the Rerender/warp-error literature): a pixel is trusted when following the forward flow
//! and then the backward flow returns close to where it started.

use super::field::FlowField;

/// `true` where `forward` (frame t → t+1) and `backward` (t+1 → t) agree and the forward
/// target lies inside the frame.
pub fn consistency_mask(forward: &FlowField, backward: &FlowField) -> Vec<bool> {
    let (w, h) = (forward.width(), forward.height());
    let mut mask = vec![false; w * h];
    for y in 0..h {
        for x in 0..w {
            let (fu, fv) = forward.at(x, y);
            let tx = x as f32 + fu;
            let ty = y as f32 + fv;
            if tx < 0.0 || ty < 0.0 || tx > (w - 1) as f32 || ty > (h - 1) as f32 {
                continue;
            }
            let (bu, bv) = backward.sample(tx, ty);
            let round_trip = (fu + bu).powi(2) + (fv + bv).powi(2);
            let magnitudes = fu * fu + fv * fv + bu * bu + bv * bv;
            mask[y * w + x] = round_trip <= 0.01 * magnitudes + 0.5;
        }
    }
    mask
}

#[cfg(test)]
mod tests {
    use super::*;

    fn constant(w: usize, h: usize, u: f32, v: f32) -> FlowField {
        let mut f = FlowField::zeros(w, h);
        f.u.data.iter_mut().for_each(|d| *d = u);
        f.v.data.iter_mut().for_each(|d| *d = v);
        f
    }

    #[test]
    fn consistent_translation_is_trusted_except_where_it_leaves_the_frame() {
        let mask = consistency_mask(&constant(8, 4, 3.0, 0.0), &constant(8, 4, -3.0, 0.0));
        for y in 0..4 {
            for x in 0..8 {
                assert_eq!(mask[y * 8 + x], x + 3 < 8, "pixel ({x},{y})");
            }
        }
    }

    #[test]
    fn disagreeing_flows_are_masked() {
        let mask = consistency_mask(&constant(8, 4, 2.0, 0.0), &constant(8, 4, 2.0, 0.0));
        assert!(mask.iter().all(|m| !m));
    }
}
