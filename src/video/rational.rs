//! The choice of a sensible output rate from what a container says about its stream.

use crate::preset::rational::{snap_to_standard, Rational, MAX_FPS, MAX_PLAIN_DENOMINATOR};

/// Whether a rate read from a container can be believed (not 0/0, not a time base).
pub fn is_plausible_rate(rate: Rational) -> bool {
    let v = rate.as_f64();
    (0.1..=MAX_FPS).contains(&v)
}

/// Output rate for a stream: its average rate, else its base rate, else the rate measured
/// from the packets, else 24; snapped to a standard rate when close, otherwise rounded to a
/// multiple of 1/100 (a VFR phone clip averaging 8363/280 fps becomes 2987/100).
pub fn choose_output_fps(
    avg_frame_rate: Option<Rational>,
    base_frame_rate: Option<Rational>,
    measured_rate: Option<f64>,
) -> Rational {
    let candidate = avg_frame_rate
        .filter(|r| is_plausible_rate(*r))
        .or_else(|| base_frame_rate.filter(|r| is_plausible_rate(*r)))
        .map(Rational::as_f64)
        .or_else(|| measured_rate.filter(|v| *v >= 0.1 && *v <= MAX_FPS));
    let Some(value) = candidate else {
        return Rational { num: 24, den: 1 };
    };
    if let Some(standard) = snap_to_standard(value) {
        return standard;
    }
    // Exact small rationals (e.g. 1/2 for a slideshow) are kept as they are.
    if let Some(exact) = avg_frame_rate.or(base_frame_rate) {
        if exact.as_f64() == value && exact.den <= MAX_PLAIN_DENOMINATOR {
            return exact;
        }
    }
    Rational::rounded(value, MAX_PLAIN_DENOMINATOR).unwrap_or(Rational { num: 24, den: 1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(num: u32, den: u32) -> Rational {
        Rational::new(num, den).unwrap()
    }

    #[test]
    fn output_fps_prefers_average_then_base_then_measured() {
        assert_eq!(
            choose_output_fps(Some(r(24, 1)), Some(r(48, 1)), None),
            r(24, 1)
        );
        // A 90 kHz time base is not a frame rate.
        assert_eq!(
            choose_output_fps(Some(r(90000, 1)), Some(r(25, 1)), None),
            r(25, 1)
        );
        assert_eq!(choose_output_fps(None, None, Some(29.97)), r(30000, 1001));
        assert_eq!(choose_output_fps(None, None, None), r(24, 1));
    }

    #[test]
    fn output_fps_snaps_and_rounds() {
        // avg_frame_rate of a 2997-frame, 100.0-second clip.
        assert_eq!(
            choose_output_fps(Some(r(2997, 100)), None, None),
            r(30000, 1001)
        );
        // A VFR average that is near no standard rate.
        assert_eq!(
            choose_output_fps(Some(r(8363, 280)), None, None),
            r(2987, 100)
        );
        // Slow slideshow rates stay exact.
        assert_eq!(choose_output_fps(Some(r(1, 2)), None, None), r(1, 2));
    }
}
