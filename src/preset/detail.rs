//! The preset section `detail:` (face and hand detailing). Off unless a section says
//! `enabled: true`:
//!
//! ```yaml
//! detail:
//!   face:
//!     enabled: true
//!     prompt: null            # null: the preset's prompt
//!     negative_prompt: null   # null: the preset's negative prompt
//!     denoise: 0.4            # img2img strength of the detail pass, (0, 1]
//!     steps: 20               # scheduler steps for strength 1 (denoise × steps run)
//!     cfg_scale: 7.0
//!     padding: 0.3            # crop = keypoint box grown by 30 % of its side on each side
//!                             # (more if the mask below needs the room)
//!     mask_grow: 0.1          # mask = keypoint hull grown by 10 % of the keypoint box
//!     min_size: 32            # smallest crop side in frame pixels
//!     resolution: 512         # long side of the crop while detailing (multiple of 8)
//!     feather: 16             # mask fade-out in frame pixels
//!     controlnet: false       # openpose ControlNet on the crop (the preset's openpose model)
//!     controlnet_scale: 1.0
//!   hands: { enabled: true }  # same keys; defaults denoise 0.5, controlnet true
//!   smoothing: { min_cutoff: 0.5, beta: 4.0, d_cutoff: 1.0 }   # One-Euro on crop boxes
//! ```
//!
//! Partial sections keep the defaults of *their* part for the keys they leave out (a
//! `hands:` section without `controlnet` still uses the ControlNet).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

use crate::preset::{check_control_scale, check_strength, checked};

/// Settings of both parts and the box smoothing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetailSettings {
    #[serde(default = "RegionSettings::face", deserialize_with = "face_section")]
    pub face: RegionSettings,
    #[serde(default = "RegionSettings::hands", deserialize_with = "hands_section")]
    pub hands: RegionSettings,
    #[serde(default)]
    pub smoothing: BoxSmoothing,
}

impl Default for DetailSettings {
    fn default() -> Self {
        DetailSettings {
            face: RegionSettings::face(),
            hands: RegionSettings::hands(),
            smoothing: BoxSmoothing::default(),
        }
    }
}

/// How one part (faces, or hands) is detailed.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RegionSettings {
    pub enabled: bool,
    /// `None`: the preset's prompt.
    pub prompt: Option<String>,
    /// `None`: the preset's negative prompt.
    pub negative_prompt: Option<String>,
    /// img2img strength of the detail pass.
    pub denoise: f32,
    pub steps: u32,
    pub cfg_scale: f32,
    /// The crop's side is the keypoints' longer extent × (1 + 2 · padding), or more when the
    /// mask (grown and feathered) needs the room.
    pub padding: f32,
    /// The mask reaches `mask_grow` × the keypoints' longer extent past their hull.
    pub mask_grow: f32,
    /// Smallest crop side, in frame pixels.
    pub min_size: u32,
    /// Long side of the crop while it is detailed (a multiple of 8).
    pub resolution: u32,
    /// Width of the mask's fade-out, in frame pixels.
    pub feather: u32,
    /// Guide the pass with the openpose ControlNet, the part's keypoints drawn on the crop.
    pub controlnet: bool,
    pub controlnet_scale: f32,
}

impl RegionSettings {
    /// Face defaults: a light touch, no ControlNet (the face points drawn as dots add little).
    pub fn face() -> Self {
        RegionSettings {
            enabled: false,
            prompt: None,
            negative_prompt: None,
            denoise: 0.4,
            steps: 20,
            cfg_scale: 7.0,
            padding: 0.3,
            mask_grow: 0.1,
            min_size: 32,
            resolution: 512,
            feather: 16,
            controlnet: false,
            controlnet_scale: 1.0,
        }
    }

    /// Hand defaults: stronger, and with the openpose ControlNet holding the fingers in place.
    pub fn hands() -> Self {
        RegionSettings {
            denoise: 0.5,
            mask_grow: 0.15,
            controlnet: true,
            ..Self::face()
        }
    }

