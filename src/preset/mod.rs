//! Presets: YAML files describing a style (models, prompts, sampler, ControlNets, batching,
//! output). Schema v1 is documented in README.md ("Preset reference").
//!
//! Every struct rejects unknown keys, and every error names the file, the line and column,
//! and the field (`sampler.steps`, `controlnets[1].type`, ...). Range checks run while
//! deserializing so that they get the same precise location as a type error would.

use std::fmt;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use serde::de::{self, DeserializeOwned, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use sha2::{Digest, Sha256};

pub mod deep_cache;
pub mod detail;
pub mod models_ext;
pub mod motion;
pub mod pose;
pub mod rational;
pub mod temporal;
pub use models_ext::LoraEntry;

use crate::preset::temporal::TemporalSettings;
use rational::Rational;

/// Presets shipped in `presets/`, compiled into the binary so that `-p anime` works from
/// any directory.
pub const BUNDLED: [(&str, &str); 5] = [
    ("anime", include_str!("../../presets/anime.yaml")),
    ("watercolor", include_str!("../../presets/watercolor.yaml")),
    (
        "lineart-ink",
        include_str!("../../presets/lineart-ink.yaml"),
    ),
    (
        "anime-animatediff",
        include_str!("../../presets/anime-animatediff.yaml"),
    ),
    ("anime-fast", include_str!("../../presets/anime-fast.yaml")),
];

/// Batches must stay below this many frames (docs/ARCHITECTURE.md, "Data flow").
pub const MAX_BATCH_FRAMES: u32 = 199;

#[derive(Debug, thiserror::Error)]
pub enum PresetError {
    #[error("cannot read preset {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("preset {name:?} not found: no such file, and not a bundled preset ({bundled})")]
    NotFound { name: String, bundled: String },
    /// A syntax, type, unknown-key or range error, located in the file.
    #[error("{origin}:{line}:{column}: {}{message}", field_prefix(.field))]
    Parse {
        origin: String,
        line: usize,
        column: usize,
        /// Dotted path of the offending field (`sampler.steps`); empty for the document root.
        field: String,
        message: String,
    },
    /// A value that breaks a rule, found after parsing (e.g. on a preset built in code or
    /// after a command-line override), so without a location.
    #[error("{origin}: {field}: {message}")]
    Invalid {
        origin: String,
        field: String,
        message: String,
    },
}

/// `field: ` before an error message, or nothing for the document root (also used by the
/// batch jobs file's errors).
pub(crate) fn field_prefix(field: &str) -> String {
    if field.is_empty() {
        String::new()
    } else {
        format!("{field}: ")
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preset {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    pub model: ModelSpec,
    pub prompt: String,
    #[serde(default)]
    pub negative_prompt: String,
    #[serde(default)]
    pub sampler: SamplerSettings,
    /// `None`: fit the input (short side 512, multiples of 8), see [`fit_to_input`].
    #[serde(default)]
    pub resolution: Option<Resolution>,
    #[serde(default)]
    pub controlnets: Vec<ControlNetSpec>,
    #[serde(default)]
    pub batch: BatchSettings,
    #[serde(default)]
    pub output: OutputSettings,
    #[serde(default)]
    pub preprocess: PreprocessSettings,
    /// Face and hand detailing (off by default), see [`detail::DetailSettings`].
    #[serde(default)]
    pub detail: detail::DetailSettings,
    /// Temporal-consistency conditioning (see [`temporal::TemporalSettings`]).
    #[serde(default)]
    pub temporal: TemporalSettings,
    /// DeepCache step caching (off when absent), see [`deep_cache`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deep_cache: Option<deep_cache::DeepCacheSpec>,
    /// The precision of the SD networks' weights and products (`f32` unless `bf16`).
    #[serde(default, skip_serializing_if = "Compute::is_default")]
    pub compute: Compute,
    /// LoRAs merged into the model at load (see [`models_ext`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub loras: Vec<LoraEntry>,
    /// Textual-inversion embedding files; the trigger word is the file name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub embeddings: Vec<String>,
}

/// `compute:`: the arithmetic of the UNet, ControlNets, VAE and motion modules. `bf16` keeps
/// their weights in bfloat16 (half the memory) and multiplies in bf16 with f32 accumulation
/// (AVX512-BF16 where the CPU has it); the text encoder and the preprocessors stay f32.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compute {
    #[default]
    F32,
    Bf16,
}

impl Compute {
    fn is_default(&self) -> bool {
        *self == Compute::F32
    }
}

/// Where a model comes from: a hub id (`owner/name`), a diffusers folder or a single file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    #[serde(deserialize_with = "non_empty_string")]
    pub base: String,
    #[serde(default)]
    pub vae: Option<String>,
    /// Configs of a single-file `base`: the LDM yaml or a diffusers folder (see [`models_ext`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
    /// A1111's clip skip: 1 = the text encoder's last layer, 2 = the penultimate, ...
    #[serde(
        default = "models_ext::default_clip_skip",
        deserialize_with = "models_ext::clip_skip_in_range",
        skip_serializing_if = "models_ext::is_default_clip_skip"
    )]
    pub clip_skip: u32,
}

/// The samplers rotoscope offers (preset `sampler.scheduler`); the diffusion schedulers
/// are built from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SchedulerKind {
    Ddim,
    Euler,
    EulerAncestral,
    #[serde(rename = "dpmpp_2m")]
    DpmPp2M,
    #[serde(rename = "dpmpp_2m_karras")]
    DpmPp2MKarras,
    Lcm,
    Tcd,
}

impl SchedulerKind {
    pub const ALL: [SchedulerKind; 7] = [
        Self::Ddim,
        Self::Euler,
        Self::EulerAncestral,
        Self::DpmPp2M,
        Self::DpmPp2MKarras,
        Self::Lcm,
        Self::Tcd,
    ];

