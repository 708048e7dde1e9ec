//! The Stable Diffusion models a preset names, loaded whatever form the user has them in:
//! a diffusers folder or hub id, or a single-file checkpoint; an optional VAE override; LoRAs
//! merged at load; textual-inversion embeddings; clip skip. Also ControlNets from any source,
//! including difference ControlNets (which need the base UNet's weights).
//!
//! Loading runs in two stages so each can be tested and reported on: [`StackWeights::resolve`]
//! finds files, configs and builds the (LoRA-patched) [`WeightMap`]s without reading tensor
//! data; [`StackWeights::build`] reads the weights into the models.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use crate::diffusion::schedulers::{SchedulerConfig, SchedulerError};
use crate::loaders::embeddings::{EmbeddingError, TextualInversion};
use crate::loaders::lora::{apply_loras, LoraError, LoraSource, LoraSpec};
use crate::loaders::single_file::{
    ConfigSource, Patch, SingleFileCheckpoint, SingleFileError, TensorFile, WeightMap,
};
use crate::loaders::source::{
    Component, DiffusersPipelineFiles, HubOptions, LoadError, ModelFiles, ModelSource,
};
use crate::loaders::taesd::{self, TaesdError};
use crate::models::clip::{ClipError, ClipTextConfig, ClipTextEncoder};
use crate::models::controlnet::{ControlNetConfig, ControlNetModel};
use crate::models::family::Family;
use crate::models::tokenizer::{ClipTokenizer, TokenizerError};
use crate::models::unet::{PerBlock, UNet2DConditionModel, UNetConfig, UNetError};
use crate::models::vae::{AnyVaeConfig, Vae, VaeConfig, VaeError};
use crate::nn::precision::{with_weight_precision, WeightPrecision};
use crate::prompt::{PromptEncoder, PromptError};