    pub fn geometry(&self) -> RegionGeometry {
        RegionGeometry {
            padding: self.padding,
            mask_grow: self.mask_grow,
            mask_reach: self.feather as f32,
            min_side: self.min_size as f32,
        }
    }

    fn apply(mut self, raw: RawRegionSettings) -> Self {
        macro_rules! take {
            ($($field:ident),*) => {$(
                if let Some(v) = raw.$field {
                    self.$field = v;
                }
            )*};
        }
        take!(
            enabled,
            denoise,
            steps,
            cfg_scale,
            padding,
            mask_grow,
            min_size,
            resolution,
            feather,
            controlnet,
            controlnet_scale
        );
        if raw.prompt.is_some() {
            self.prompt = raw.prompt;
        }
        if raw.negative_prompt.is_some() {
            self.negative_prompt = raw.negative_prompt;
        }
        self
    }

    /// Every rule the parser checks; errors name the field (`denoise`).
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        check_strength(self.denoise).map_err(|m| ("denoise", m))?;
        check_steps(self.steps).map_err(|m| ("steps", m))?;
        check_cfg(self.cfg_scale).map_err(|m| ("cfg_scale", m))?;
        check_padding(self.padding).map_err(|m| ("padding", m))?;
        check_mask_grow(self.mask_grow).map_err(|m| ("mask_grow", m))?;
        check_min_size(self.min_size).map_err(|m| ("min_size", m))?;
        check_resolution(self.resolution).map_err(|m| ("resolution", m))?;
        check_feather(self.feather).map_err(|m| ("feather", m))?;
        check_control_scale(self.controlnet_scale).map_err(|m| ("controlnet_scale", m))?;
        Ok(())
    }
}

impl DetailSettings {
    /// The settings of the section that details `kind`.
    pub fn for_kind(&self, kind: RegionKind) -> &RegionSettings {
        if kind.is_hand() {
            &self.hands
        } else {
            &self.face
        }
    }

    /// Whether any part is detailed.
    pub fn any_enabled(&self) -> bool {
        self.face.enabled || self.hands.enabled
    }

    /// Every rule the parser checks; errors name the field (`hands.denoise`).
    pub fn validate(&self) -> Result<(), (String, String)> {
        for (section, settings) in [("face", &self.face), ("hands", &self.hands)] {
            settings
                .validate()
                .map_err(|(field, m)| (format!("{section}.{field}"), m))?;
        }
        let s = &self.smoothing;
        for (field, value) in [
            ("min_cutoff", s.min_cutoff),
            ("beta", s.beta),
            ("d_cutoff", s.d_cutoff),
        ] {
            let ok = value.is_finite() && value >= 0.0 && (field == "beta" || value > 0.0);
            if !ok {
                return Err((
                    format!("smoothing.{field}"),
                    format!("must be a finite number above 0 (beta: at least 0), got {value}"),
                ));
            }
        }
        Ok(())
    }
}

impl fmt::Display for RegionSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "denoise {}, {} steps, cfg {}, {} px{}",
            self.denoise,
            self.steps,
            self.cfg_scale,
            self.resolution,
            if self.controlnet { ", openpose" } else { "" }
        )
    }
}

/// A section as written: every key optional, each checked where it stands.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegionSettings {
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    prompt: Option<String>,
    #[serde(default)]
    negative_prompt: Option<String>,
    #[serde(default, deserialize_with = "denoise_in_range")]
    denoise: Option<f32>,
    #[serde(default, deserialize_with = "steps_in_range")]
    steps: Option<u32>,
    #[serde(default, deserialize_with = "cfg_in_range")]
    cfg_scale: Option<f32>,
    #[serde(default, deserialize_with = "padding_in_range")]
    padding: Option<f32>,
    #[serde(default, deserialize_with = "mask_grow_in_range")]
    mask_grow: Option<f32>,
    #[serde(default, deserialize_with = "min_size_in_range")]
    min_size: Option<u32>,
    #[serde(default, deserialize_with = "resolution_in_range")]
    resolution: Option<u32>,
    #[serde(default, deserialize_with = "feather_in_range")]
    feather: Option<u32>,
    #[serde(default)]
    controlnet: Option<bool>,
    #[serde(default, deserialize_with = "control_scale_in_range")]
    controlnet_scale: Option<f32>,
}

