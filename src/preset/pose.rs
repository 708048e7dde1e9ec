//! Pose preprocessing settings: the `preprocess.pose` section of a preset.
//!
//! ```yaml
//! preprocess:
//!   pose:
//!     body: true              # draw / export the 18-point body
//!     hands: true             # run and draw the hand models
//!     face: true              # run and draw the face mesh
//!     min_confidence: 0.5     # keypoints less confident than this are missing
//!     redetect_below: 0.5     # a tracked part whose presence drops below is re-detected
//!     redetect_every: 0       # also re-detect every N frames (0 = only when tracking fails)
//!     hand_search_every: 4    # while a hand is lost, look for it every N frames (1 = always)
//!     smoothing:
//!       enabled: true
//!       min_cutoff: 0.05      # One-Euro parameters (MediaPipe's pose defaults)
//!       beta: 80.0
//!       d_cutoff: 1.0
//! ```

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoseSettings {
    pub body: bool,
    pub hands: bool,
    pub face: bool,
    pub min_confidence: f32,
    pub redetect_below: f32,
    pub redetect_every: u32,
    /// A palm search costs about as much as the body model; while a hand is not tracked
    /// (hidden, out of frame) it runs only every N frames, and at once when the person is
    /// (re)detected. 1 searches on every frame, as MediaPipe Holistic does.
    pub hand_search_every: u32,
    pub smoothing: SmoothingSettings,
}

impl Default for PoseSettings {
    fn default() -> Self {
        PoseSettings {
            body: true,
            hands: true,
            face: true,
            min_confidence: 0.5,
            redetect_below: 0.5,
            redetect_every: 0,
            hand_search_every: 4,
            smoothing: SmoothingSettings::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmoothingSettings {
    pub enabled: bool,
    pub min_cutoff: f64,
    pub beta: f64,
    pub d_cutoff: f64,
}

impl Default for SmoothingSettings {
    fn default() -> Self {
        let p = OneEuroParams::default();
        SmoothingSettings {
            enabled: true,
            min_cutoff: p.min_cutoff,
            beta: p.beta,
            d_cutoff: p.d_cutoff,
        }
    }
}

impl SmoothingSettings {
    pub fn params(&self) -> OneEuroParams {
        OneEuroParams {
            min_cutoff: self.min_cutoff,
            beta: self.beta,
            d_cutoff: self.d_cutoff,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("preprocess.pose.{field} = {value}: {reason}")]
    Invalid {
        field: &'static str,
        value: String,
        reason: &'static str,
    },
}

impl PoseSettings {
    /// Checks value ranges (serde has already rejected unknown keys and wrong types).
    pub fn validate(&self) -> Result<(), SettingsError> {
        let unit = |field: &'static str, v: f32| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(SettingsError::Invalid {
                    field,
                    value: v.to_string(),
                    reason: "must be between 0 and 1",
                })
            }
        };
        unit("min_confidence", self.min_confidence)?;
        unit("redetect_below", self.redetect_below)?;
        let positive = |field: &'static str, v: f64| {
            if v > 0.0 && v.is_finite() {
                Ok(())
            } else {
                Err(SettingsError::Invalid {
                    field,
                    value: v.to_string(),
                    reason: "must be a positive number",
                })
            }
        };
        positive("smoothing.min_cutoff", self.smoothing.min_cutoff)?;
        positive("smoothing.d_cutoff", self.smoothing.d_cutoff)?;
        if !(self.smoothing.beta >= 0.0 && self.smoothing.beta.is_finite()) {
            return Err(SettingsError::Invalid {
                field: "smoothing.beta",
                value: self.smoothing.beta.to_string(),
                reason: "must be zero or positive",
            });
        }
        Ok(())
    }

    /// A stable text form of everything that changes the estimator's output (for caches).
    pub fn cache_key(&self) -> String {
        serde_json::to_string(self).expect("settings serialise")
    }
}

/// One-Euro parameters. MediaPipe's pose landmark defaults (`pose_landmark_filtering.pbtxt`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OneEuroParams {
    /// Cutoff (Hz) at rest: lower = smoother but laggier when still.
    pub min_cutoff: f64,
    /// Speed coefficient: higher = less lag on fast motion.
    pub beta: f64,
    /// Cutoff (Hz) for the speed estimate.
    pub d_cutoff: f64,
}

impl Default for OneEuroParams {
    fn default() -> Self {
        OneEuroParams {
            min_cutoff: 0.05,
            beta: 80.0,
            d_cutoff: 1.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_defaults_and_overrides() {
        let s: PoseSettings =
            serde_yaml_ng::from_str("hands: false\nsmoothing: {beta: 10}").unwrap();
        assert!(!s.hands && s.body && s.face);
        assert_eq!(s.smoothing.beta, 10.0);
        assert_eq!(s.smoothing.min_cutoff, 0.05);
        assert_eq!(s.redetect_below, 0.5);
        s.validate().unwrap();
    }

    #[test]
    fn unknown_keys_and_bad_values_are_rejected() {
        assert!(serde_yaml_ng::from_str::<PoseSettings>("hand: true").is_err());
        let s: PoseSettings = serde_yaml_ng::from_str("min_confidence: 1.5").unwrap();
        let err = s.validate().unwrap_err().to_string();
        assert!(err.contains("min_confidence"), "{err}");
        let s: PoseSettings = serde_yaml_ng::from_str("smoothing: {min_cutoff: 0}").unwrap();
        assert!(s.validate().is_err());
    }
}
