//! The preset section `temporal.motion_module`:
//!
//! ```yaml
//! temporal:
//!   motion_module:
//!     path: guoyww/animatediff-motion-adapter-v1-5-2   # hub id, MotionAdapter folder, or a
//!                                                      # single .safetensors/.ckpt (original names)
//!     context_length: 16     # frames per context window (at most the module's 24/32)
//!     context_overlap: 4     # frames shared by neighbouring windows (< context_length)
//!     weighting: pyramid     # or flat
//! ```
//!
//! Only `path` is required. Unknown keys are rejected; range errors are raised while
//! deserializing so that the preset loader can report them with their location.
//!
//! Motion modules denoise all frames of a batch together, so the per-frame sequential options
//! (which need frame t-1's finished output before frame t starts) cannot be combined with them:
//! [`check_motion_combination`] names the conflicting fields.

use serde::{Deserialize, Deserializer, Serialize};

use crate::preset::SeedPerFrame;
use crate::preset::{deserialize_checked, ControlKind, Preset};

/// Shortest context window: a motion module relates frames, one frame alone has nothing to
/// attend to.
pub const MIN_CONTEXT_LENGTH: usize = 2;

/// `temporal.motion_module`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MotionModuleSettings {
    pub path: String,
    pub context_length: usize,
    pub context_overlap: usize,
    pub weighting: ContextWeighting,
}

impl MotionModuleSettings {
    /// Defaults for everything but the path.
    pub fn new(path: impl Into<String>) -> Self {
        let context = ContextOptions::default();
        Self {
            path: path.into(),
            context_length: context.length,
            context_overlap: context.overlap,
            weighting: context.weighting,
        }
    }

    pub fn context(&self) -> ContextOptions {
        ContextOptions {
            length: self.context_length,
            overlap: self.context_overlap,
            weighting: self.weighting,
        }
    }

    /// The rules the deserializer enforces, for settings built or changed in code.
    pub fn validate(&self) -> Result<(), String> {
        if self.path.trim().is_empty() {
            return Err("path: must not be empty".into());
        }
        if self.context_length < MIN_CONTEXT_LENGTH {
            return Err(format!(
                "context_length ({}) must be at least {MIN_CONTEXT_LENGTH}: a motion module relates the frames of a window",
                self.context_length
            ));
        }
        self.context().validate().map_err(|e| e.to_string())
    }
}

impl<'de> Deserialize<'de> for MotionModuleSettings {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_checked(
            deserializer,
            "MotionModuleSettings",
            &["path", "context_length", "context_overlap", "weighting"],
            <MotionModuleSettings as TryFrom<RawMotionModuleSettings>>::try_from,
        )
    }
}

