//! The `temporal` section of a preset: which temporal-consistency conditioning the renderer
//! uses (docs/ARCHITECTURE.md, "Data flow"), plus the two switches that exist to measure it
//! against baselines ([`SeedPerFrame`](super::SeedPerFrame) in `sampler`, [`OverlapBlend`](super::OverlapBlend) in
//! `batch`).
//!
//! ```yaml
//! temporal:
//!   anchor: first            # or a frame index of the input clip
//!   temporalnet: { enabled: true, model: CiaraRowles/TemporalNet, scale: 0.6,
//!                  start: 0.0, end: 1.0, warp: true }
//!   cross_frame_attention: { enabled: true, anchor: true, previous: true,
//!                            max_reference_tokens: 1024 }
//!   flow_init: { enabled: true, strength: 0.75 }
//!   chain_batches: true      # a batch's first frame continues from the previous batch
//!   motion_module: { path: guoyww/animatediff-motion-adapter-v1-5-2, context_length: 16,
//!                    context_overlap: 4, weighting: pyramid }
//! ```
//!
//! `motion_module` (AnimateDiff, rendered by `render::motion`) renders each batch jointly, so it
//! cannot be combined with the per-frame options that need the previous frame's output
//! (TemporalNet, flow init, cross-frame attention): the preset check refuses such presets
//! ([`super::motion::check_motion_combination`]).
//!
//! Every part is off unless enabled, so a preset without the section renders every frame on
//! its own (same seed). Range checks run while parsing, so errors point at the value.

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::preset::motion::MotionModuleSettings;
use crate::preset::{
    check_control_scale, check_control_window, check_strength, check_unit_interval,
    control_scale_in_range, deserialize_checked, non_empty_string, unit_interval,
    unit_interval_open_low,
};

/// The TemporalNet ControlNet presets use by default (docs/ARCHITECTURE.md, "Models").
pub const DEFAULT_TEMPORALNET: &str = "CiaraRowles/TemporalNet";

/// Reference tokens per layer kept for cross-frame attention by default: SD1.5's 64×64
/// top-level layers at 512² are pooled 2×2; smaller layers are kept whole.
pub const DEFAULT_MAX_REFERENCE_TOKENS: u32 = 1024;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TemporalSettings {
    /// The frame every other frame's cross-frame attention looks at.
    pub anchor: AnchorFrame,
    pub temporalnet: TemporalNetSettings,
    pub cross_frame_attention: CrossFrameSettings,
    pub flow_init: FlowInitSettings,
    /// Whether the first frame of a batch continues from the frame before the batch (the
    /// previous batch's rendering), as every other frame continues from its predecessor.
    /// Off, every batch starts afresh like the clip's first frame (batches independent of
    /// each other; the overlap blend alone hides the restart).
    pub chain_batches: bool,
    /// AnimateDiff motion modules with context windows; each batch is denoised jointly.
    /// Skipped when absent so that presets without it keep their fingerprint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub motion_module: Option<MotionModuleSettings>,
}

impl Default for TemporalSettings {
    fn default() -> Self {
        Self {
            anchor: AnchorFrame::First,
            temporalnet: TemporalNetSettings::default(),
            cross_frame_attention: CrossFrameSettings::default(),
            flow_init: FlowInitSettings::default(),
            chain_batches: true,
            motion_module: None,
        }
    }
}

impl TemporalSettings {
    /// Check the rules the parser checks, for settings built or changed in code. Returns the
    /// dotted field (below `temporal.`) and the message.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let t = &self.temporalnet;
        check_control_scale(t.scale).map_err(|m| ("temporalnet.scale".to_string(), m))?;
        check_unit_interval(t.start).map_err(|m| ("temporalnet.start".to_string(), m))?;
        check_unit_interval(t.end).map_err(|m| ("temporalnet.end".to_string(), m))?;
        check_control_window(t.start, t.end).map_err(|m| ("temporalnet".to_string(), m))?;
        if t.model.trim().is_empty() {
            return Err(("temporalnet.model".into(), "must not be empty".into()));
        }
        check_strength(self.flow_init.strength)
            .map_err(|m| ("flow_init.strength".to_string(), m))?;
        check_reference_tokens(self.cross_frame_attention.max_reference_tokens)
            .map_err(|m| ("cross_frame_attention.max_reference_tokens".to_string(), m))?;
        if let Some(motion) = &self.motion_module {
            motion
                .validate()
                .map_err(|m| ("motion_module".to_string(), m))?;
        }
        Ok(())
    }
}

