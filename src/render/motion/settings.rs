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

use serde::{Deserialize, Serialize};

use super::context_windows::{ContextOptions, ContextWeighting};

/// `temporal.motion_module`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawMotionModuleSettings")]
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
        self.context().validate().map_err(|e| e.to_string())
    }
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
            .contains("at least 1"));
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