    /// Looks a sampler up by its preset / CLI name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// The preset / CLI name (the same as [`Self::as_str`]).
    pub fn name(self) -> &'static str {
        self.as_str()
    }

    /// The name presets use.
    pub fn as_str(self) -> &'static str {
        match self {
            SchedulerKind::Ddim => "ddim",
            SchedulerKind::Euler => "euler",
            SchedulerKind::EulerAncestral => "euler_ancestral",
            SchedulerKind::DpmPp2M => "dpmpp_2m",
            SchedulerKind::DpmPp2MKarras => "dpmpp_2m_karras",
            SchedulerKind::Lcm => "lcm",
            SchedulerKind::Tcd => "tcd",
        }
    }

    /// Whether the sampler's step takes `sampler.eta` (DDIM's eta, TCD's gamma).
    pub fn takes_eta(self) -> bool {
        matches!(self, SchedulerKind::Ddim | SchedulerKind::Tcd)
    }

    /// Whether the sampler reads `sampler.timestep_spacing`: LCM and TCD take their
    /// timesteps from the distillation schedule, as in diffusers.
    pub fn uses_timestep_spacing(self) -> bool {
        !matches!(self, SchedulerKind::Lcm | SchedulerKind::Tcd)
    }

    /// `sampler.eta` when absent: diffusers' defaults (TCD 0.3, DDIM 0).
    pub fn default_eta(self) -> Option<f64> {
        match self {
            SchedulerKind::Tcd => Some(0.3),
            SchedulerKind::Ddim => Some(0.0),
            _ => None,
        }
    }
}

impl fmt::Display for SchedulerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SamplerSettings {
    pub scheduler: SchedulerKind,
    pub steps: u32,
    pub cfg_scale: f32,
    pub seed: u64,
    /// img2img denoise applied to the source frame; 1.0 = pure txt2img.
    pub strength: f32,
    /// `fixed`: every frame gets `seed`; `increment`: frame n gets `seed + n` (a baseline).
    pub seed_per_frame: SeedPerFrame,
    /// diffusers' `step(eta=...)` in [0, 1], for `tcd` (its gamma; absent: 0.3) and `ddim`
    /// (absent: 0). Double precision, as the Python float diffusers takes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eta: Option<f64>,
    /// Replaces the model's `scheduler_config.json` `timestep_spacing` (absent: keep it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestep_spacing: Option<TimestepSpacing>,
}

impl Default for SamplerSettings {
    fn default() -> Self {
        Self {
            scheduler: SchedulerKind::EulerAncestral,
            steps: 20,
            cfg_scale: 7.0,
            seed: 0,
            strength: 1.0,
            seed_per_frame: SeedPerFrame::Fixed,
            eta: None,
            timestep_spacing: None,
        }
    }
}

impl SamplerSettings {
    /// `eta` as the scheduler takes it: the preset's, else the scheduler's default (`None`
    /// for schedulers without one).
    pub fn effective_eta(&self) -> Option<f64> {
        self.eta.or(self.scheduler.default_eta())
    }
}

/// `sampler.timestep_spacing`: how the inference timesteps are picked among the 1000
/// training ones (diffusers' `timestep_spacing`; Table 2 of arXiv 2305.08891).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestepSpacing {
    Leading,
    /// From the last training timestep down: what few-step models (Hyper-SD, SD-Turbo,
    /// AnimateDiff-Lightning) are sampled with.
    Trailing,
    Linspace,
}

impl TimestepSpacing {
    /// The name presets use.
    pub fn as_str(self) -> &'static str {
        match self {
            TimestepSpacing::Leading => "leading",
            TimestepSpacing::Trailing => "trailing",
            TimestepSpacing::Linspace => "linspace",
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawSamplerSettings {
    scheduler: SchedulerKind,
    #[serde(deserialize_with = "steps_in_range")]
    steps: u32,
    #[serde(deserialize_with = "cfg_in_range")]
    cfg_scale: f32,
    seed: u64,
    #[serde(deserialize_with = "unit_interval_open_low")]
    strength: f32,
    seed_per_frame: SeedPerFrame,
    #[serde(deserialize_with = "eta_in_range")]
    eta: Option<f64>,
    timestep_spacing: Option<TimestepSpacing>,
}

impl Default for RawSamplerSettings {
    fn default() -> Self {
        let d = SamplerSettings::default();
        Self {
            scheduler: d.scheduler,
            steps: d.steps,
            cfg_scale: d.cfg_scale,
            seed: d.seed,
            strength: d.strength,
            seed_per_frame: d.seed_per_frame,
            eta: d.eta,
            timestep_spacing: d.timestep_spacing,
        }
    }
}

impl RawSamplerSettings {
    fn check(self) -> Result<SamplerSettings, String> {
        let settings = SamplerSettings {
            scheduler: self.scheduler,
            steps: self.steps,
            cfg_scale: self.cfg_scale,
            seed: self.seed,
            strength: self.strength,
            seed_per_frame: self.seed_per_frame,
            eta: self.eta,
            timestep_spacing: self.timestep_spacing,
        };
        check_sampler_options(&settings)?;
        Ok(settings)
    }
}

impl<'de> Deserialize<'de> for SamplerSettings {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_checked(
            deserializer,
            "SamplerSettings",
            &[
                "scheduler",
                "steps",
                "cfg_scale",
                "seed",
                "strength",
                "seed_per_frame",
                "eta",
                "timestep_spacing",
            ],
            RawSamplerSettings::check,
        )
    }
}

/// `eta` and `timestep_spacing` against the scheduler: a value the scheduler would ignore
/// is refused, not silently dropped.
fn check_sampler_options(s: &SamplerSettings) -> Result<(), String> {
    if let Some(eta) = s.eta {
        check_eta(eta)?;
        if !s.scheduler.takes_eta() {
            return Err(format!(
                "eta ({eta}) applies to the ddim and tcd schedulers only, not {}",
                s.scheduler
            ));
        }
    }
    if let (Some(spacing), false) = (s.timestep_spacing, s.scheduler.uses_timestep_spacing()) {
        return Err(format!(
            "timestep_spacing ({}) has no effect with {}: it takes its timesteps from the \
             distillation schedule (original_inference_steps)",
            spacing.as_str(),
            s.scheduler
        ));
    }
    Ok(())
}

/// Seeds of successive frames (`sampler.seed_per_frame`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SeedPerFrame {
    /// Every frame uses `sampler.seed`: the same initial noise for every frame.
    #[default]
    Fixed,
    /// Frame n uses `sampler.seed + n`: independent noise per frame (a flicker baseline).
    Increment,
}

