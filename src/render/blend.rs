//! Blending the frames two neighbouring batches both rendered (DESIGN.md §2).
//!
//! Across an overlap of n frames the earlier batch's weight falls linearly from 1 towards 0
//! and the later batch's rises, so neither batch's look switches on in one frame. The ramp
//! excludes the end points (weights (k+1)/(n+1)), so every overlapping frame really mixes.

/// Weight of the *later* batch at position `k` (0-based) inside an overlap of `n` frames.
pub fn ramp_weight(k: usize, n: usize) -> f32 {
    assert!(k < n, "position {k} outside an overlap of {n} frames");
    (k + 1) as f32 / (n + 1) as f32
}

/// Pixel-space blend of two renderings of the same frame: `(1 - w)·earlier + w·later`,
/// rounded to nearest. Both are tight RGB24 of the same size.
pub fn blend_frames(earlier: &[u8], later: &[u8], later_weight: f32) -> Vec<u8> {
    assert_eq!(earlier.len(), later.len(), "blended frames differ in size");
    earlier
        .iter()
        .zip(later)
        .map(|(&a, &b)| {
            (a as f32 * (1.0 - later_weight) + b as f32 * later_weight)
                .round()
                .clamp(0.0, 255.0) as u8
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ramp_rises_strictly_inside_zero_and_one() {
        let w: Vec<f32> = (0..10).map(|k| ramp_weight(k, 10)).collect();
        assert!((w[0] - 1.0 / 11.0).abs() < 1e-6);
        assert!((w[9] - 10.0 / 11.0).abs() < 1e-6);
        assert!(w.windows(2).all(|p| p[1] > p[0]));
        // Symmetric: the two batches get mirrored weights.
        for k in 0..10 {
            assert!((ramp_weight(k, 10) + ramp_weight(9 - k, 10) - 1.0).abs() < 1e-6);
        }
    }

    #[test]
    fn single_frame_overlap_is_an_even_mix() {
        assert_eq!(ramp_weight(0, 1), 0.5);
        assert_eq!(
            blend_frames(&[0, 100, 255], &[100, 200, 255], 0.5),
            vec![50, 150, 255]
        );
    }

    #[test]
    fn weights_at_the_extremes_pick_one_frame() {
        let a = [10u8, 20, 30];
        let b = [200u8, 100, 0];
        assert_eq!(blend_frames(&a, &b, 0.0), a.to_vec());
        assert_eq!(blend_frames(&a, &b, 1.0), b.to_vec());
    }
}