fn face_section<'de, D: Deserializer<'de>>(d: D) -> Result<RegionSettings, D::Error> {
    Ok(RegionSettings::face().apply(RawRegionSettings::deserialize(d)?))
}

fn hands_section<'de, D: Deserializer<'de>>(d: D) -> Result<RegionSettings, D::Error> {
    Ok(RegionSettings::hands().apply(RawRegionSettings::deserialize(d)?))
}

// ---- rules ----

fn check_steps(v: u32) -> Result<(), String> {
    if (1..=1000).contains(&v) {
        Ok(())
    } else {
        Err(format!("must be between 1 and 1000, got {v}"))
    }
}

fn check_cfg(v: f32) -> Result<(), String> {
    if v.is_finite() && (0.0..=30.0).contains(&v) {
        Ok(())
    } else {
        Err(format!("must be between 0 and 30, got {v}"))
    }
}

fn check_padding(v: f32) -> Result<(), String> {
    if v.is_finite() && (0.0..=2.0).contains(&v) {
        Ok(())
    } else {
        Err(format!("must be between 0 and 2, got {v}"))
    }
}

fn check_mask_grow(v: f32) -> Result<(), String> {
    if v.is_finite() && (0.0..=1.0).contains(&v) {
        Ok(())
    } else {
        Err(format!("must be between 0 and 1, got {v}"))
    }
}

fn check_min_size(v: u32) -> Result<(), String> {
    if (1..=4096).contains(&v) {
        Ok(())
    } else {
        Err(format!("must be between 1 and 4096 pixels, got {v}"))
    }
}

fn check_resolution(v: u32) -> Result<(), String> {
    if !(32..=2048).contains(&v) {
        Err(format!("must be between 32 and 2048 pixels, got {v}"))
    } else if !v.is_multiple_of(8) {
        Err(format!("must be a multiple of 8, got {v}"))
    } else {
        Ok(())
    }
}

fn check_feather(v: u32) -> Result<(), String> {
    if v <= 256 {
        Ok(())
    } else {
        Err(format!("must be between 0 and 256 pixels, got {v}"))
    }
}

fn denoise_in_range<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f32>, D::Error> {
    checked(d, check_strength).map(Some)
}

fn steps_in_range<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    checked(d, check_steps).map(Some)
}

fn cfg_in_range<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f32>, D::Error> {
    checked(d, check_cfg).map(Some)
}

fn padding_in_range<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f32>, D::Error> {
    checked(d, check_padding).map(Some)
}

fn mask_grow_in_range<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f32>, D::Error> {
    checked(d, check_mask_grow).map(Some)
}

fn min_size_in_range<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    checked(d, check_min_size).map(Some)
}

fn resolution_in_range<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    checked(d, check_resolution).map(Some)
}

fn feather_in_range<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    checked(d, check_feather).map(Some)
}

fn control_scale_in_range<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f32>, D::Error> {
    checked(d, check_control_scale).map(Some)
}

/// What a region shows. Left and right are the person's own, as in OpenPose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RegionKind {
    Face,
    LeftHand,
    RightHand,
}

impl RegionKind {
    pub const ALL: [RegionKind; 3] = [
        RegionKind::Face,
        RegionKind::LeftHand,
        RegionKind::RightHand,
    ];

    pub fn is_hand(self) -> bool {
        matches!(self, RegionKind::LeftHand | RegionKind::RightHand)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RegionKind::Face => "face",
            RegionKind::LeftHand => "left hand",
            RegionKind::RightHand => "right hand",
        }
    }
}

impl fmt::Display for RegionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a part's keypoints become a region.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RegionGeometry {
    /// See [`padded_square`].
    pub padding: f32,
    /// How far the mask reaches past the keypoints: `mask_grow` × their longer extent plus
    /// `mask_reach` pixels. The crop leaves room for it (and one pixel more).
    pub mask_grow: f32,
    pub mask_reach: f32,
    pub min_side: f32,
}

