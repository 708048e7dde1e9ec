//! Single-file checkpoints as users have them from A1111 / ComfyUI / civitai: one
//! `.safetensors` (or LDM `.ckpt`) holding UNet, VAE and CLIP under their original LDM names;
//! ControlNets in the original format (`control_v11p_sd15_openpose.safetensors`, TemporalNet's
//! difference ControlNet); standalone VAE files; fp16 or fp32.
//!
//! * [`keys`]: the LDM ↔ diffusers weight-name mapping (pure).
//! * [`weights`]: [`WeightMap`], a renaming, patching `VarBuilder` backend over memory-mapped
//!   files (LoRA patches are merged as each weight is read).
//! * [`checkpoint`]: what a file holds and each component's [`WeightMap`].
//! * [`infer`] / [`ldm_yaml`]: model configs from the tensor shapes (SD1.x / SD2.x) or from
//!   the LDM yaml; a diffusers config folder can be given instead ([`ConfigSource`]).
//!
//! Single files carry no tokenizer: it comes from the config folder, or from the family's
//! reference repo on the hub ([`Family::tokenizer_repo`]).

pub mod checkpoint;
pub mod infer;
pub mod keys;
pub mod ldm_yaml;
pub mod weights;

use std::path::{Path, PathBuf};

use crate::models::family::Family;
pub use checkpoint::{Contents, SingleFileCheckpoint, TextEncoderKind};
pub use weights::{is_pickle_path, Patch, TensorFile, WeightMap, WeightSource};

use crate::diffusion::schedulers::SchedulerConfig;
use crate::models::clip::ClipTextConfig;
use crate::models::controlnet::ControlNetConfig;
use crate::models::unet::UNetConfig;
use crate::models::vae::VaeConfig;

/// Errors of reading single-file checkpoints.
#[derive(Debug, thiserror::Error)]
pub enum SingleFileError {
    #[error("{0}: no such file")]
    NotFound(PathBuf),
    #[error("cannot read weights {path}: {source}")]
    Read {
        path: PathBuf,
        source: candle_core::Error,
    },
    #[error("{path} has no {component} (it holds: {found})")]
    MissingComponent {
        path: PathBuf,
        component: &'static str,
        found: String,
    },
    #[error("{weights}: no weight named {name}")]
    UnknownWeight { weights: String, name: String },
    #[error("{path}: cannot infer the {component} config from the weights: {message}. Give the model's config: a diffusers config folder or the original LDM yaml (preset `model.config`)")]
    Infer {
        path: PathBuf,
        component: &'static str,
        message: String,
    },
    #[error("model config {path}: {message}")]
    Config { path: PathBuf, message: String },
}

/// Where the configs of a single-file checkpoint come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// From tensor shapes (SD1.x / SD2.x checkpoints).
    Inferred,
    /// A diffusers folder: a pipeline (`unet/config.json`, `vae/config.json`,
    /// `text_encoder/config.json`, `tokenizer/`, `scheduler/`) or one model (`config.json`).
    DiffusersDir(PathBuf),
    /// The original LDM / A1111 yaml (`v1-inference.yaml`).
    LdmYaml(PathBuf),
}

impl ConfigSource {
    /// `None` → inferred; a directory → diffusers configs; a file → LDM yaml.
    pub fn from_option(path: Option<&Path>) -> Self {
        match path {
            None => ConfigSource::Inferred,
            Some(p) if p.is_dir() => ConfigSource::DiffusersDir(p.to_path_buf()),
            Some(p) => ConfigSource::LdmYaml(p.to_path_buf()),
        }
    }
}

/// The configs of whatever a checkpoint holds.
#[derive(Debug, Clone, Default)]
pub struct ResolvedConfigs {
    pub family: Option<Family>,
    pub unet: Option<UNetConfig>,
    pub vae: Option<VaeConfig>,
    pub text_encoder: Option<ClipTextConfig>,
    pub controlnet: Option<ControlNetConfig>,
    /// `tokenizer/` of a diffusers config folder.
    pub tokenizer_dir: Option<PathBuf>,
    /// `scheduler/scheduler_config.json` of a config folder, or SD's default with the yaml's
    /// prediction type.
    pub scheduler: Option<SchedulerConfig>,
}