impl SeedPerFrame {
    /// The seed of input frame `frame_index`.
    pub fn seed_for(self, seed: u64, frame_index: u64) -> u64 {
        match self {
            SeedPerFrame::Fixed => seed,
            SeedPerFrame::Increment => seed.wrapping_add(frame_index),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resolution {
    #[serde(deserialize_with = "latent_aligned_size")]
    pub width: u32,
    #[serde(deserialize_with = "latent_aligned_size")]
    pub height: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ControlKind {
    Openpose,
    Softedge,
    /// Control image = the previous output frame (TemporalNet).
    Temporalnet,
}

impl ControlKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ControlKind::Openpose => "openpose",
            ControlKind::Softedge => "softedge",
            ControlKind::Temporalnet => "temporalnet",
        }
    }
}

impl fmt::Display for ControlKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ControlNetSpec {
    #[serde(rename = "type")]
    pub kind: ControlKind,
    pub model: String,
    pub scale: f32,
    /// Fraction of the sampling steps where this ControlNet starts / stops acting.
    pub start: f32,
    pub end: f32,
    pub guess_mode: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawControlNetSpec {
    #[serde(rename = "type")]
    kind: ControlKind,
    #[serde(deserialize_with = "non_empty_string")]
    model: String,
    #[serde(default = "one", deserialize_with = "control_scale_in_range")]
    scale: f32,
    #[serde(default, deserialize_with = "unit_interval")]
    start: f32,
    #[serde(default = "one", deserialize_with = "unit_interval")]
    end: f32,
    #[serde(default)]
    guess_mode: bool,
}

fn one() -> f32 {
    1.0
}

impl RawControlNetSpec {
    fn check(self) -> Result<ControlNetSpec, String> {
        check_control_window(self.start, self.end)?;
        Ok(ControlNetSpec {
            kind: self.kind,
            model: self.model,
            scale: self.scale,
            start: self.start,
            end: self.end,
            guess_mode: self.guess_mode,
        })
    }
}

impl<'de> Deserialize<'de> for ControlNetSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_checked(
            deserializer,
            "ControlNetSpec",
            &["type", "model", "scale", "start", "end", "guess_mode"],
            RawControlNetSpec::check,
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct BatchSettings {
    /// Frames per batch, at most [`MAX_BATCH_FRAMES`].
    pub frames: u32,
    /// Frames shared by neighbouring batches, smaller than `frames`.
    pub overlap: u32,
    /// How the shared frames are combined: a linear ramp, or a hard cut (a baseline).
    pub blend: OverlapBlend,
}

impl Default for BatchSettings {
    fn default() -> Self {
        Self {
            frames: 96,
            overlap: 10,
            blend: OverlapBlend::Ramp,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBatchSettings {
    #[serde(default = "default_batch_frames")]
    frames: u32,
    #[serde(default = "default_batch_overlap")]
    overlap: u32,
    #[serde(default)]
    blend: OverlapBlend,
}

fn default_batch_frames() -> u32 {
    BatchSettings::default().frames
}

fn default_batch_overlap() -> u32 {
    BatchSettings::default().overlap
}

impl RawBatchSettings {
    fn check(self) -> Result<BatchSettings, String> {
        let settings = BatchSettings {
            frames: self.frames,
            overlap: self.overlap,
            blend: self.blend,
        };
        check_batch(settings)?;
        Ok(settings)
    }
}

impl<'de> Deserialize<'de> for BatchSettings {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_checked(
            deserializer,
            "BatchSettings",
            &["frames", "overlap", "blend"],
            RawBatchSettings::check,
        )
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputSettings {
    /// H.264 constant rate factor (0 = lossless, 51 = worst).
    #[serde(deserialize_with = "crf_in_range")]
    pub crf: u8,
    /// Output frame rate; `None` keeps the source rate. Accepts `24`, `23.976` (snapped to
    /// 24000/1001) and `"24000/1001"`. The decoder resamples the clip onto this rate.
    #[serde(deserialize_with = "optional_fps", serialize_with = "serialize_fps")]
    pub fps: Option<Rational>,
    /// x264 speed preset (`ultrafast` ... `medium` ... `veryslow`): slower is smaller at
    /// the same quality.
    #[serde(deserialize_with = "x264_speed")]
    pub encoder_preset: String,
}

impl Default for OutputSettings {
    fn default() -> Self {
        Self {
            crf: 18,
            fps: None,
            encoder_preset: "medium".to_string(),
        }
    }
}

/// The x264 speed presets.
pub const ENCODER_PRESETS: [&str; 9] = [
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
];

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PreprocessSettings {
    pub pose: PoseSettings,
    pub softedge: SoftedgeSettings,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoseSettings {
    pub body: bool,
    pub hands: bool,
    pub face: bool,
}

impl Default for PoseSettings {
    fn default() -> Self {
        Self {
            body: true,
            hands: true,
            face: true,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SoftedgeSettings {
    /// "Safe" HED: quantise the edge map to suppress faint edges (as controlnet_aux does).
    pub safe: bool,
}

/// Values given on the command line that replace preset fields.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PresetOverrides {
    /// `--seed S` replaces `sampler.seed`.
    pub seed: Option<u64>,
}

impl Preset {
    /// Load a preset from a file path, or a bundled preset by name (`anime`).
    /// A path that exists always wins over a bundled name.
    pub fn resolve(name_or_path: &Path) -> Result<Preset, PresetError> {
        if name_or_path.exists() {
            return Preset::load(name_or_path);
        }
        let name = name_or_path.to_string_lossy();
        match bundled(&name) {
            Some(text) => Preset::from_yaml(text, &format!("<bundled preset {name}>")),
            None => Err(PresetError::NotFound {
                name: name.into_owned(),
                bundled: BUNDLED
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }

    pub fn load(path: &Path) -> Result<Preset, PresetError> {
        let text = std::fs::read_to_string(path).map_err(|source| PresetError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Preset::from_yaml(&text, &path.display().to_string())
    }

    /// Parse YAML; `origin` names the source in errors (usually the file path).
    pub fn from_yaml(text: &str, origin: &str) -> Result<Preset, PresetError> {
        serde_yaml_ng::from_str(text).map_err(|e| parse_error(&e, origin))
    }

    /// Apply command-line overrides, then re-check the rules.
    pub fn with_overrides(
        mut self,
        overrides: &PresetOverrides,
        origin: &str,
    ) -> Result<Preset, PresetError> {
        if let Some(seed) = overrides.seed {
            self.sampler.seed = seed;
        }
        self.validate(origin)?;
        Ok(self)
    }

    /// Check every rule the parser checks, for presets built or changed in code.
    pub fn validate(&self, origin: &str) -> Result<(), PresetError> {
        let invalid = |field: String, message: String| PresetError::Invalid {
            origin: origin.to_string(),
            field,
            message,
        };
        let s = &self.sampler;
        check_steps(s.steps).map_err(|m| invalid("sampler.steps".into(), m))?;
        check_cfg(s.cfg_scale).map_err(|m| invalid("sampler.cfg_scale".into(), m))?;
        check_strength(s.strength).map_err(|m| invalid("sampler.strength".into(), m))?;
        check_sampler_options(s).map_err(|m| invalid("sampler".into(), m))?;
        if self.model.base.trim().is_empty() {
            return Err(invalid("model.base".into(), "must not be empty".into()));
        }
        models_ext::check_clip_skip(self.model.clip_skip)
            .map_err(|m| invalid("model.clip_skip".into(), m))?;
        for (i, lora) in self.loras.iter().enumerate() {
            models_ext::check_lora_weight(lora.weight)
                .map_err(|m| invalid(format!("loras[{i}].weight"), m))?;
            if let Some(w) = lora.clip_weight {
                models_ext::check_lora_weight(w)
                    .map_err(|m| invalid(format!("loras[{i}].clip_weight"), m))?;
            }
        }
        if let Some(r) = self.resolution {
            check_latent_aligned(r.width).map_err(|m| invalid("resolution.width".into(), m))?;
            check_latent_aligned(r.height).map_err(|m| invalid("resolution.height".into(), m))?;
        }
        for (i, c) in self.controlnets.iter().enumerate() {
            let field = |name: &str| format!("controlnets[{i}].{name}");
            check_control_scale(c.scale).map_err(|m| invalid(field("scale"), m))?;
            check_unit_interval(c.start).map_err(|m| invalid(field("start"), m))?;
            check_unit_interval(c.end).map_err(|m| invalid(field("end"), m))?;
            check_control_window(c.start, c.end)
                .map_err(|m| invalid(format!("controlnets[{i}]"), m))?;
        }
        check_batch(self.batch).map_err(|m| invalid("batch".into(), m))?;
        check_crf(self.output.crf).map_err(|m| invalid("output.crf".into(), m))?;
        check_encoder_preset(&self.output.encoder_preset)
            .map_err(|m| invalid("output.encoder_preset".into(), m))?;
        self.detail
            .validate()
            .map_err(|(field, m)| invalid(format!("detail.{field}"), m))?;
        self.temporal
            .validate()
            .map_err(|(field, m)| invalid(format!("temporal.{field}"), m))?;
        motion::check_motion_combination(self).map_err(|(field, m)| invalid(field, m))?;
        Ok(())
    }

    /// Hex SHA-256 of the canonical JSON form: equal for presets that render the same,
    /// whatever their YAML formatting. Used to invalidate cached work.
    pub fn fingerprint(&self) -> String {
        // Serializing plain data structs to JSON cannot fail (no maps with non-string keys).
        let canonical = serde_json::to_vec(self).unwrap_or_default();
        hex::encode(Sha256::digest(&canonical))
    }

    /// The size frames are rendered at for an input of `input_width` × `input_height`.
    pub fn render_size(&self, input_width: u32, input_height: u32) -> (u32, u32) {
        match self.resolution {
            Some(r) => (r.width, r.height),
            None => fit_to_input(input_width, input_height),
        }
    }

    /// Names of the bundled presets, in `presets/` order.
    pub fn bundled_names() -> impl Iterator<Item = &'static str> {
        BUNDLED.iter().map(|(name, _)| *name)
    }
}

/// The YAML text of a bundled preset.
pub fn bundled(name: &str) -> Option<&'static str> {
    BUNDLED
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, text)| *text)
}

/// Default render size: keep the aspect ratio, short side 512, both sides multiples of 8
/// (the VAE works on 8×8 pixel blocks).
pub fn fit_to_input(input_width: u32, input_height: u32) -> (u32, u32) {
    const SHORT_SIDE: f64 = 512.0;
    if input_width == 0 || input_height == 0 {
        return (SHORT_SIDE as u32, SHORT_SIDE as u32);
    }
    let scale = SHORT_SIDE / input_width.min(input_height) as f64;
    let side = |v: u32| (((v as f64 * scale) / 8.0).round() as u32).max(1) * 8;
    (side(input_width), side(input_height))
}

fn parse_error(error: &serde_yaml_ng::Error, origin: &str) -> PresetError {
    let at = locate_yaml_error(error);
    PresetError::Parse {
        origin: origin.to_string(),
        line: at.line,
        column: at.column,
        field: at.field,
        message: at.message,
    }
}

/// A YAML error taken apart: where it is, the field path it names, what it says.
pub(crate) struct LocatedYamlError {
    pub line: usize,
    pub column: usize,
    pub field: String,
    pub message: String,
}

/// Where `error` is (line 1, column 1 when serde_yaml_ng knows no place) and what it says,
/// for presets and jobs files alike.
pub(crate) fn locate_yaml_error(error: &serde_yaml_ng::Error) -> LocatedYamlError {
    let (line, column) = error
        .location()
        .map(|l| (l.line(), l.column()))
        .unwrap_or((1, 1));
    let (field, message) = split_field_and_message(&error.to_string(), line, column);
    LocatedYamlError {
        line,
        column,
        field,
        message,
    }
}

/// serde_yaml_ng renders errors as `path.to.field: message at line L column C`; take that
/// apart so the location can lead, as compilers print it.
fn split_field_and_message(rendered: &str, line: usize, column: usize) -> (String, String) {
    let suffix = format!(" at line {line} column {column}");
    let text = rendered.strip_suffix(&suffix).unwrap_or(rendered);
    if let Some((head, rest)) = text.split_once(": ") {
        let is_path = !head.is_empty()
            && head
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '[' | ']'));
        if is_path {
            return (head.to_string(), rest.to_string());
        }
    }
    (String::new(), text.to_string())
}

/// Deserialize a struct through its unchecked twin `R`, then run `check`. The check runs
/// inside the visitor, so the YAML deserializer attaches the mapping's line, column and path
/// to its error (a `try_from` conversion would lose them).
pub(crate) fn deserialize_checked<'de, D, R, T>(
    deserializer: D,
    name: &'static str,
    fields: &'static [&'static str],
    check: fn(R) -> Result<T, String>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    R: DeserializeOwned,
{
    struct CheckedVisitor<R, T> {
        name: &'static str,
        check: fn(R) -> Result<T, String>,
        marker: PhantomData<R>,
    }

    impl<'de, R: DeserializeOwned, T> Visitor<'de> for CheckedVisitor<R, T> {
        type Value = T;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(f, "a mapping ({})", self.name)
        }

        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            let raw = R::deserialize(de::value::MapAccessDeserializer::new(map))?;
            (self.check)(raw).map_err(de::Error::custom)
        }
    }

    deserializer.deserialize_struct(
        name,
        fields,
        CheckedVisitor {
            name,
            check,
            marker: PhantomData,
        },
    )
}

// ---- rules (pure; shared by the deserializer and `Preset::validate`) ----

fn check_steps(steps: u32) -> Result<(), String> {
    if (1..=1000).contains(&steps) {
        Ok(())
    } else {
        Err(format!("must be between 1 and 1000, got {steps}"))
    }
}

fn check_cfg(cfg: f32) -> Result<(), String> {
    if cfg.is_finite() && (0.0..=30.0).contains(&cfg) {
        Ok(())
    } else {
        Err(format!("must be between 0 and 30, got {cfg}"))
    }
}

fn check_eta(eta: f64) -> Result<(), String> {
    if (0.0..=1.0).contains(&eta) {
        Ok(())
    } else {
        Err(format!("must be between 0 and 1, got {eta}"))
    }
}

pub(crate) fn check_strength(strength: f32) -> Result<(), String> {
    if strength > 0.0 && strength <= 1.0 {
        Ok(())
    } else {
        Err(format!("must be in (0, 1], got {strength}"))
    }
}

pub(crate) fn check_unit_interval(value: f32) -> Result<(), String> {
    if (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(format!("must be between 0 and 1, got {value}"))
    }
}

pub(crate) fn check_control_scale(scale: f32) -> Result<(), String> {
    if scale.is_finite() && (0.0..=4.0).contains(&scale) {
        Ok(())
    } else {
        Err(format!("must be between 0 and 4, got {scale}"))
    }
}

pub(crate) fn check_control_window(start: f32, end: f32) -> Result<(), String> {
    if start < end {
        Ok(())
    } else {
        Err(format!("start ({start}) must be smaller than end ({end})"))
    }
}

fn check_latent_aligned(size: u32) -> Result<(), String> {
    if !(64..=4096).contains(&size) {
        Err(format!("must be between 64 and 4096 pixels, got {size}"))
    } else if size % 8 != 0 {
        Err(format!("must be a multiple of 8, got {size}"))
    } else {
        Ok(())
    }
}

fn check_batch(batch: BatchSettings) -> Result<(), String> {
    if batch.frames == 0 || batch.frames > MAX_BATCH_FRAMES {
        Err(format!(
            "frames must be between 1 and {MAX_BATCH_FRAMES}, got {}",
            batch.frames
        ))
    } else if batch.overlap >= batch.frames {
        Err(format!(
            "overlap ({}) must be smaller than frames ({})",
            batch.overlap, batch.frames
        ))
    } else {
        Ok(())
    }
}

fn check_crf(crf: u8) -> Result<(), String> {
    if crf <= 51 {
        Ok(())
    } else {
        Err(format!("must be between 0 and 51, got {crf}"))
    }
}

fn check_encoder_preset(name: &str) -> Result<(), String> {
    if ENCODER_PRESETS.contains(&name) {
        Ok(())
    } else {
        Err(format!(
            "unknown x264 preset {name:?}, expected one of {}",
            ENCODER_PRESETS.join(", ")
        ))
    }
}

// ---- field deserializers: parse, then apply a rule, so errors carry the field's location ----

/// Deserialize a number and apply `rule` *inside* the YAML scalar's visitor, so that the
/// error gets the value's own line, column and field path (a check after deserializing
/// would only get the enclosing mapping's position).
pub(crate) fn checked<'de, D, T>(
    deserializer: D,
    rule: fn(T) -> Result<(), String>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Number,
{
    deserializer.deserialize_any(NumberVisitor { rule })
}

/// The numeric field types presets use, with lossless conversions from YAML numbers.
pub(crate) trait Number: Copy + fmt::Display {
    const EXPECTING: &'static str;
    fn from_u64(v: u64) -> Option<Self>;
    fn from_i64(v: i64) -> Option<Self>;
    fn from_f64(v: f64) -> Option<Self>;
}

impl Number for u8 {
    const EXPECTING: &'static str = "an integer from 0 to 255";
    fn from_u64(v: u64) -> Option<Self> {
        u8::try_from(v).ok()
    }
    fn from_i64(v: i64) -> Option<Self> {
        u8::try_from(v).ok()
    }
    fn from_f64(_: f64) -> Option<Self> {
        None
    }
}

impl Number for u32 {
    const EXPECTING: &'static str = "a whole number";
    fn from_u64(v: u64) -> Option<Self> {
        u32::try_from(v).ok()
    }
    fn from_i64(v: i64) -> Option<Self> {
        u32::try_from(v).ok()
    }
    fn from_f64(_: f64) -> Option<Self> {
        None
    }
}

impl Number for f64 {
    const EXPECTING: &'static str = "a number";
    fn from_u64(v: u64) -> Option<Self> {
        Some(v as f64)
    }
    fn from_i64(v: i64) -> Option<Self> {
        Some(v as f64)
    }
    fn from_f64(v: f64) -> Option<Self> {
        Some(v)
    }
}

impl Number for f32 {
    const EXPECTING: &'static str = "a number";
    fn from_u64(v: u64) -> Option<Self> {
        Some(v as f32)
    }
    fn from_i64(v: i64) -> Option<Self> {
        Some(v as f32)
    }
    fn from_f64(v: f64) -> Option<Self> {
        Some(v as f32)
    }
}

struct NumberVisitor<T> {
    rule: fn(T) -> Result<(), String>,
}

impl<T: Number> NumberVisitor<T> {
    fn finish<E: de::Error>(self, value: Option<T>, shown: &dyn fmt::Display) -> Result<T, E> {
        let value =
            value.ok_or_else(|| E::custom(format!("expected {}, got {shown}", T::EXPECTING)))?;
        (self.rule)(value).map_err(E::custom)?;
        Ok(value)
    }
}

impl<'de, T: Number> Visitor<'de> for NumberVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(T::EXPECTING)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        self.finish(T::from_u64(v), &v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        self.finish(T::from_i64(v), &v)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        self.finish(T::from_f64(v), &v)
    }
}

fn steps_in_range<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    checked(d, check_steps)
}

fn cfg_in_range<'de, D: Deserializer<'de>>(d: D) -> Result<f32, D::Error> {
    checked(d, check_cfg)
}

fn eta_in_range<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    checked(d, check_eta).map(Some)
}

pub(crate) fn unit_interval_open_low<'de, D: Deserializer<'de>>(d: D) -> Result<f32, D::Error> {
    checked(d, check_strength)
}

pub(crate) fn unit_interval<'de, D: Deserializer<'de>>(d: D) -> Result<f32, D::Error> {
    checked(d, check_unit_interval)
}

pub(crate) fn control_scale_in_range<'de, D: Deserializer<'de>>(d: D) -> Result<f32, D::Error> {
    checked(d, check_control_scale)
}

fn latent_aligned_size<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    checked(d, check_latent_aligned)
}

fn crf_in_range<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    checked(d, check_crf)
}