/// With `temporal.motion_module` set, the options that render frame by frame from the
/// previous frame's output are refused: the batch is denoised jointly, so no frame's output
/// exists before the others'. Returns the offending field (dotted, from the preset root) and
/// why. Without a motion module everything is allowed.
pub fn check_motion_combination(preset: &Preset) -> Result<(), (String, String)> {
    let temporal = &preset.temporal;
    if temporal.motion_module.is_none() {
        return Ok(());
    }
    let refuse = |field: &str, what: &str| {
        Err((
            field.to_string(),
            format!(
                "cannot be combined with temporal.motion_module: {what}, while a motion module \
                 denoises all frames of a batch together (turn one of them off)"
            ),
        ))
    };
    if preset.deep_cache.is_some() {
        return Err((
            "deep_cache".to_string(),
            "cannot be combined with temporal.motion_module: DeepCache caches one UNet call per \
             step, while context windows make several (remove one of them)"
                .to_string(),
        ));
    }
    if temporal.temporalnet.enabled {
        return refuse(
            "temporal.temporalnet.enabled",
            "TemporalNet needs the previous frame's finished output",
        );
    }
    if let Some(i) = preset
        .controlnets
        .iter()
        .position(|c| c.kind == ControlKind::Temporalnet)
    {
        return refuse(
            &format!("controlnets[{i}].type"),
            "a temporalnet ControlNet needs the previous frame's finished output",
        );
    }
    if temporal.flow_init.enabled {
        return refuse(
            "temporal.flow_init.enabled",
            "flow init starts each frame from the previous frame's finished output",
        );
    }
    if temporal.cross_frame_attention.active() {
        return refuse(
            "temporal.cross_frame_attention.enabled",
            "cross-frame attention reads the previous and anchor frames' finished passes",
        );
    }
    if preset.sampler.seed_per_frame != SeedPerFrame::Fixed {
        return refuse(
            "sampler.seed_per_frame",
            "per-frame seeds need frames sampled one by one; a motion batch draws one noise \
             tensor for all its frames from sampler.seed",
        );
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMotionModuleSettings {
    path: String,
    #[serde(default = "default_length")]
    context_length: usize,
    #[serde(default = "default_overlap")]
    context_overlap: usize,
    #[serde(default = "default_weighting")]
    weighting: ContextWeighting,
}

fn default_length() -> usize {
    ContextOptions::default().length
}
fn default_overlap() -> usize {
    ContextOptions::default().overlap
}
fn default_weighting() -> ContextWeighting {
    ContextOptions::default().weighting
}

impl TryFrom<RawMotionModuleSettings> for MotionModuleSettings {
    type Error = String;

    fn try_from(raw: RawMotionModuleSettings) -> Result<Self, String> {
        let settings = Self {
            path: raw.path,
            context_length: raw.context_length,
            context_overlap: raw.context_overlap,
            weighting: raw.weighting,
        };
        settings.validate()?;
        Ok(settings)
    }
}

/// How a window's frames are weighted when overlapping windows are averaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContextWeighting {
    Flat,
    Pyramid,
}

impl ContextWeighting {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Flat => "flat",
            Self::Pyramid => "pyramid",
        }
    }
}

/// Window length, overlap and weighting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContextOptions {
    pub length: usize,
    pub overlap: usize,
    pub weighting: ContextWeighting,
}

impl Default for ContextOptions {
    /// AnimateDiff's usual 16 frames with 4 shared, pyramid weights.
    fn default() -> Self {
        Self {
            length: 16,
            overlap: 4,
            weighting: ContextWeighting::Pyramid,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<MotionModuleSettings, String> {
        serde_yaml_ng::from_str(yaml).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_full_form() {
        let s = parse("path: guoyww/animatediff-motion-adapter-v1-5-2\n").unwrap();
        assert_eq!(
            s,
            MotionModuleSettings::new("guoyww/animatediff-motion-adapter-v1-5-2")
        );
        assert_eq!(s.context(), ContextOptions::default());
        let s = parse("path: mm.ckpt\ncontext_length: 24\ncontext_overlap: 6\nweighting: flat\n")
            .unwrap();
        assert_eq!(
            (s.context_length, s.context_overlap, s.weighting),
            (24, 6, ContextWeighting::Flat)
        );
        // Round trip (the preset hash serializes the settings).
        let text = serde_yaml_ng::to_string(&s).unwrap();
        assert_eq!(parse(&text).unwrap(), s);
    }

    #[test]
    fn bad_values_are_rejected() {
        let err = parse("path: x\ncontext_length: 8\ncontext_overlap: 8\n").unwrap_err();
        assert!(
            err.contains("context_overlap (8) must be smaller than context_length (8)"),
            "{err}"
        );
        assert!(parse("path: x\ncontext_length: 0\ncontext_overlap: 0\n")
            .unwrap_err()
            .contains("at least 2"));
        let err = parse("path: x\ncontext_length: 1\ncontext_overlap: 0\n").unwrap_err();
        assert!(
            err.contains("context_length (1) must be at least 2"),
            "{err}"
        );
        assert!(parse("path: ''\n").unwrap_err().contains("path"));
        assert!(parse("path: x\nweighting: gaussian\n")
            .unwrap_err()
            .contains("unknown variant"));
        assert!(parse("path: x\nstride: 2\n")
            .unwrap_err()
            .contains("unknown field"));
        assert!(parse("context_length: 16\n").unwrap_err().contains("path"));
    }
}