/// `anchor: first` (the first rendered frame) or `anchor: N` (frame N of the input clip,
/// counted on the clip's whole frame grid, also outside a `--frames` range).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AnchorFrame {
    #[default]
    First,
    Index(u64),
}

impl AnchorFrame {
    /// The input frame index of the anchor when rendering frames `first_frame..`.
    pub fn resolve(self, first_frame: u64) -> u64 {
        match self {
            AnchorFrame::First => first_frame,
            AnchorFrame::Index(n) => n,
        }
    }
}

impl Serialize for AnchorFrame {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            AnchorFrame::First => s.serialize_str("first"),
            AnchorFrame::Index(n) => s.serialize_u64(*n),
        }
    }
}

impl<'de> Deserialize<'de> for AnchorFrame {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct AnchorVisitor;
        impl Visitor<'_> for AnchorVisitor {
            type Value = AnchorFrame;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("`first` or a frame index (0, 1, ...)")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<AnchorFrame, E> {
                Ok(AnchorFrame::Index(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<AnchorFrame, E> {
                u64::try_from(v)
                    .map(AnchorFrame::Index)
                    .map_err(|_| E::custom(format!("a frame index is 0 or more, got {v}")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<AnchorFrame, E> {
                match v {
                    "first" => Ok(AnchorFrame::First),
                    other => Err(E::custom(format!(
                        "expected `first` or a frame index, got {other:?}"
                    ))),
                }
            }
        }
        d.deserialize_any(AnchorVisitor)
    }
}

/// A ControlNet whose control image is the previous output frame (TemporalNet).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TemporalNetSettings {
    pub enabled: bool,
    /// Hub id, diffusers folder or single file of the TemporalNet ControlNet.
    pub model: String,
    pub scale: f32,
    /// Fraction of the sampling steps where the net starts / stops acting.
    pub start: f32,
    pub end: f32,
    /// Warp the previous output to the current frame by the input's optical flow first.
    pub warp: bool,
}

impl Default for TemporalNetSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            model: DEFAULT_TEMPORALNET.to_string(),
            scale: 1.0,
            start: 0.0,
            end: 1.0,
            warp: true,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTemporalNetSettings {
    #[serde(default)]
    enabled: bool,
    #[serde(default = "default_temporalnet", deserialize_with = "non_empty_string")]
    model: String,
    #[serde(default = "one", deserialize_with = "control_scale_in_range")]
    scale: f32,
    #[serde(default, deserialize_with = "unit_interval")]
    start: f32,
    #[serde(default = "one", deserialize_with = "unit_interval")]
    end: f32,
    #[serde(default = "yes")]
    warp: bool,
}

fn default_temporalnet() -> String {
    DEFAULT_TEMPORALNET.to_string()
}

fn one() -> f32 {
    1.0
}

fn yes() -> bool {
    true
}

impl RawTemporalNetSettings {
    fn check(self) -> Result<TemporalNetSettings, String> {
        check_control_window(self.start, self.end)?;
        Ok(TemporalNetSettings {
            enabled: self.enabled,
            model: self.model,
            scale: self.scale,
            start: self.start,
            end: self.end,
            warp: self.warp,
        })
    }
}

impl<'de> Deserialize<'de> for TemporalNetSettings {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_checked(
            deserializer,
            "TemporalNetSettings",
            &["enabled", "model", "scale", "start", "end", "warp"],
            RawTemporalNetSettings::check,
        )
    }
}

/// Self-attention of every frame also attends to the anchor frame's and the previous frame's
/// keys/values at the same denoising step (Rerender-A-Video / Text2Video-Zero).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CrossFrameSettings {
    pub enabled: bool,
    pub anchor: bool,
    pub previous: bool,
    /// Reference keys/values of a layer with more tokens than this are average-pooled over
    /// 2×2, 4×4, ... token blocks until they fit; this bounds the per-step cache (see
    /// `render::temporal::cross_frame`).
    #[serde(deserialize_with = "reference_tokens")]
    pub max_reference_tokens: u32,
}

impl Default for CrossFrameSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            anchor: true,
            previous: true,
            max_reference_tokens: DEFAULT_MAX_REFERENCE_TOKENS,
        }
    }
}