pub(crate) fn non_empty_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    struct NonEmpty;
    impl<'de> Visitor<'de> for NonEmpty {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a non-empty string")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
            if v.trim().is_empty() {
                return Err(E::custom("must not be empty"));
            }
            Ok(v.to_string())
        }
    }
    d.deserialize_str(NonEmpty)
}

fn x264_speed<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    struct Speed;
    impl<'de> Visitor<'de> for Speed {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an x264 preset name")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
            check_encoder_preset(v).map_err(E::custom)?;
            Ok(v.to_string())
        }
    }
    d.deserialize_str(Speed)
}

/// `fps` as a number (`23.976`) or a ratio string (`"24000/1001"`); `null` = source rate.
fn optional_fps<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Rational>, D::Error> {
    d.deserialize_any(FpsVisitor)
}

fn serialize_fps<S: serde::Serializer>(fps: &Option<Rational>, s: S) -> Result<S::Ok, S::Error> {
    match fps {
        Some(rate) => s.serialize_some(&rate.to_string()),
        None => s.serialize_none(),
    }
}

/// Parses inside the visitor so errors carry the value's location (see [`checked`]).
struct FpsVisitor;

impl FpsVisitor {
    fn parse<E: de::Error>(text: &str) -> Result<Option<Rational>, E> {
        text.parse::<Rational>().map(Some).map_err(E::custom)
    }
}

