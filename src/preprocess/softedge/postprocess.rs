//! Edge probabilities → 8-bit soft-edge map, as ControlNet's annotator does it
//! (controlnet_aux 0.0.10, `hed/__init__.py` `HEDdetector.__call__` and `util.safe_step`):
//! ```python
//! if safe: edge = safe_step(edge)
//! edge = (edge * 255.0).clip(0, 255).astype(np.uint8)
//! ```
//! `astype(np.uint8)` truncates toward zero.

/// controlnet_aux `safe_step(x, step)`: `floor(x·(step + 1)) / step` in f32, with the
/// truncating `astype(np.int32)`. With `step = 2` it maps [0, 1] to {0, 0.5, 1, 1.5}: faint
/// edges vanish and the rest become flat levels (the "safe" soft-edge variant).
pub fn safe_step(x: f32, step: u32) -> f32 {
    let y = x * (step + 1) as f32;
    (y as i32) as f32 / step as f32
}

/// The `step` controlnet_aux's HED detector uses for `safe=True`.
pub const SAFE_STEP: u32 = 2;

/// One edge probability → u8 (`safe` selects the [`safe_step`] variant). The probability is
/// widened to f64 first because controlnet_aux's edge array is float64.
pub fn edge_to_u8(probability: f32, safe: bool) -> u8 {
    let edge = if safe {
        safe_step(probability, SAFE_STEP)
    } else {
        probability
    };
    // `as u8` truncates toward zero like numpy's cast; the clamp is numpy's clip.
    (edge as f64 * 255.0).clamp(0.0, 255.0) as u8
}

/// Map a whole probability image (row-major, one value per pixel) to u8.
pub fn edges_to_u8(probabilities: &[f32], safe: bool) -> Vec<u8> {
    probabilities.iter().map(|&p| edge_to_u8(p, safe)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_step_quantises_to_half_steps() {
        // Around the thresholds; the same values come out of controlnet_aux 0.0.10 util.safe_step.
        let cases = [
            (0.0, 0.0),
            (0.3333, 0.0),
            (0.3334, 0.5),
            (0.5, 0.5),
            (0.6666, 0.5),
            (0.6667, 1.0),
            (0.99, 1.0),
            (1.0, 1.5),
        ];
        for (x, want) in cases {
            assert_eq!(safe_step(x, 2), want, "safe_step({x})");
        }
        assert_eq!(safe_step(0.74, 3), 2.0 / 3.0);
    }

    #[test]
    fn u8_conversion_truncates_and_clips() {
        assert_eq!(edge_to_u8(0.0, false), 0);
        assert_eq!(edge_to_u8(1.0, false), 255);
        // 0.5·255 = 127.5 → 127 (truncation, not rounding).
        assert_eq!(edge_to_u8(0.5, false), 127);
        assert_eq!(edge_to_u8(0.999, false), 254);
        assert_eq!(edge_to_u8(1.5, false), 255);
        assert_eq!(edge_to_u8(-0.2, false), 0);
        // Safe: {0, 0.5, 1, 1.5} → {0, 127, 255, 255 (clipped)}.
        assert_eq!(edge_to_u8(0.2, true), 0);
        assert_eq!(edge_to_u8(0.4, true), 127);
        assert_eq!(edge_to_u8(0.7, true), 255);
        assert_eq!(edge_to_u8(1.0, true), 255);
        assert_eq!(edges_to_u8(&[0.1, 0.5, 0.9], false), vec![25, 127, 229]);
    }
}
