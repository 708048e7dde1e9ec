//! Temporal smoothing of keypoints with the One-Euro filter (Casiez et al., CHI 2012), as
//! MediaPipe applies it to landmarks (`mediapipe/util/filtering/one_euro_filter.cc`,
//! `low_pass_filter.cc`, `calculators/util/landmarks_smoothing_calculator_utils.cc`):
//!
//! * the derivative is taken from the previous *raw* value, low-passed at `d_cutoff`;
//! * the cutoff grows with speed: `min_cutoff + beta · |ẋ|`;
//! * with value scaling, speeds are measured in object sizes per second (`1 / object_scale`,
//!   the mean of the keypoints' bounding-box width and height), so the same settings work
//!   for a face filling the frame and a person far away.

use crate::preprocess::openpose::keypoints::Keypoint;
use crate::preset::pose::OneEuroParams;

/// First-order low-pass filter remembering the last raw input.
#[derive(Debug, Clone, Default)]
struct LowPass {
    state: Option<(f64, f64)>, // (last raw value, last filtered value)
}

impl LowPass {
    fn apply(&mut self, value: f64, alpha: f64) -> f64 {
        let filtered = match self.state {
            Some((_, prev)) => alpha * value + (1.0 - alpha) * prev,
            None => value,
        };
        self.state = Some((value, filtered));
        filtered
    }

    fn last_raw(&self) -> Option<f64> {
        self.state.map(|(raw, _)| raw)
    }
}

/// A One-Euro filter over one scalar signal.
#[derive(Debug, Clone)]
pub struct OneEuroFilter {
    params: OneEuroParams,
    x: LowPass,
    dx: LowPass,
    last_time: Option<f64>,
    frequency: f64,
}

/// Smoothing factor of a low-pass filter with the given cutoff at the given rate.
fn alpha(cutoff: f64, frequency: f64) -> f64 {
    let te = 1.0 / frequency;
    let tau = 1.0 / (2.0 * std::f64::consts::PI * cutoff);
    1.0 / (1.0 + tau / te)
}

impl OneEuroFilter {
    /// `frequency` (Hz) is used until two timestamps give the real rate.
    pub fn new(params: OneEuroParams, frequency: f64) -> Self {
        OneEuroFilter {
            params,
            x: LowPass::default(),
            dx: LowPass::default(),
            last_time: None,
            frequency,
        }
    }

    /// Filters `value` observed at `time` seconds. `value_scale` multiplies the speed (1 for
    /// none). Timestamps that do not increase return the value unchanged, as MediaPipe does.
    pub fn filter(&mut self, time: f64, value: f64, value_scale: f64) -> f64 {
        if let Some(last) = self.last_time {
            if time <= last {
                return value;
            }
            self.frequency = 1.0 / (time - last);
        }
        self.last_time = Some(time);
        let speed = match self.x.last_raw() {
            Some(prev) => (value - prev) * value_scale * self.frequency,
            None => 0.0,
        };
        let smoothed_speed = self
            .dx
            .apply(speed, alpha(self.params.d_cutoff, self.frequency));
        let cutoff = self.params.min_cutoff + self.params.beta * smoothed_speed.abs();
        self.x.apply(value, alpha(cutoff, self.frequency))
    }
}

/// Mean of the bounding-box width and height of the present points (MediaPipe's
/// `GetObjectScale`); `None` without present points.
pub fn object_scale(points: &[Keypoint]) -> Option<f64> {
    let mut present = points.iter().filter(|p| p.is_present());
    let first = present.next()?;
    let (mut x0, mut x1, mut y0, mut y1) = (first.x, first.x, first.y, first.y);
    for p in present {
        x0 = x0.min(p.x);
        x1 = x1.max(p.x);
        y0 = y0.min(p.y);
        y1 = y1.max(p.y);
    }
    Some(((x1 - x0) + (y1 - y0)) as f64 / 2.0)
}

/// Smooths a fixed-size keypoint set (a body, a hand or a face) over time, one One-Euro
/// filter per coordinate. A point that goes missing restarts its filters when it returns, so
/// a re-detected part is not dragged from where it was lost.
#[derive(Debug, Clone)]
pub struct KeypointSmoother {
    params: OneEuroParams,
    frequency: f64,
    filters: Vec<Option<(OneEuroFilter, OneEuroFilter)>>,
}

/// Below this object size (pixels) speeds are not scaled (MediaPipe's
/// `min_allowed_object_scale` guards against dividing by ~0).
const MIN_OBJECT_SCALE: f64 = 1e-6;

impl KeypointSmoother {
    pub fn new(params: OneEuroParams, frequency: f64) -> Self {
        KeypointSmoother {
            params,
            frequency,
            filters: Vec::new(),
        }
    }

    /// Forgets all history (the part was lost).
    pub fn reset(&mut self) {
        self.filters.clear();
    }

