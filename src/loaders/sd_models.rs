//! The Stable Diffusion models of a render: the model stack (so single-file checkpoints,
//! LoRAs, textual inversion and clip skip work) and its ControlNets, found first and then
//! read onto the chosen device ([`ModelWeights`], keyed by [`ModelKey`] so that jobs on the
//! same models share them through [`crate::loaders::model_cache::ModelCache`]), and combined
//! with a job's prompt (A1111 weighting) in [`LoadedModels`].

use std::sync::Arc;

use candle_core::Device;

use crate::diffusion::guidance::uses_cfg;
use crate::diffusion::image_pipeline::StableDiffusion;
use crate::diffusion::sampler::TextConditioning;
use crate::loaders::embeddings::TextualInversion;
use crate::loaders::model_stack::{
    resolve_controlnet, resolve_lora_files, ModelStack, ModelStackError, ModelStackSpec, Part,
    StackWeights,
};
use crate::loaders::source::HubOptions;
use crate::models::controlnet::{ControlNetConfig, ControlNetModel};
use crate::nn::precision::with_weight_precision;
use crate::prompt::{PromptEncoder, PromptError};

/// Errors of finding, reading and preparing the SD models.
#[derive(Debug, thiserror::Error)]
pub enum SdModelsError {
    /// Every model that could not be resolved (missing files, ...), all at once.
    #[error("{}", join_errors(.0))]
    Missing(Vec<ModelStackError>),
    #[error("loading {what}: {source}")]
    Load {
        what: String,
        #[source]
        source: Box<ModelStackError>,
    },
    #[error("encoding the prompt: {0}")]
    Prompt(#[source] Box<PromptError>),
}

impl From<PromptError> for SdModelsError {
    fn from(e: PromptError) -> Self {
        SdModelsError::Prompt(Box::new(e))
    }
}

fn join_errors(errors: &[ModelStackError]) -> String {
    let parts: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    parts.join("\n")
}

/// What decides the weights a render loads: the model stack and the ControlNet models in
/// order (compared by value).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelKey {
    pub models: ModelStackSpec,
    /// Hub id, diffusers folder or file of each ControlNet, in the render's order.
    pub controlnets: Vec<String>,
}

/// The prompt a job encodes with the models.
#[derive(Debug, Clone, Copy)]
pub struct TextPrompt<'a> {
    pub prompt: &'a str,
    pub negative_prompt: &'a str,
    /// Without classifier-free guidance the negative prompt is not encoded.
    pub guidance_scale: f64,
}

/// The weights of a render: the model stack and its ControlNets, without anything that
/// depends on the job's prompt.
pub struct ModelWeights {
    pub sd: Arc<StableDiffusion>,
    /// Distinct ControlNet models; `net_of[k]` is the model of `key.controlnets[k]`.
    pub nets: Vec<Arc<ControlNetModel>>,
    pub net_of: Vec<usize>,
    /// Textual-inversion embeddings and clip skip: how prompts are encoded with these models.
    embeddings: Arc<Vec<TextualInversion>>,
    clip_skip: usize,
}

/// Every model file of a key, found (hub ids through the Hugging Face cache, downloaded
/// when online) but not read.
struct ResolvedModels {
    stack: StackWeights,
    distinct: Vec<String>,
    net_of: Vec<usize>,
    net_parts: Vec<Part<ControlNetConfig>>,
}

impl ResolvedModels {
    /// Problems of all models are reported together ([`SdModelsError::Missing`]).
    fn resolve(key: &ModelKey, hub: &HubOptions) -> Result<Self, SdModelsError> {
        // The LoRA files apart, so a missing (hub) LoRA is listed with the other models; the
        // stack is still resolved without it to find what else is missing.
        let (loras, lora_problems) = resolve_lora_files(&key.models.loras, hub);
        let mut problems = Vec::new();
        let models = ModelStackSpec {
            loras,
            ..key.models.clone()
        };
        let stack = StackWeights::resolve(&models, hub)
            .map_err(|e| problems.push(e))
            .ok();
        let mut distinct: Vec<String> = Vec::new();
        let mut net_of = Vec::new();
        for model in &key.controlnets {
            let k = distinct.iter().position(|m| m == model).unwrap_or_else(|| {
                distinct.push(model.clone());
                distinct.len() - 1
            });
            net_of.push(k);
        }
        let base_unet = stack.as_ref().map(|s| &s.base_unet_weights);
        let net_parts: Vec<_> = distinct
            .iter()
            .filter_map(|source| {
                resolve_controlnet(source, None, base_unet, hub)
                    .map_err(|e| problems.push(e))
                    .ok()
            })
            .collect();
        // Listed after the base model and the ControlNets, in the preset's order.
        problems.extend(lora_problems);
        match stack {
            Some(stack) if problems.is_empty() => Ok(Self {
                stack,
                distinct,
                net_of,
                net_parts,
            }),
            _ => Err(SdModelsError::Missing(problems)),
        }
    }
}

impl ModelWeights {
    /// Whether every model file of `key` can be found (downloading hub files when online),
    /// without reading any weights: the list of what is missing, all at once.
    pub fn check_available(key: &ModelKey, hub: &HubOptions) -> Result<(), SdModelsError> {
        ResolvedModels::resolve(key, hub).map(drop)
    }