fn from_value<T: serde::de::DeserializeOwned>(
    value: serde_json::Value,
    path: &Path,
) -> Result<T, SingleFileError> {
    serde_json::from_value(value).map_err(|e| SingleFileError::Config {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

fn config_error(path: &Path, e: impl std::fmt::Display) -> SingleFileError {
    SingleFileError::Config {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// The first of `candidates` (relative to `dir`) that exists.
fn first_file(dir: &Path, candidates: &[&str]) -> Option<PathBuf> {
    candidates.iter().map(|c| dir.join(c)).find(|p| p.is_file())
}

impl SingleFileCheckpoint {
    /// The configs of every component in the file, from `source`; components whose config
    /// the source lacks are inferred from shapes.
    pub fn configs(&self, source: &ConfigSource) -> Result<ResolvedConfigs, SingleFileError> {
        let contents = self.contents().clone();
        let mut out = ResolvedConfigs::default();
        let mut ldm = None;
        match source {
            ConfigSource::Inferred => {}
            ConfigSource::LdmYaml(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| config_error(path, e))?;
                let parsed = ldm_yaml::parse(&text).map_err(|e| config_error(path, e))?;
                out.family = parsed.family;
                let mut scheduler = SchedulerConfig::sd15();
                if parsed.prediction_type.is_some() {
                    scheduler.prediction_type = parsed.prediction_type.clone();
                }
                out.scheduler = Some(scheduler);
                ldm = Some((path.clone(), parsed));
            }
            ConfigSource::DiffusersDir(dir) => {
                if contents.unet {
                    if let Some(p) = first_file(dir, &["unet/config.json"]) {
                        out.unet =
                            Some(UNetConfig::from_file(&p).map_err(|e| config_error(&p, e))?);
                    }
                }
                if contents.vae.is_some() {
                    let candidates: &[&str] = if contents.unet {
                        &["vae/config.json"]
                    } else {
                        &["vae/config.json", "config.json"]
                    };
                    if let Some(p) = first_file(dir, candidates) {
                        out.vae = Some(VaeConfig::from_file(&p).map_err(|e| config_error(&p, e))?);
                    }
                }
                if contents.text_encoder.is_some() {
                    if let Some(p) = first_file(dir, &["text_encoder/config.json"]) {
                        out.text_encoder =
                            Some(ClipTextConfig::from_file(&p).map_err(|e| config_error(&p, e))?);
                    }
                }
                if contents.controlnet.is_some() {
                    if let Some(p) = first_file(dir, &["config.json", "controlnet/config.json"]) {
                        out.controlnet =
                            Some(ControlNetConfig::from_file(&p).map_err(|e| config_error(&p, e))?);
                    }
                }
                let tokenizer = dir.join("tokenizer");
                if tokenizer.is_dir() {
                    out.tokenizer_dir = Some(tokenizer);
                }
                if let Some(p) = first_file(dir, &["scheduler/scheduler_config.json"]) {
                    out.scheduler =
                        Some(SchedulerConfig::from_file(&p).map_err(|e| config_error(&p, e))?);
                }
            }
        }
        let path = self.path().to_path_buf();
        let infer_err = |component, message| SingleFileError::Infer {
            path: path.clone(),
            component,
            message,
        };
        let yaml_value = |pick: fn(&ldm_yaml::LdmConfigs) -> Option<serde_json::Value>| {
            ldm.as_ref()
                .and_then(|(p, parsed)| pick(parsed).map(|v| (p.clone(), v)))
        };

        if contents.unet && out.unet.is_none() {
            let (config, family) = match yaml_value(|l| l.unet.clone()) {
                Some((p, v)) => (from_value::<UNetConfig>(v, &p)?, None),
                None => {
                    let shapes = self.shapes_under(keys::LDM_UNET_PREFIX);
                    let (v, family) =
                        infer::unet_config(&shapes).map_err(|m| infer_err("UNet", m))?;
                    (from_value::<UNetConfig>(v, &path)?, Some(family))
                }
            };
            config
                .validate()
                .map_err(|e| infer_err("UNet", e.to_string()))?;
            out.family = out.family.or(family);
            out.unet = Some(config);
        }
        if let Some(unet) = &out.unet {
            if out.family.is_none() {
                if let crate::models::unet::PerBlock::Same(dim) = unet.cross_attention_dim {
                    out.family = Family::from_cross_attention_dim(dim);
                }
            }
        }
        if let (Some(layout), None) = (&contents.vae, &out.vae) {
            let value = match yaml_value(|l| l.vae.clone()) {
                Some((_, v)) => v,
                None => {
                    let prefix = match layout {
                        checkpoint::VaeLayout::Ldm { prefix } => prefix.clone(),
                        checkpoint::VaeLayout::Diffusers => {
                            return Err(infer_err(
                                "VAE",
                                "the VAE is in diffusers layout; give its config.json folder"
                                    .into(),
                            ))
                        }
                    };
                    infer::vae_config(&self.shapes_under(&prefix))
                        .map_err(|m| infer_err("VAE", m))?
                }
            };
            let config: VaeConfig = from_value(value, &path)?;
            config.validate().map_err(|e| infer_err("VAE", e))?;
            out.vae = Some(config);
        }
        if let (Some(kind), None) = (contents.text_encoder, &out.text_encoder) {
            let value = match kind {
                TextEncoderKind::OpenAiClip => {
                    infer::clip_config(&self.shapes_under(keys::LDM_CLIP_PREFIX))
                }
                TextEncoderKind::OpenClip => {
                    infer::open_clip_config(&self.shapes_under(keys::LDM_OPEN_CLIP_PREFIX))
                }
            }
            .map_err(|m| infer_err("text encoder", m))?;
            let config: ClipTextConfig = from_value(value, &path)?;
            config
                .validate()
                .map_err(|e| infer_err("text encoder", e))?;
            out.text_encoder = Some(config);
        }
        if let (Some(layout), None) = (&contents.controlnet, &out.controlnet) {
            let value =
                match yaml_value(|l| l.controlnet.clone()) {
                    Some((_, v)) => v,
                    None => match layout {
                        checkpoint::ControlNetLayout::Ldm { prefix } => {
                            let (v, family) = infer::controlnet_config(&self.shapes_under(prefix))
                                .map_err(|m| infer_err("ControlNet", m))?;
                            out.family = out.family.or(Some(family));
                            v
                        }
                        checkpoint::ControlNetLayout::Diffusers => return Err(infer_err(
                            "ControlNet",
                            "the ControlNet is in diffusers layout; give its config.json folder"
                                .into(),
                        )),
                    },
                };
            let config = ControlNetConfig::from_json(&value)
                .map_err(|e| infer_err("ControlNet", e.to_string()))?;
            out.controlnet = Some(config);
        }
        Ok(out)
    }

    /// The UNet's weights for `config`.
    pub fn unet_weights_for(&self, config: &UNetConfig) -> Result<WeightMap, SingleFileError> {
        let layers = uniform_layers(config, self.path())?;
        self.unet_weights(layers)
    }

    /// The ControlNet's weights for `config`.
    pub fn controlnet_weights_for(
        &self,
        config: &ControlNetConfig,
    ) -> Result<WeightMap, SingleFileError> {
        let layers = uniform_layers(&config.backbone, self.path())?;
        self.controlnet_weights(layers)
    }

    /// The VAE's weights for `config`.
    pub fn vae_weights_for(&self, config: &VaeConfig) -> Result<WeightMap, SingleFileError> {
        self.vae_weights(config.block_out_channels.len())
    }

    /// The text encoder's weights for `config`.
    pub fn text_encoder_weights_for(
        &self,
        config: &ClipTextConfig,
    ) -> Result<WeightMap, SingleFileError> {
        self.text_encoder_weights(config.num_hidden_layers, config.hidden_size)
    }
}

/// LDM UNets have the same number of layers in every block; diffusers' `layers_per_block`.
fn uniform_layers(config: &UNetConfig, path: &Path) -> Result<usize, SingleFileError> {
    let blocks = config.block_out_channels.len();
    let layers = config
        .layers_per_block
        .resolve(blocks, "layers_per_block")
        .map_err(|e| config_error(path, e))?;
    match layers.as_slice() {
        [first, rest @ ..] if rest.iter().all(|l| l == first) => Ok(*first),
        _ => Err(config_error(
            path,
            format!("layers_per_block {layers:?} differs between blocks, which the original layout cannot hold"),
        )),
    }
}