/// Errors of resolving or loading the model stack.
#[derive(Debug, thiserror::Error)]
pub enum ModelStackError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    SingleFile(#[from] SingleFileError),
    #[error(transparent)]
    Lora(#[from] LoraError),
    /// A LoRA's file could not be found or fetched (`index` into the preset's `loras`).
    #[error("loras[{index}]: {source}")]
    LoraSource {
        index: usize,
        #[source]
        source: LoadError,
    },
    #[error(transparent)]
    Embedding(#[from] EmbeddingError),
    #[error("UNet / ControlNet: {0}")]
    UNet(#[from] UNetError),
    #[error("VAE: {0}")]
    Vae(#[from] VaeError),
    #[error(transparent)]
    Taesd(#[from] TaesdError),
    #[error("text encoder: {0}")]
    Clip(#[from] ClipError),
    #[error("tokenizer: {0}")]
    Tokenizer(#[from] TokenizerError),
    #[error(transparent)]
    Scheduler(#[from] SchedulerError),
    #[error(transparent)]
    Prompt(#[from] PromptError),
    #[error("{0}")]
    Invalid(String),
}

/// What to load (the preset's `model`, `loras` and `embeddings`).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelStackSpec {
    /// Hub id, diffusers folder, or single-file checkpoint.
    pub base: String,
    /// VAE override: hub id or folder of a VAE model (`AutoencoderKL` or `AutoencoderTiny`),
    /// a VAE file, or either file of the original TAESD pair.
    pub vae: Option<String>,
    /// Configs for a single-file base: a diffusers config folder or the LDM yaml.
    pub config: Option<PathBuf>,
    /// A1111's "clip skip": 1 = the last layer (no skip), 2 = the penultimate layer, ...
    pub clip_skip: usize,
    pub loras: Vec<LoraSpec>,
    /// Textual-inversion files; the trigger word is the file name.
    pub embeddings: Vec<PathBuf>,
    /// The weights of the UNet, VAE and ControlNets (the text encoder stays f32).
    pub precision: WeightPrecision,
}

impl ModelStackSpec {
    pub fn new(base: impl Into<String>) -> Self {
        Self {
            base: base.into(),
            vae: None,
            config: None,
            clip_skip: 1,
            loras: Vec::new(),
            embeddings: Vec::new(),
            precision: WeightPrecision::F32,
        }
    }
}

/// `loras` with each path turned into its file on disk (hub LoRAs from the cache, or
/// downloaded through `hub`), and a problem per LoRA that could not be found: all of them,
/// so they can be reported with the other missing models.
pub fn resolve_lora_files(
    loras: &[LoraSpec],
    hub: &HubOptions,
) -> (Vec<LoraSpec>, Vec<ModelStackError>) {
    let mut resolved = Vec::with_capacity(loras.len());
    let mut problems = Vec::new();
    for (index, lora) in loras.iter().enumerate() {
        match LoraSource::parse(&lora.path).resolve(hub) {
            Ok(path) => resolved.push(LoraSpec {
                path,
                ..lora.clone()
            }),
            Err(source) => problems.push(ModelStackError::LoraSource { index, source }),
        }
    }
    (resolved, problems)
}

/// A model's config and its weights (not yet read).
#[derive(Debug, Clone)]
pub struct Part<C> {
    pub config: C,
    pub weights: WeightMap,
}

/// Everything resolved, nothing read.
#[derive(Debug, Clone)]
pub struct StackWeights {
    pub unet: Part<UNetConfig>,
    /// The UNet's own weights before LoRA patches (difference ControlNets add these).
    pub base_unet_weights: WeightMap,
    pub vae: Part<AnyVaeConfig>,
    pub text_encoder: Part<ClipTextConfig>,
    pub tokenizer_dir: PathBuf,
    pub scheduler: SchedulerConfig,
    pub family: Option<Family>,
    pub clip_skip: usize,
    pub embeddings: Vec<PathBuf>,
    /// Modules patched per LoRA, in spec order.
    pub lora_modules: Vec<usize>,
    /// The UNet's and VAE's weights ([`ModelStackSpec::precision`]).
    pub precision: WeightPrecision,
}

/// The loaded models.
pub struct ModelStack {
    pub unet: UNet2DConditionModel,
    pub vae: Vae,
    pub text_encoder: ClipTextEncoder,
    pub tokenizer: ClipTokenizer,
    pub scheduler_config: SchedulerConfig,
    pub embeddings: Vec<TextualInversion>,
    /// A1111 convention (1 = no skip); `clip_skip - 1` is diffusers' `clip_skip`.
    pub clip_skip: usize,
    pub family: Option<Family>,
    /// For difference ControlNets.
    pub base_unet_weights: WeightMap,
}

/// diffusers-layout weights of one component file.
fn identity_map(label: String, files: &ModelFiles) -> Result<WeightMap, ModelStackError> {
    let file = TensorFile::open(&files.weights)?;
    Ok(WeightMap::identity(label, &file))
}

/// The single `layers_per_block` of a UNet config (LoRA names in the LDM layout need it).
pub fn uniform_layers_per_block(config: &UNetConfig) -> Option<usize> {
    match &config.layers_per_block {
        PerBlock::Same(n) => Some(*n),
        PerBlock::Each(v) if v.windows(2).all(|w| w[0] == w[1]) => v.first().copied(),
        PerBlock::Each(_) => None,
    }
}

/// A folder or hub repo holding one model at its root (`config.json` +
/// `diffusion_pytorch_model[.fp16].safetensors`), e.g. `stabilityai/sd-vae-ft-mse` or a
/// ControlNet. loading.rs resolves that layout as its ControlNet component.
fn resolve_root_model(source: &str, hub: &HubOptions) -> Result<ModelFiles, ModelStackError> {
    let files = DiffusersPipelineFiles::resolve_with(source, &[Component::ControlNet], hub)?;
    files.controlnet.ok_or_else(|| {
        ModelStackError::Invalid(format!("{source}: no config.json + weights at its root"))
    })
}

/// A VAE override's config and weights. `base_config` (the base model's VAE config) is used
/// for KL VAE single files when no explicit config is given: such an override must have the
/// base VAE's architecture. Tiny VAEs (TAESD) are recognised by their config's `_class_name`
/// or, in files, by their keys ([`crate::loaders::taesd`]).
fn resolve_vae_override(
    source: &str,
    explicit_config: Option<&Path>,
    base_config: Option<&VaeConfig>,
    hub: &HubOptions,
) -> Result<Part<AnyVaeConfig>, ModelStackError> {
    let tiny = |(config, weights)| Part {
        config: AnyVaeConfig::Tiny(config),
        weights,
    };
    match ModelSource::parse(source)? {
        ModelSource::SingleFile(path) => {
            let file = TensorFile::open(&path)?;
            if taesd::original_half(&file).is_some() {
                return Ok(tiny(taesd::load_original_pair(&path)?));
            }
            if taesd::is_diffusers_layout(&file) {
                return Ok(tiny(taesd::load_diffusers_file(&file)?));
            }
            let ckpt = SingleFileCheckpoint::from_file(file);
            let config = match (explicit_config, base_config) {
                (Some(cfg), _) => ckpt
                    .configs(&ConfigSource::from_option(Some(cfg)))?
                    .vae
                    .ok_or_else(|| {
                        ModelStackError::Invalid(format!("{}: no VAE config", cfg.display()))
                    })?,
                (None, Some(base)) => base.clone(),
                (None, None) => ckpt.configs(&ConfigSource::Inferred)?.vae.ok_or_else(|| {
                    ModelStackError::Invalid(format!("{}: holds no VAE", path.display()))
                })?,
            };
            let weights = ckpt.vae_weights_for(&config)?;
            Ok(Part {
                config: AnyVaeConfig::Kl(config),
                weights,
            })
        }
        ModelSource::Local(dir) if dir.join("vae/config.json").is_file() => {
            let files = DiffusersPipelineFiles::resolve_with(source, &[Component::Vae], hub)?;
            let vae = files
                .vae
                .ok_or_else(|| ModelStackError::Invalid(format!("{source}: no vae/ files")))?;
            Ok(Part {
                config: AnyVaeConfig::from_file(&vae.config)?,
                weights: identity_map(format!("VAE {source}"), &vae)?,
            })
        }
        ModelSource::Local(dir) if !dir.join("config.json").is_file() => {
            match taesd::original_pair_in(&dir) {
                Some(encoder) => Ok(tiny(taesd::load_original_pair(&encoder)?)),
                // Reports the missing config.json and weights.
                None => root_vae(source, hub),
            }
        }
        ModelSource::Local(_) | ModelSource::Hub { .. } => root_vae(source, hub),
    }
}

/// A VAE folder or hub repo with its `config.json` and weights at the root (`AutoencoderKL`
/// or, by its `_class_name`, `AutoencoderTiny`).
fn root_vae(source: &str, hub: &HubOptions) -> Result<Part<AnyVaeConfig>, ModelStackError> {
    let files = resolve_root_model(source, hub)?;
    Ok(Part {
        config: AnyVaeConfig::from_file(&files.config)?,
        weights: identity_map(format!("VAE {source}"), &files)?,
    })
}

impl StackWeights {
    /// Resolves every file of `spec` (hub downloads through `hub`) and queues LoRA patches.
    pub fn resolve(spec: &ModelStackSpec, hub: &HubOptions) -> Result<Self, ModelStackError> {
        let (mut unet, vae_part, text_encoder, tokenizer_dir, scheduler, family) =
            match ModelSource::parse(&spec.base)? {
                ModelSource::SingleFile(path) => {
                    let ckpt = SingleFileCheckpoint::open(&path)?;
                    let missing = |what: &str| {
                        ModelStackError::Invalid(format!(
                            "{} holds no {what} (it holds: {})",
                            path.display(),
                            ckpt.contents().describe()
                        ))
                    };
                    if !ckpt.contents().unet {
                        return Err(missing("UNet"));
                    }
                    if ckpt.contents().text_encoder.is_none() {
                        return Err(missing("text encoder"));
                    }
                    let configs =
                        ckpt.configs(&ConfigSource::from_option(spec.config.as_deref()))?;
                    let unet_config = configs.unet.clone().ok_or_else(|| missing("UNet"))?;
                    let text_config = configs
                        .text_encoder
                        .clone()
                        .ok_or_else(|| missing("text encoder"))?;
                    let unet = Part {
                        weights: ckpt.unet_weights_for(&unet_config)?,
                        config: unet_config,
                    };
                    let text = Part {
                        weights: ckpt.text_encoder_weights_for(&text_config)?,
                        config: text_config,
                    };
                    let vae = match &configs.vae {
                        Some(config) => Some(Part {
                            weights: ckpt.vae_weights_for(config)?,
                            config: AnyVaeConfig::Kl(config.clone()),
                        }),
                        None => None,
                    };
                    let tokenizer_dir = match configs.tokenizer_dir.clone() {
                        Some(dir) => dir,
                        None => {
                            let family = configs.family.ok_or_else(|| {
                                ModelStackError::Invalid(format!(
                                    "{}: cannot tell which tokenizer the checkpoint needs; give model.config (a diffusers folder with tokenizer/)",
                                    path.display()
                                ))
                            })?;
                            DiffusersPipelineFiles::resolve_with(
                                family.tokenizer_repo(),
                                &[Component::Tokenizer],
                                hub,
                            )?
                            .tokenizer
                            .map(|t| t.dir)
                            .ok_or_else(|| {
                                ModelStackError::Invalid(format!(
                                    "no tokenizer in {}",
                                    family.tokenizer_repo()
                                ))
                            })?
                        }
                    };
                    let scheduler = configs
                        .scheduler
                        .clone()
                        .unwrap_or_else(SchedulerConfig::sd15);
                    (unet, vae, text, tokenizer_dir, scheduler, configs.family)
                }
                ModelSource::Local(_) | ModelSource::Hub { .. } => {
                    if let Some(config) = &spec.config {
                        return Err(ModelStackError::Invalid(format!(
                            "model.config ({}) only applies to single-file checkpoints; {} is a diffusers model",
                            config.display(),
                            spec.base
                        )));
                    }
                    let mut components = vec![
                        Component::Unet,
                        Component::TextEncoder,
                        Component::Tokenizer,
                    ];
                    if spec.vae.is_none() {
                        components.push(Component::Vae);
                    }
                    let files = DiffusersPipelineFiles::resolve_with(&spec.base, &components, hub)?;
                    let need = |what: &'static str| {
                        ModelStackError::Invalid(format!("{} lacks its {what} files", spec.base))
                    };
                    let unet_files = files.unet.as_ref().ok_or_else(|| need("unet"))?;
                    let text_files = files
                        .text_encoder
                        .as_ref()
                        .ok_or_else(|| need("text_encoder"))?;
                    let tokenizer = files.tokenizer.as_ref().ok_or_else(|| need("tokenizer"))?;
                    let unet = Part {
                        config: UNetConfig::from_file(&unet_files.config)?,
                        weights: identity_map(format!("UNet of {}", spec.base), unet_files)?,
                    };
                    let text = Part {
                        config: ClipTextConfig::from_file(&text_files.config)?,
                        weights: identity_map(
                            format!("text encoder of {}", spec.base),
                            text_files,
                        )?,
                    };
                    let vae = match &files.vae {
                        Some(v) => Some(Part {
                            config: AnyVaeConfig::from_file(&v.config)?,
                            weights: identity_map(format!("VAE of {}", spec.base), v)?,
                        }),
                        None => None,
                    };
                    let scheduler = match files
                        .model_index
                        .as_ref()
                        .and_then(|index| index.parent())
                        .map(|root| root.join("scheduler/scheduler_config.json"))
                        .filter(|p| p.is_file())
                    {
                        Some(path) => SchedulerConfig::from_file(&path)?,
                        None => SchedulerConfig::sd15(),
                    };
                    let family = match unet.config.cross_attention_dim {
                        PerBlock::Same(dim) => Family::from_cross_attention_dim(dim),
                        PerBlock::Each(_) => None,
                    };
                    (unet, vae, text, tokenizer.dir.clone(), scheduler, family)
                }
            };
        let vae = match &spec.vae {
            Some(source) => resolve_vae_override(
                source,
                None,
                vae_part.as_ref().and_then(|p| p.config.as_kl()),
                hub,
            )?,
            None => vae_part.ok_or_else(|| {
                ModelStackError::Invalid(format!(
                    "{} holds no VAE: set model.vae to a VAE file, folder or hub id",
                    spec.base
                ))
            })?,
        };
        let channels = vae.config.latent_channels();
        let unet_in = unet.config.in_channels;
        if spec.vae.is_some() && unet_in != channels && unet_in != 2 * channels + 1 {
            return Err(ModelStackError::Invalid(format!(
                "model.vae makes {channels} latent channels; the UNet of {} takes {unet_in} input channels",
                spec.base
            )));
        }
        let layers = text_encoder.config.num_hidden_layers;
        if spec.clip_skip == 0 || spec.clip_skip > layers {
            return Err(ModelStackError::Invalid(format!(
                "model.clip_skip {} must be between 1 (last layer) and {layers} (the text encoder's layers)",
                spec.clip_skip
            )));
        }
        let base_unet_weights = unet.weights.clone();
        let mut text_encoder = text_encoder;
        let (loras, mut problems) = resolve_lora_files(&spec.loras, hub);
        if !problems.is_empty() {
            return Err(problems.remove(0));
        }
        let lora_modules = apply_loras(
            &loras,
            &mut unet.weights,
            uniform_layers_per_block(&unet.config),
            &mut text_encoder.weights,
        )?;
        Ok(Self {
            unet,
            base_unet_weights,
            vae,
            text_encoder,
            tokenizer_dir,
            scheduler,
            family,
            clip_skip: spec.clip_skip,
            embeddings: spec.embeddings.clone(),
            lora_modules,
            precision: spec.precision,
        })
    }

    /// Reads the weights into the models.
    pub fn build(self, device: &Device) -> Result<ModelStack, ModelStackError> {
        let (unet_weights, vae_weights) = (self.unet.weights, self.vae.weights);
        let (unet, vae) = with_weight_precision(self.precision, || {
            let unet =
                UNet2DConditionModel::load(unet_weights.into_var_builder(device), &self.unet.config)?;
            let vae = Vae::load(vae_weights.into_var_builder(device), &self.vae.config)?;
            Ok::<_, ModelStackError>((unet, vae))
        })?;
        let text_encoder = ClipTextEncoder::load(
            self.text_encoder.weights.into_var_builder(device),
            &self.text_encoder.config,
        )?;
        let tokenizer = ClipTokenizer::from_dir(&self.tokenizer_dir)?;
        let embeddings = self
            .embeddings
            .iter()
            .map(|p| TextualInversion::load(p, self.text_encoder.config.hidden_size))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ModelStack {
            unet,
            vae,
            text_encoder,
            tokenizer,
            scheduler_config: self.scheduler,
            embeddings,
            clip_skip: self.clip_skip,
            family: self.family,
            base_unet_weights: self.base_unet_weights,
        })
    }
}

impl ModelStack {
    /// An A1111-style prompt encoder (weights, long prompts, BREAK) with this stack's
    /// textual-inversion embeddings and clip skip.
    pub fn prompt_encoder(&self, device: &Device) -> Result<PromptEncoder<'_>, PromptError> {
        PromptEncoder::new(
            &self.tokenizer,
            &self.text_encoder,
            &self.embeddings,
            self.clip_skip,
            device,
        )
    }

    /// The text conditioning of one generation: the prompt, and with classifier-free guidance
    /// the negative prompt, padded to the same length (`[1, 77·chunks, hidden]` each).
    pub fn encode_prompts(
        &self,
        prompt: &str,
        negative_prompt: &str,
        guidance: bool,
        device: &Device,
    ) -> Result<(Tensor, Option<Tensor>), PromptError> {
        let encoder = self.prompt_encoder(device)?;
        if guidance {
            let (cond, uncond) = encoder.encode_pair(prompt, negative_prompt)?;
            Ok((cond, Some(uncond)))
        } else {
            Ok((encoder.encode(prompt)?, None))
        }
    }

    /// Resolves and loads `spec`.
    pub fn load(
        spec: &ModelStackSpec,
        hub: &HubOptions,
        device: &Device,
    ) -> Result<Self, ModelStackError> {
        StackWeights::resolve(spec, hub)?.build(device)
    }
}

/// A ControlNet's config and weights from a hub id, diffusers folder or single file.
/// `config` applies to single files (a folder with `config.json`, or the `cldm` yaml);
/// without it the config is inferred from the weights. Difference ControlNets get
/// `base_unet`'s weights added to every weight they share with it.
pub fn resolve_controlnet(
    source: &str,
    config: Option<&Path>,
    base_unet: Option<&WeightMap>,
    hub: &HubOptions,
) -> Result<Part<ControlNetConfig>, ModelStackError> {
    match ModelSource::parse(source)? {
        ModelSource::SingleFile(path) => {
            let ckpt = SingleFileCheckpoint::open(&path)?;
            let configs = ckpt.configs(&ConfigSource::from_option(config))?;
            let cn_config = configs.controlnet.ok_or_else(|| {
                ModelStackError::Invalid(format!(
                    "{} holds no ControlNet (it holds: {})",
                    path.display(),
                    ckpt.contents().describe()
                ))
            })?;
            let mut weights = ckpt.controlnet_weights_for(&cn_config)?;
            if ckpt.contents().controlnet_difference {
                let base = base_unet.ok_or_else(|| {
                    ModelStackError::Invalid(format!(
                        "{} is a difference ControlNet: it needs the base model's UNet weights",
                        path.display()
                    ))
                })?;
                add_base_weights(&mut weights, base)?;
            }
            Ok(Part {
                config: cn_config,
                weights,
            })
        }
        ModelSource::Local(_) | ModelSource::Hub { .. } => {
            if config.is_some() {
                return Err(ModelStackError::Invalid(format!(
                    "a ControlNet config only applies to single files; {source} is a diffusers model"
                )));
            }
            let files = resolve_root_model(source, hub)?;
            Ok(Part {
                config: ControlNetConfig::from_file(&files.config)?,
                weights: identity_map(format!("ControlNet {source}"), &files)?,
            })
        }
    }
}

/// Difference ControlNets (ComfyUI `load_controlnet`, sd-webui-controlnet): every weight the
/// ControlNet shares with the UNet is stored minus the base model's, so the base is added back.
pub fn add_base_weights(
    controlnet: &mut WeightMap,
    base_unet: &WeightMap,
) -> Result<usize, ModelStackError> {
    let shared: Vec<String> = controlnet
        .names()
        .filter(|n| base_unet.contains(n))
        .map(str::to_string)
        .collect();
    if shared.is_empty() {
        return Err(ModelStackError::Invalid(format!(
            "{} shares no weight with {}",
            controlnet.label(),
            base_unet.label()
        )));
    }
    for name in &shared {
        if let Some(source) = base_unet.source(name) {
            controlnet.add_patch(name, Patch::Add(source.clone()))?;
        }
    }
    Ok(shared.len())
}

/// Loads a ControlNet (see [`resolve_controlnet`]).
pub fn load_controlnet(
    source: &str,
    config: Option<&Path>,
    base_unet: Option<&WeightMap>,
    hub: &HubOptions,
    device: &Device,
) -> Result<ControlNetModel, ModelStackError> {
    let part = resolve_controlnet(source, config, base_unet, hub)?;
    Ok(ControlNetModel::load(
        part.weights.into_var_builder(device),
        &part.config,
    )?)
}
