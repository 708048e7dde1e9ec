//! What the SD renderer needs from a preset, with model locations resolved ([`SdRenderConfig`],
//! built once by the resolver in `crate::app::resolve`), and where each ControlNet's control
//! image comes from.

use std::sync::Arc;

use crate::diffusion::deep_cache::DeepCacheSettings;
use crate::diffusion::image_pipeline::GenerationSettings;
use crate::diffusion::latents::strength_scheduler;
use crate::diffusion::schedulers::{SamplerOptions, Scheduler, SchedulerConfig, SchedulerError};
use crate::flow::FlowParams;
use crate::loaders::model_stack::ModelStackSpec;
use crate::loaders::sd_models::{LoadedModels, ModelKey, TextPrompt};
use crate::models::controlnet::ControlNetModel;
use crate::preset::temporal::TemporalSettings;
use crate::preset::{ControlKind, SchedulerKind, SeedPerFrame};

/// Where a ControlNet's control image comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlSource {
    /// A map a preprocessor made (openpose, softedge).
    Map(ControlKind),
    /// The previous output frame (TemporalNet), optionally warped by the input's flow.
    PreviousOutput { warp: bool },
}

/// One ControlNet of the render.
#[derive(Debug, Clone, PartialEq)]
pub struct ControlNetPlan {
    pub source: ControlSource,
    /// Hub id, diffusers folder or file.
    pub model: String,
    pub scale: f64,
    pub start: f64,
    pub end: f64,
    pub guess_mode: bool,
}

/// What the renderer needs from a preset, with model locations resolved: built by the
/// resolver (`crate::app::resolve`, `SdRenderConfig::from_preset` there).
#[derive(Debug, Clone, PartialEq)]
pub struct SdRenderConfig {
    /// Base model (diffusers folder, hub id or single file), VAE, LoRAs, embeddings.
    pub models: ModelStackSpec,
    pub prompt: String,
    pub negative_prompt: String,
    pub width: u32,
    pub height: u32,
    pub steps: usize,
    pub guidance_scale: f64,
    pub scheduler: SchedulerKind,
    /// The preset's `sampler.eta` (default filled in) and `sampler.timestep_spacing`.
    pub sampler_options: SamplerOptions,
    pub seed: u64,
    pub seed_per_frame: SeedPerFrame,
    /// img2img strength from the source frame (1 = txt2img).
    pub strength: f64,
    pub deep_cache: Option<DeepCacheSettings>,
    pub controlnets: Vec<ControlNetPlan>,
    pub temporal: TemporalSettings,
    pub flow: FlowParams,
}

impl SdRenderConfig {
    /// What decides the weights this config loads.
    pub fn model_key(&self) -> ModelKey {
        ModelKey {
            models: self.models.clone(),
            controlnets: self.controlnets.iter().map(|c| c.model.clone()).collect(),
        }
    }

    /// The prompt the models encode for this config.
    pub fn text_prompt(&self) -> TextPrompt<'_> {
        TextPrompt {
            prompt: &self.prompt,
            negative_prompt: &self.negative_prompt,
            guidance_scale: self.guidance_scale,
        }
    }

    /// The model of the first ControlNet of `kind`, if any.
    pub fn controlnet_of_kind(
        &self,
        models: &LoadedModels,
        kind: ControlKind,
    ) -> Option<Arc<ControlNetModel>> {
        self.controlnets
            .iter()
            .position(|c| c.source == ControlSource::Map(kind))
            .map(|k| models.controlnet(k))
    }

    /// The preset's scheduler on the model's scheduler `config` (with the preset's eta and
    /// timestep spacing), its `steps`-step schedule shortened by `strength`.
    pub fn scheduler(
        &self,
        config: &SchedulerConfig,
        steps: usize,
        strength: f64,
    ) -> Result<Box<dyn Scheduler>, SchedulerError> {
        strength_scheduler(
            self.scheduler,
            config,
            &self.sampler_options,
            steps,
            strength,
        )
    }

    /// The prompt, size, steps, guidance, scheduler (with the sampler options) and seed as
    /// the image and video pipelines take them.
    pub fn generation_settings(&self) -> GenerationSettings {
        GenerationSettings {
            prompt: self.prompt.clone(),
            negative_prompt: self.negative_prompt.clone(),
            width: self.width as usize,
            height: self.height as usize,
            steps: self.steps,
            guidance_scale: self.guidance_scale,
            scheduler: self.scheduler,
            options: self.sampler_options,
            seed: self.seed,
            deep_cache: self.deep_cache,
        }
    }

    /// The preprocessor maps the ControlNets need, without repeats.
    pub fn required_maps(&self) -> Vec<ControlKind> {
        let mut kinds = Vec::new();
        for c in &self.controlnets {
            if let ControlSource::Map(kind) = c.source {
                if !kinds.contains(&kind) {
                    kinds.push(kind);
                }
            }
        }
        kinds
    }

    /// Whether an anchor frame must be rendered before the first batch.
    pub fn needs_anchor(&self) -> bool {
        let c = &self.temporal.cross_frame_attention;
        c.active() && c.anchor
    }

    /// Whether a frame needs the input's optical flow from the previous frame.
    pub fn needs_flow(&self) -> bool {
        self.temporal.flow_init.enabled
            || self
                .controlnets
                .iter()
                .any(|c| c.source == ControlSource::PreviousOutput { warp: true })
    }
}