    /// Smooths `points` in place for the frame at `time` seconds.
    pub fn smooth(&mut self, time: f64, points: &mut [Keypoint]) {
        let Some(scale) = object_scale(points) else {
            self.reset();
            return;
        };
        if scale < MIN_OBJECT_SCALE {
            return;
        }
        let value_scale = 1.0 / scale;
        if self.filters.len() != points.len() {
            self.filters = vec![None; points.len()];
        }
        for (p, slot) in points.iter_mut().zip(self.filters.iter_mut()) {
            if !p.is_present() {
                *slot = None;
                continue;
            }
            let (fx, fy) = slot.get_or_insert_with(|| {
                (
                    OneEuroFilter::new(self.params, self.frequency),
                    OneEuroFilter::new(self.params, self.frequency),
                )
            });
            p.x = fx.filter(time, p.x as f64, value_scale) as f32;
            p.y = fy.filter(time, p.y as f64, value_scale) as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: f64 = 30.0;

    // Hand-computed: alpha(c) = 1 / (1 + 30 / (2π c)).
    // alpha(1) = 1 / (1 + 4.774648) = 0.1731707.

    #[test]
    fn with_zero_beta_it_is_a_plain_low_pass() {
        let p = OneEuroParams {
            min_cutoff: 1.0,
            beta: 0.0,
            d_cutoff: 1.0,
        };
        let mut f = OneEuroFilter::new(p, F);
        assert_eq!(f.filter(0.0, 0.0, 1.0), 0.0);
        let y1 = f.filter(1.0 / F, 1.0, 1.0);
        assert!((y1 - 0.1731707).abs() < 1e-6, "{y1}");
        // y2 = a·1 + (1 − a)·y1
        let y2 = f.filter(2.0 / F, 1.0, 1.0);
        assert!(
            (y2 - (0.1731707 + 0.8268293 * 0.1731707)).abs() < 1e-6,
            "{y2}"
        );
    }

    #[test]
    fn speed_raises_the_cutoff() {
        let p = OneEuroParams {
            min_cutoff: 1.0,
            beta: 0.1,
            d_cutoff: 1.0,
        };
        let mut f = OneEuroFilter::new(p, F);
        f.filter(0.0, 0.0, 1.0);
        // speed 30/s → smoothed 0.1731707·30 = 5.195122 → cutoff 1.5195122
        // alpha(1.5195122) = 1 / (1 + 30 / 9.547517) = 0.2414162 → y = 0.2414162
        let y1 = f.filter(1.0 / F, 1.0, 1.0);
        assert!((y1 - 0.2414162).abs() < 1e-6, "{y1}");
        // raw speed (3 − 1)·30 = 60 → smoothed 0.1731707·60 + 0.8268293·5.195122 = 14.685722
        // cutoff 2.4685722 → alpha 0.3408114 → y = 0.3408114·3 + 0.6591886·0.2414162 = 1.181573
        let y2 = f.filter(2.0 / F, 3.0, 1.0);
        assert!((y2 - 1.181573).abs() < 1e-5, "{y2}");
    }

    #[test]
    fn value_scale_divides_speed_by_object_size() {
        let p = OneEuroParams {
            min_cutoff: 1.0,
            beta: 0.1,
            d_cutoff: 1.0,
        };
        // The same motion on an object 10× bigger with value_scale 1/10 filters identically.
        let mut a = OneEuroFilter::new(p, F);
        let mut b = OneEuroFilter::new(p, F);
        a.filter(0.0, 0.0, 1.0);
        b.filter(0.0, 0.0, 0.1);
        let ya = a.filter(1.0 / F, 1.0, 1.0);
        let yb = b.filter(1.0 / F, 10.0, 0.1);
        assert!((ya * 10.0 - yb).abs() < 1e-9);
    }

    #[test]
    fn non_increasing_time_passes_value_through() {
        let mut f = OneEuroFilter::new(OneEuroParams::default(), F);
        f.filter(1.0, 5.0, 1.0);
        assert_eq!(f.filter(1.0, 7.0, 1.0), 7.0);
    }

    #[test]
    fn smoother_restarts_points_that_went_missing() {
        // beta = 0: a plain low pass, so the object scale does not matter.
        let params = OneEuroParams {
            min_cutoff: 1.0,
            beta: 0.0,
            d_cutoff: 1.0,
        };
        let anchor = Keypoint::new(50.0, 50.0, 1.0);
        let mut s = KeypointSmoother::new(params, F);
        let mut pts = [
            Keypoint::new(0.0, 0.0, 1.0),
            Keypoint::new(10.0, 10.0, 1.0),
            anchor,
        ];
        s.smooth(0.0, &mut pts);
        let mut pts2 = [Keypoint::new(1.0, 0.0, 1.0), Keypoint::MISSING, anchor];
        s.smooth(1.0 / F, &mut pts2);
        assert!((pts2[0].x - 0.1731707).abs() < 1e-6, "{:?}", pts2[0]);
        assert_eq!(pts2[1], Keypoint::MISSING);
        // The second point comes back far away: no lag from its old position.
        let mut pts3 = [
            Keypoint::new(1.0, 0.0, 1.0),
            Keypoint::new(100.0, 50.0, 1.0),
            anchor,
        ];
        s.smooth(2.0 / F, &mut pts3);
        assert_eq!((pts3[1].x, pts3[1].y), (100.0, 50.0));
        assert_eq!((pts3[2].x, pts3[2].y), (50.0, 50.0));
    }

    #[test]
    fn object_scale_is_mean_of_box_sides() {
        let pts = [
            Keypoint::new(0.0, 0.0, 1.0),
            Keypoint::new(10.0, 4.0, 1.0),
            Keypoint::new(500.0, 500.0, 0.0),
        ];
        assert_eq!(object_scale(&pts), Some(7.0));
        assert_eq!(object_scale(&[Keypoint::MISSING]), None);
    }
}