impl<'de> Visitor<'de> for FpsVisitor {
    type Value = Option<Rational>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a frame rate: a number, a ratio like \"24000/1001\", or null")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Self::parse(&v.to_string())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Self::parse(&v.to_string())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Self::parse(&v.to_string())
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
        Self::parse(text)
    }
}

/// How the frames two neighbouring batches both render are combined (`batch.blend`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OverlapBlend {
    /// A linear ramp across the overlap ([`ramp_weight`]).
    #[default]
    Ramp,
    /// No blending ([`cut_weight`]): the later batch takes every shared frame, a hard cut
    /// where it starts, as if batches did not overlap. The baseline that shows what the
    /// ramp is for.
    Cut,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_per_frame() {
        assert_eq!(SeedPerFrame::Fixed.seed_for(7, 30), 7);
        assert_eq!(SeedPerFrame::Increment.seed_for(7, 30), 37);
        assert_eq!(SeedPerFrame::Increment.seed_for(u64::MAX, 1), 0);
    }

    const MINIMAL: &str = "model:\n  base: some/model\nprompt: a cat\n";

    fn parse(text: &str) -> Result<Preset, PresetError> {
        Preset::from_yaml(text, "test.yaml")
    }

    #[test]
    fn minimal_preset_gets_documented_defaults() {
        let p = parse(MINIMAL).unwrap();
        assert_eq!(p.negative_prompt, "");
        assert_eq!(p.sampler, SamplerSettings::default());
        assert_eq!(
            p.batch,
            BatchSettings {
                frames: 96,
                overlap: 10,
                blend: OverlapBlend::Ramp,
            }
        );
        assert_eq!(p.temporal, TemporalSettings::default());
        assert_eq!(p.sampler.seed_per_frame, SeedPerFrame::Fixed);
        assert_eq!(p.output.crf, 18);
        assert_eq!(p.output.fps, None);
        assert_eq!(p.output.encoder_preset, "medium");
        assert!(p.preprocess.pose.body && p.preprocess.pose.hands && p.preprocess.pose.face);
        assert!(!p.preprocess.softedge.safe);
        assert!(p.controlnets.is_empty());
    }

    /// `(line, column, field, message)` of a parse error.
    fn located(text: &str) -> (usize, usize, String, String) {
        match parse(text).unwrap_err() {
            PresetError::Parse {
                line,
                column,
                field,
                message,
                ..
            } => (line, column, field, message),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn eta_and_timestep_spacing_parse_and_reach_the_sampler() {
        let p = parse(&format!(
            "{MINIMAL}sampler:\n  scheduler: tcd\n  eta: 0.5\n  steps: 4\n"
        ))
        .unwrap();
        assert_eq!(p.sampler.scheduler, SchedulerKind::Tcd);
        assert_eq!(p.sampler.eta, Some(0.5));
        assert_eq!(p.sampler.effective_eta(), Some(0.5));
        // Absent: each scheduler's diffusers default.
        let tcd = parse(&format!("{MINIMAL}sampler: {{scheduler: tcd}}\n")).unwrap();
        assert_eq!(tcd.sampler.effective_eta(), Some(0.3));
        let ddim = parse(&format!("{MINIMAL}sampler: {{scheduler: ddim, eta: 1}}\n")).unwrap();
        assert_eq!(ddim.sampler.effective_eta(), Some(1.0));
        assert_eq!(SamplerSettings::default().effective_eta(), None);
        let p = parse(&format!(
            "{MINIMAL}sampler:\n  scheduler: euler\n  timestep_spacing: trailing\n"
        ))
        .unwrap();
        assert_eq!(p.sampler.timestep_spacing, Some(TimestepSpacing::Trailing));
        p.validate("test.yaml").unwrap();
    }

    #[test]
    fn unset_sampler_options_keep_the_fingerprint() {
        // Presets written before eta / timestep_spacing existed keep their cache keys.
        let p = parse(MINIMAL).unwrap();
        let json = serde_json::to_string(&p.sampler).unwrap();
        assert!(
            !json.contains("eta") && !json.contains("timestep_spacing"),
            "{json}"
        );
        let q = parse(&format!(
            "{MINIMAL}sampler: {{scheduler: ddim, eta: 0.2}}\n"
        ))
        .unwrap();
        assert_ne!(p.fingerprint(), q.fingerprint());
    }

    #[test]
    fn bad_eta_is_located_at_the_value() {
        for bad in ["1.5", "-0.1", ".nan"] {
            let (line, column, field, message) = located(&format!(
                "{MINIMAL}sampler:\n  scheduler: tcd\n  eta: {bad}\n"
            ));
            assert_eq!(
                (line, column, field.as_str()),
                (6, 8, "sampler.eta"),
                "{bad}"
            );
            assert!(message.contains("between 0 and 1"), "{bad}: {message}");
        }
        let (line, column, field, message) = located(&format!("{MINIMAL}sampler:\n  eta: lots\n"));
        assert_eq!((line, column, field.as_str()), (5, 8, "sampler.eta"));
        assert!(message.contains("invalid type"), "{message}");
    }

    #[test]
    fn bad_timestep_spacing_is_located_at_the_value() {
        let (line, column, field, message) = located(&format!(
            "{MINIMAL}sampler:\n  scheduler: euler\n  timestep_spacing: sideways\n"
        ));
        assert_eq!(
            (line, column, field.as_str()),
            (6, 21, "sampler.timestep_spacing")
        );
        assert!(
            message.contains("unknown variant `sideways`") && message.contains("`trailing`"),
            "{message}"
        );
    }

    #[test]
    fn options_a_scheduler_would_ignore_are_refused_at_the_sampler() {
        // eta with a scheduler whose step has none.
        let (line, column, field, message) = located(&format!(
            "{MINIMAL}sampler:\n  scheduler: euler_ancestral\n  eta: 0.5\n"
        ));
        assert_eq!((line, column, field.as_str()), (5, 3, "sampler"));
        assert!(
            message.contains("ddim and tcd") && message.contains("euler_ancestral"),
            "{message}"
        );
        // Without a scheduler key the default (euler_ancestral) is meant.
        let (_, _, field, _) = located(&format!("{MINIMAL}sampler:\n  eta: 0.5\n"));
        assert_eq!(field, "sampler");
        // LCM and TCD take no spacing (diffusers ignores it for them).
        for kind in ["lcm", "tcd"] {
            let (line, column, field, message) = located(&format!(
                "{MINIMAL}sampler:\n  scheduler: {kind}\n  timestep_spacing: trailing\n"
            ));
            assert_eq!((line, column, field.as_str()), (5, 3, "sampler"), "{kind}");
            assert!(
                message.contains("timestep_spacing") && message.contains(kind),
                "{message}"
            );
        }
    }

    #[test]
    fn validate_checks_the_sampler_options_of_presets_built_in_code() {
        let mut p = parse(MINIMAL).unwrap();
        p.sampler.eta = Some(2.0);
        p.sampler.scheduler = SchedulerKind::Tcd;
        let err = p.validate("code").unwrap_err().to_string();
        assert!(
            err.starts_with("code: sampler: ") && err.contains("between 0 and 1"),
            "{err}"
        );
        p.sampler.eta = None;
        p.sampler.timestep_spacing = Some(TimestepSpacing::Trailing);
        let err = p.validate("code").unwrap_err().to_string();
        assert!(err.contains("timestep_spacing (trailing)"), "{err}");
        p.sampler.scheduler = SchedulerKind::Ddim;
        p.validate("code").unwrap();
    }

    #[test]
    fn range_error_is_located_at_the_value() {
        let err = parse(&format!("{MINIMAL}sampler:\n  steps: 0\n")).unwrap_err();
        match err {
            PresetError::Parse {
                line,
                column,
                field,
                message,
                ..
            } => {
                assert_eq!((line, column), (5, 10));
                assert_eq!(field, "sampler.steps");
                assert!(message.contains("between 1 and 1000"), "{message}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn cross_field_error_names_the_section() {
        let text = format!("{MINIMAL}batch:\n  frames: 10\n  overlap: 10\n");
        let err = parse(&text).unwrap_err();
        let shown = err.to_string();
        assert!(
            shown.starts_with("test.yaml:5:3: batch: overlap (10)"),
            "{shown}"
        );
    }

    #[test]
    fn controlnet_window_must_be_ordered() {
        let text = format!(
            "{MINIMAL}controlnets:\n  - type: softedge\n    model: x/y\n    start: 0.8\n    end: 0.2\n"
        );
        let shown = parse(&text).unwrap_err().to_string();
        assert!(
            shown.contains("controlnets[0]: start (0.8) must be smaller than end (0.2)"),
            "{shown}"
        );
    }

    #[test]
    fn batch_frames_must_stay_below_200() {
        let text = format!("{MINIMAL}batch:\n  frames: 200\n");
        let shown = parse(&text).unwrap_err().to_string();
        assert!(
            shown.contains("frames must be between 1 and 199, got 200"),
            "{shown}"
        );
    }

    #[test]
    fn fps_accepts_numbers_and_ratios() {
        let fps =
            |text: &str| parse(&format!("{MINIMAL}output:\n  fps: {text}\n")).map(|p| p.output.fps);
        assert_eq!(fps("\"24000/1001\"").unwrap(), Rational::new(24000, 1001));
        assert_eq!(fps("23.976").unwrap(), Rational::new(24000, 1001));
        assert_eq!(fps("12.5").unwrap(), Rational::new(25, 2));
        assert_eq!(fps("30").unwrap(), Rational::new(30, 1));
        assert_eq!(fps("null").unwrap(), None);
        let shown = fps("fast").unwrap_err().to_string();
        assert!(
            shown.starts_with("test.yaml:5:8: output.fps: invalid frame rate"),
            "{shown}"
        );
        assert!(fps("0").is_err());
        assert!(fps("5000").is_err());
    }

    #[test]
    fn encoder_preset_must_be_an_x264_preset() {
        let p = parse(&format!("{MINIMAL}output:\n  encoder_preset: ultrafast\n")).unwrap();
        assert_eq!(p.output.encoder_preset, "ultrafast");
        let shown = parse(&format!("{MINIMAL}output:\n  encoder_preset: turbo\n"))
            .unwrap_err()
            .to_string();
        assert!(
            shown.starts_with(
                "test.yaml:5:19: output.encoder_preset: unknown x264 preset \"turbo\""
            ),
            "{shown}"
        );
    }

    #[test]
    fn names_match_the_yaml_spelling() {
        for kind in [
            SchedulerKind::Ddim,
            SchedulerKind::Euler,
            SchedulerKind::EulerAncestral,
            SchedulerKind::DpmPp2M,
            SchedulerKind::DpmPp2MKarras,
            SchedulerKind::Lcm,
            SchedulerKind::Tcd,
        ] {
            let yaml = format!("{MINIMAL}sampler:\n  scheduler: {kind}\n");
            assert_eq!(parse(&yaml).unwrap().sampler.scheduler, kind);
        }
        for kind in [
            ControlKind::Openpose,
            ControlKind::Softedge,
            ControlKind::Temporalnet,
        ] {
            let yaml = format!("{MINIMAL}controlnets:\n  - {{type: {kind}, model: m}}\n");
            assert_eq!(parse(&yaml).unwrap().controlnets[0].kind, kind);
        }
    }

    #[test]
    fn root_level_errors_have_no_field_prefix() {
        let shown = parse("prompt: x\n").unwrap_err().to_string();
        assert_eq!(shown, "test.yaml:1:1: missing field `model`");
    }

    #[test]
    fn message_splitting_only_takes_real_paths() {
        assert_eq!(
            split_field_and_message(
                "invalid type: string \"a\", expected u32 at line 2 column 3",
                2,
                3
            ),
            (
                String::new(),
                "invalid type: string \"a\", expected u32".to_string()
            )
        );
        assert_eq!(
            split_field_and_message(
                "controlnets[1].type: unknown variant `x` at line 8 column 11",
                8,
                11
            ),
            (
                "controlnets[1].type".to_string(),
                "unknown variant `x`".to_string()
            )
        );
    }

    #[test]
    fn fit_keeps_aspect_with_short_side_512_on_the_latent_grid() {
        assert_eq!(fit_to_input(512, 512), (512, 512));
        assert_eq!(fit_to_input(1920, 1080), (912, 512));
        assert_eq!(fit_to_input(1080, 1920), (512, 912));
        assert_eq!(fit_to_input(333, 500), (512, 768));
        assert_eq!(fit_to_input(0, 10), (512, 512));
    }

    #[test]
    fn validate_catches_what_code_changed() {
        let mut p = parse(MINIMAL).unwrap();
        p.batch.overlap = 200;
        let shown = p.validate("built").unwrap_err().to_string();
        assert!(shown.starts_with("built: batch: "), "{shown}");
    }

    #[test]
    fn seed_override_replaces_preset_seed_only() {
        let p = parse(&format!("{MINIMAL}sampler:\n  seed: 5\n  steps: 12\n")).unwrap();
        let q = p
            .clone()
            .with_overrides(&PresetOverrides { seed: Some(99) }, "t")
            .unwrap();
        assert_eq!(q.sampler.seed, 99);
        assert_eq!(q.sampler.steps, 12);
        let r = p
            .clone()
            .with_overrides(&PresetOverrides::default(), "t")
            .unwrap();
        assert_eq!(r, p);
    }

    #[test]
    fn fingerprint_ignores_formatting_but_not_content() {
        let a = parse(MINIMAL).unwrap();
        let b = parse("prompt:   a cat\nmodel: {base: some/model}\n").unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
        let mut c = a.clone();
        c.sampler.seed = 1;
        assert_ne!(a.fingerprint(), c.fingerprint());
    }
}