    /// Resolve every model of `key` first, so that missing files of all models are reported
    /// together; then read the weights onto `device`.
    pub fn load(key: &ModelKey, hub: &HubOptions, device: &Device) -> Result<Self, SdModelsError> {
        let resolved = ResolvedModels::resolve(key, hub)?;
        let stack = resolved
            .stack
            .build(device)
            .map_err(|source| SdModelsError::Load {
                what: key.models.base.clone(),
                source: Box::new(source),
            })?;
        let sd = StableDiffusion::from_parts(
            stack.unet,
            stack.vae,
            stack.text_encoder,
            stack.tokenizer,
            stack.scheduler_config,
            device,
        );
        let mut nets = Vec::with_capacity(resolved.distinct.len());
        for (source, part) in resolved.distinct.iter().zip(resolved.net_parts) {
            let net = with_weight_precision(key.models.precision, || {
                ControlNetModel::load(part.weights.into_var_builder(device), &part.config)
            })
            .map_err(|e| SdModelsError::Load {
                    what: source.clone(),
                    source: Box::new(e.into()),
                })?;
            nets.push(Arc::new(net));
        }
        Ok(Self {
            sd: Arc::new(sd),
            nets,
            net_of: resolved.net_of,
            embeddings: Arc::new(stack.embeddings),
            clip_skip: stack.clip_skip,
        })
    }

    /// The prompt and negative prompt (A1111 weighting, embeddings, clip skip).
    pub fn encode_text(&self, text: TextPrompt<'_>) -> Result<TextConditioning, SdModelsError> {
        let sd = &self.sd;
        let encoder = PromptEncoder::new(
            &sd.tokenizer,
            &sd.text_encoder,
            &self.embeddings,
            self.clip_skip,
            sd.device(),
        )?;
        Ok(if uses_cfg(text.guidance_scale) {
            let (cond, uncond) = encoder.encode_pair(text.prompt, text.negative_prompt)?;
            TextConditioning {
                cond,
                uncond: Some(uncond),
            }
        } else {
            TextConditioning {
                cond: encoder.encode(text.prompt)?,
                uncond: None,
            }
        })
    }

    /// The UNet's channels per level: SD1.5 has `[320, 640, 1280, 1280]`; a few channels
    /// mean a random test model.
    pub fn unet_channels(&self) -> &[usize] {
        &self.sd.unet.config().block_out_channels
    }
}

/// The models of a render with the job's text conditioning, shared (with a detailer, for
/// one). The weights may be shared with other jobs ([`ModelWeights`]).
pub struct LoadedModels {
    pub sd: Arc<StableDiffusion>,
    /// Distinct ControlNet models; `net_of[k]` is the model of the render's ControlNet `k`.
    pub nets: Vec<Arc<ControlNetModel>>,
    pub net_of: Vec<usize>,
    /// The preset's prompt and negative prompt (A1111 weighting, embeddings, clip skip).
    pub text: TextConditioning,
}

impl LoadedModels {
    /// Load the weights of `key` onto `device` (see [`ModelWeights::load`]) and encode
    /// `text`.
    pub fn load(
        key: &ModelKey,
        text: TextPrompt<'_>,
        hub: &HubOptions,
        device: &Device,
    ) -> Result<Self, SdModelsError> {
        Self::from_weights(&ModelWeights::load(key, hub, device)?, text)
    }

    /// `text` on weights loaded for the job's [`ModelKey`].
    pub fn from_weights(
        weights: &ModelWeights,
        text: TextPrompt<'_>,
    ) -> Result<Self, SdModelsError> {
        Ok(Self {
            sd: weights.sd.clone(),
            nets: weights.nets.clone(),
            net_of: weights.net_of.clone(),
            text: weights.encode_text(text)?,
        })
    }

    /// The UNet's channels per level: SD1.5 has `[320, 640, 1280, 1280]`; a few channels
    /// mean a random test model.
    pub fn unet_channels(&self) -> &[usize] {
        &self.sd.unet.config().block_out_channels
    }

    /// The model of the render's ControlNet `k`.
    pub fn controlnet(&self, k: usize) -> Arc<ControlNetModel> {
        self.nets[self.net_of[k]].clone()
    }
}

impl StableDiffusion {
    /// Loads the model stack of `spec` (a diffusers folder, hub id or single-file checkpoint,
    /// with its VAE override, LoRAs, embeddings; see [`ModelStack`]).
    pub fn load(
        spec: &ModelStackSpec,
        hub: &HubOptions,
        device: &Device,
    ) -> Result<Self, ModelStackError> {
        Ok(Self::from_stack(
            ModelStack::load(spec, hub, device)?,
            device,
        ))
    }

    /// The image models of a loaded stack (its embeddings and clip skip are the prompt
    /// encoder's business: [`ModelStack::encode_prompts`]).
    pub fn from_stack(stack: ModelStack, device: &Device) -> Self {
        Self::from_parts(
            stack.unet,
            stack.vae,
            stack.text_encoder,
            stack.tokenizer,
            stack.scheduler_config,
            device,
        )
    }
}
