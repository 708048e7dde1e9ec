//! Preset fields for models the way A1111 / ComfyUI users have them (issue 8):
//!
//! ```yaml
//! model:
//!   base: checkpoints/dreamshaper_8.safetensors   # hub id, diffusers folder or single file
//!   vae: vae-ft-mse-840000-ema-pruned.safetensors # optional override (file, folder, hub id)
//!   config: v1-inference.yaml    # optional, single files only: LDM yaml or diffusers folder
//!   clip_skip: 2                 # A1111's "Clip skip" (1 = last layer, the default)
//! loras:                          # merged at load, applied in this order
//!   - { path: loras/ghibli_style.safetensors, weight: 0.8 }
//!   - { path: loras/character.safetensors, weight: 0.6, clip_weight: 0.3 }
//! embeddings:                     # textual inversion; trigger word = file name
//!   - embeddings/easynegative.safetensors
//! ```
//!
//! `weight` is the LoRA strength on the UNet (A1111 `<lora:name:weight>`, ComfyUI
//! `strength_model`), `clip_weight` on the text encoder (`strength_clip`, default: `weight`).
//! Relative paths are taken from the working directory, or else next to the preset file.

use std::path::Path;

use serde::{Deserialize, Deserializer, Serialize};

/// The largest clip skip accepted when parsing (SD2's OpenCLIP has 23 layers; the text
/// encoder's real depth is checked when the model loads).
pub const MAX_CLIP_SKIP: u32 = 24;

/// One LoRA of a preset.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LoraEntry {
    pub path: String,
    /// Strength on the UNet.
    pub weight: f32,
    /// Strength on the text encoder; `None` = same as `weight`.
    pub clip_weight: Option<f32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLoraEntry {
    path: String,
    #[serde(default = "one")]
    weight: f32,
    #[serde(default)]
    clip_weight: Option<f32>,
}

fn one() -> f32 {
    1.0
}

/// A LoRA strength: finite, and within what any UI lets users set.
pub fn check_lora_weight(weight: f32) -> Result<(), String> {
    if weight.is_finite() && (-10.0..=10.0).contains(&weight) {
        Ok(())
    } else {
        Err(format!("must be between -10 and 10, got {weight}"))
    }
}

pub fn check_clip_skip(clip_skip: u32) -> Result<(), String> {
    if (1..=MAX_CLIP_SKIP).contains(&clip_skip) {
        Ok(())
    } else {
        Err(format!(
            "must be between 1 (the last layer, no skip) and {MAX_CLIP_SKIP}, got {clip_skip}"
        ))
    }
}

impl RawLoraEntry {
    fn check(self) -> Result<LoraEntry, String> {
        if self.path.trim().is_empty() {
            return Err("path must not be empty".into());
        }
        check_lora_weight(self.weight).map_err(|m| format!("weight {m}"))?;
        if let Some(w) = self.clip_weight {
            check_lora_weight(w).map_err(|m| format!("clip_weight {m}"))?;
        }
        Ok(LoraEntry {
            path: self.path,
            weight: self.weight,
            clip_weight: self.clip_weight,
        })
    }
}

impl<'de> Deserialize<'de> for LoraEntry {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        super::deserialize_checked(
            deserializer,
            "LoraEntry",
            &["path", "weight", "clip_weight"],
            RawLoraEntry::check,
        )
    }
}

impl LoraEntry {
    pub fn text_encoder_weight(&self) -> f32 {
        self.clip_weight.unwrap_or(self.weight)
    }
}

/// `model.clip_skip` default.
pub fn default_clip_skip() -> u32 {
    1
}

/// Keeps presets that do not set `model.clip_skip` serializing (and hashing) as before.
pub fn is_default_clip_skip(clip_skip: &u32) -> bool {
    *clip_skip == default_clip_skip()
}

/// Checked while parsing `model.clip_skip`.
pub fn clip_skip_in_range<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    super::checked(deserializer, check_clip_skip)
}

/// A preset path: as given when it exists (or is absolute, or a hub id), else next to the
/// preset file when it exists there.
pub fn locate(spec: &str, preset_dir: Option<&Path>) -> String {
    let path = Path::new(spec);
    if path.is_relative() && !path.exists() {
        if let Some(candidate) = preset_dir.map(|dir| dir.join(path)) {
            if candidate.exists() {
                return candidate.to_string_lossy().into_owned();
            }
        }
    }
    spec.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preset::{Preset, PresetError};

    fn parse(text: &str) -> Result<Preset, PresetError> {
        Preset::from_yaml(text, "test.yaml")
    }

    const FULL: &str = "model:
  base: ckpt/dreamshaper.safetensors
  vae: vae/ft-mse.ckpt
  config: v1-inference.yaml
  clip_skip: 2
prompt: a cat
loras:
  - { path: a.safetensors, weight: 0.8 }
  - path: b.safetensors
    weight: -0.5
    clip_weight: 1.2
  - path: c.safetensors
embeddings: [easynegative.safetensors]
";

    #[test]
    fn parses_model_loras_and_embeddings() {
        let p = parse(FULL).unwrap();
        assert_eq!(p.model.config.as_deref(), Some("v1-inference.yaml"));
        assert_eq!(p.model.clip_skip, 2);
        assert_eq!(p.loras.len(), 3);
        assert_eq!(p.loras[1].text_encoder_weight(), 1.2);
        assert_eq!(p.loras[0].text_encoder_weight(), 0.8);
        assert_eq!((p.loras[2].weight, p.loras[2].clip_weight), (1.0, None));
        // What the model stack makes of them: the resolver's tests (app/resolve.rs).
    }

    #[test]
    fn defaults_leave_existing_presets_unchanged() {
        let p = parse("model:\n  base: some/model\nprompt: a cat\n").unwrap();
        assert_eq!(p.model.clip_skip, 1);
        assert!(p.loras.is_empty() && p.embeddings.is_empty() && p.model.config.is_none());
        // New fields at their defaults are not serialized: fingerprints stay as they were.
        let json = serde_json::to_string(&p).unwrap();
        for key in ["clip_skip", "loras", "embeddings", "\"config\""] {
            assert!(!json.contains(key), "{key} in {json}");
        }
    }

    #[test]
    fn bad_values_are_located() {
        let err = parse("model:\n  base: m\n  clip_skip: 0\nprompt: a\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("test.yaml:3:14: model.clip_skip: "),
            "{err}"
        );
        let err = parse("model:\n  base: m\nprompt: a\nloras:\n  - { path: a, weight: 99 }\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("test.yaml:5:"), "{err}");
        assert!(err.contains("weight"), "{err}");
        let err = parse("model:\n  base: m\nprompt: a\nloras:\n  - { path: a, strength: 1 }\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("strength"), "{err}");
    }

    #[test]
    fn relative_paths_fall_back_to_the_preset_folder() {
        let dir = std::env::temp_dir().join(format!("rotoscope-locate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("only-here.safetensors"), b"x").unwrap();
        assert_eq!(
            locate("only-here.safetensors", Some(&dir)),
            dir.join("only-here.safetensors").to_string_lossy()
        );
        assert_eq!(locate("owner/repo", Some(&dir)), "owner/repo");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