impl CrossFrameSettings {
    /// Whether any reference frame is attended to.
    pub fn active(&self) -> bool {
        self.enabled && (self.anchor || self.previous)
    }
}

fn check_reference_tokens(tokens: u32) -> Result<(), String> {
    if tokens >= 1 {
        Ok(())
    } else {
        Err("must be at least 1".to_string())
    }
}

fn reference_tokens<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let value = u32::deserialize(d)?;
    check_reference_tokens(value).map_err(de::Error::custom)?;
    Ok(value)
}

/// Start frame t from the previous output warped to t by the input's optical flow, noised to
/// `strength` (img2img), instead of from the source frame.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlowInitSettings {
    pub enabled: bool,
    /// Denoise strength from the warped previous output: lower keeps more of it.
    #[serde(deserialize_with = "unit_interval_open_low")]
    pub strength: f32,
}

impl Default for FlowInitSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            strength: 0.75,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<TemporalSettings, serde_yaml_ng::Error> {
        serde_yaml_ng::from_str(text)
    }

    #[test]
    fn empty_section_disables_everything() {
        let t = parse("{}").unwrap();
        assert_eq!(t, TemporalSettings::default());
        assert!(!t.temporalnet.enabled && !t.flow_init.enabled);
        assert!(!t.cross_frame_attention.active());
        assert_eq!(t.temporalnet.model, DEFAULT_TEMPORALNET);
        assert!(t.temporalnet.warp);
        assert!(t.chain_batches);
        assert!(!parse("chain_batches: false").unwrap().chain_batches);
    }

    #[test]
    fn anchor_is_first_or_an_index() {
        assert_eq!(parse("anchor: first").unwrap().anchor, AnchorFrame::First);
        assert_eq!(parse("anchor: 12").unwrap().anchor, AnchorFrame::Index(12));
        assert!(parse("anchor: last").is_err());
        assert!(parse("anchor: -1").is_err());
        assert_eq!(AnchorFrame::First.resolve(10), 10);
        assert_eq!(AnchorFrame::Index(3).resolve(10), 3);
        let yaml = serde_yaml_ng::to_string(&AnchorFrame::Index(4)).unwrap();
        assert_eq!(yaml.trim(), "4");
    }

    #[test]
    fn ranges_are_checked_while_parsing() {
        let err = parse("temporalnet: {enabled: true, start: 0.9, end: 0.1}").unwrap_err();
        assert!(err
            .to_string()
            .contains("start (0.9) must be smaller than end (0.1)"));
        assert!(parse("temporalnet: {scale: 5}").is_err());
        assert!(parse("flow_init: {strength: 0}").is_err());
        assert!(parse("cross_frame_attention: {max_reference_tokens: 0}").is_err());
        assert!(parse("flow_init: {strength: 0.4, extra: 1}").is_err());
    }

    #[test]
    fn validate_reports_the_field() {
        let mut t = TemporalSettings::default();
        t.flow_init.strength = 1.5;
        assert_eq!(t.validate().unwrap_err().0, "flow_init.strength");
        let mut t = TemporalSettings::default();
        t.temporalnet.end = 0.0;
        assert_eq!(t.validate().unwrap_err().0, "temporalnet");
        assert!(TemporalSettings::default().validate().is_ok());
    }

    #[test]
    fn motion_module_is_optional_and_checked() {
        assert_eq!(parse("{}").unwrap().motion_module, None);
        let t = parse("motion_module: {path: mm.safetensors, context_length: 8}").unwrap();
        let m = t.motion_module.clone().unwrap();
        assert_eq!(
            (m.path.as_str(), m.context_length, m.context_overlap),
            ("mm.safetensors", 8, 4)
        );
        let err = parse("motion_module: {path: mm.ckpt, context_length: 4, context_overlap: 4}")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("motion_module: "), "{err}");
        assert!(
            err.contains("context_overlap (4) must be smaller than context_length (4)"),
            "{err}"
        );
        let mut t = t;
        t.motion_module.as_mut().unwrap().context_length = 1;
        assert_eq!(t.validate().unwrap_err().0, "motion_module");
        // Absent, it is not serialized: older presets keep their fingerprint.
        let yaml = serde_yaml_ng::to_string(&TemporalSettings::default()).unwrap();
        assert!(!yaml.contains("motion_module"), "{yaml}");
    }
}