/// One-Euro parameters for region boxes (`detail.smoothing` in presets). Speeds are in box
/// sides per second, cutoffs in Hz.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BoxSmoothing {
    /// Cutoff at rest: low, so a still face's crop does not tremble with keypoint noise.
    pub min_cutoff: f64,
    /// Cutoff increase per side/second of speed: a moving hand's crop keeps up with it.
    pub beta: f64,
    /// Cutoff of the speed estimate.
    pub d_cutoff: f64,
}

impl Default for BoxSmoothing {
    fn default() -> Self {
        BoxSmoothing {
            min_cutoff: 0.5,
            beta: 4.0,
            d_cutoff: 1.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preset::Preset;

    const BASE: &str = "model: {base: x}\nprompt: p\n";

    fn parse(detail: &str) -> Result<Preset, crate::preset::PresetError> {
        Preset::from_yaml(&format!("{BASE}{detail}"), "t.yaml")
    }

    #[test]
    fn detailing_is_off_by_default() {
        let p = parse("").unwrap();
        assert_eq!(p.detail, DetailSettings::default());
        assert!(!p.detail.any_enabled());
        assert_eq!(p.detail.face.denoise, 0.4);
        assert_eq!(p.detail.hands.denoise, 0.5);
        assert!(p.detail.hands.controlnet && !p.detail.face.controlnet);
        for s in [&p.detail.face, &p.detail.hands] {
            assert!((0.35..=0.6).contains(&s.denoise));
            s.validate().unwrap();
        }
        p.detail.validate().unwrap();
    }

    #[test]
    fn partial_sections_keep_their_own_defaults() {
        let p = parse(
            "detail:\n  face: {enabled: true, prompt: a face}\n  hands:\n    enabled: true\n    steps: 8\n",
        )
        .unwrap();
        assert!(p.detail.face.enabled && p.detail.hands.enabled);
        assert_eq!(p.detail.face.prompt.as_deref(), Some("a face"));
        assert_eq!(p.detail.face.negative_prompt, None);
        assert_eq!(p.detail.hands.steps, 8);
        assert_eq!(p.detail.hands.denoise, 0.5);
        assert!(p.detail.hands.controlnet);
        assert!(!p.detail.face.controlnet);
        assert_eq!(p.detail.smoothing, BoxSmoothing::default());
    }

    #[test]
    fn errors_are_located_at_the_offending_value() {
        let err = parse("detail:\n  hands:\n    denoise: 1.5\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("t.yaml:5:14"), "{err}");
        assert!(
            err.contains("detail.hands.denoise") && err.contains("(0, 1]"),
            "{err}"
        );

        let err = parse("detail:\n  face:\n    resolution: 500\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("detail.face.resolution") && err.contains("multiple of 8"),
            "{err}"
        );

        let err = parse("detail:\n  face:\n    strength: 0.4\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `strength`"), "{err}");

        let err = parse("detail:\n  smoothing: {alpha: 1}\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `alpha`"), "{err}");

        let err = parse("detail:\n  feet: {}\n").unwrap_err().to_string();
        assert!(err.contains("unknown field `feet`"), "{err}");
    }

    #[test]
    fn validate_catches_values_set_in_code() {
        let mut s = DetailSettings::default();
        s.hands.feather = 1000;
        let (field, message) = s.validate().unwrap_err();
        assert_eq!(field, "hands.feather");
        assert!(message.contains("256"), "{message}");
        let mut s = DetailSettings::default();
        s.smoothing.min_cutoff = 0.0;
        assert_eq!(s.validate().unwrap_err().0, "smoothing.min_cutoff");
    }

    #[test]
    fn settings_follow_their_kind() {
        let s = DetailSettings::default();
        assert_eq!(s.for_kind(RegionKind::Face), &s.face);
        assert_eq!(s.for_kind(RegionKind::RightHand), &s.hands);
        assert_eq!(s.face.geometry().padding, 0.3);
        assert_eq!(s.face.geometry().min_side, 32.0);
    }
}
