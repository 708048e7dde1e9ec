//! A loaded set of motion modules and the UNet hook that runs them.
//!
//! The UNet itself is unchanged: [`MotionHook`] is passed as `UNetExtras::layer_hook`, and the
//! UNet calls it after every layer where `UNetMotionModel` runs a motion module. With a batch
//! of `batch·frames` frames (frames of each sequence consecutive, e.g. the uncond then the cond
//! frames under classifier-free guidance), the UNet with the hook computes what diffusers'
//! `UNetMotionModel.from_unet2d(unet, adapter)` computes for `(batch, c, frames, h, w)`
//! (its text embeddings are per frame, `(batch·frames, tokens, dim)`, as the AnimateDiff
//! pipelines pass them).

use std::collections::BTreeMap;
use std::path::PathBuf;

use candle_core::{Device, Tensor};
use candle_nn::VarBuilder;

use super::config::{
    check_blocks, MotionAdapterConfig, MotionLayout, DEFAULT_MAX_FRAMES, ORIGINAL_HEADS,
};
use super::error::MotionError;
use super::temporal_transformer::{PositionalEncoding, TemporalTransformer};
use crate::loaders::motion_weights::{MotionWeights, Naming};
use crate::loaders::source::{Component, DiffusersPipelineFiles, HubOptions, ModelSource};
use crate::models::attention_hook::LayerOutputHook;
use crate::models::unet::UNetConfig;

/// The files of a motion module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MotionModuleFiles {
    pub weights: PathBuf,
    /// `config.json` of a diffusers `MotionAdapter`; `None` for a single checkpoint file.
    pub config: Option<PathBuf>,
}

impl MotionModuleFiles {
    /// Resolves a preset's `temporal.motion_module.path`: a single `.safetensors`/`.ckpt`
    /// file (original or diffusers names), a diffusers `MotionAdapter` folder, or a hub id
    /// such as `guoyww/animatediff-motion-adapter-v1-5-2` (fetched through the hub cache;
    /// the folder/repo layout is a ControlNet's: `config.json` and weights at the root).
    pub fn resolve(source: &str, hub: &HubOptions) -> Result<Self, MotionError> {
        if let ModelSource::SingleFile(path) = ModelSource::parse(source)? {
            return Ok(Self {
                weights: path,
                config: None,
            });
        }
        let files = DiffusersPipelineFiles::resolve_with(source, &[Component::ControlNet], hub)?;
        let model = files.controlnet.ok_or_else(|| MotionError::Layout {
            path: PathBuf::from(source),
            reason: "no config.json and weights found".into(),
        })?;
        Ok(Self {
            weights: model.weights,
            config: Some(model.config),
        })
    }
}

/// Options for checkpoints that carry no config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MotionLoadOptions {
    /// Attention heads of every module of a single-file checkpoint.
    pub single_file_heads: usize,
}

impl Default for MotionLoadOptions {
    fn default() -> Self {
        Self {
            single_file_heads: ORIGINAL_HEADS,
        }
    }
}

/// Motion modules by UNet position (`down_blocks.{i}.motion_modules.{j}`, …).
#[derive(Debug, Clone)]
pub struct MotionModules {
    modules: BTreeMap<String, TemporalTransformer>,
    max_frames: usize,
}

impl MotionModules {
    /// Builds every module of `layout` from diffusers-named weights.
    pub fn load(vb: VarBuilder, layout: &MotionLayout) -> candle_core::Result<Self> {
        let modules = layout
            .modules
            .iter()
            .map(|(position, spec)| {
                let module = TemporalTransformer::load(vb.pp(position), *spec, layout.encoding)?;
                Ok((position.clone(), module))
            })
            .collect::<candle_core::Result<BTreeMap<_, _>>>()?;
        Ok(Self {
            modules,
            max_frames: layout.max_frames,
        })
    }

    /// Loads the motion modules in `files` for a UNet with `unet` config.
    pub fn load_files(
        files: &MotionModuleFiles,
        unet: &UNetConfig,
        device: &Device,
        options: &MotionLoadOptions,
    ) -> Result<Self, MotionError> {
        let weights = MotionWeights::open(&files.weights)?;
        let path = files.weights.clone();
        let blocks = unet.block_out_channels.len();
        let (heads, configured_frames) = match &files.config {
            Some(config_path) => {
                let config = MotionAdapterConfig::from_file(config_path)?;
                check_blocks(unet, &config.block_out_channels, config_path)?;
                (config.heads()?, config.motion_max_seq_length)
            }
            None => (vec![options.single_file_heads; blocks], DEFAULT_MAX_FRAMES),
        };
        // diffusers reads a MotionAdapter's stored encodings and recomputes those of
        // converted original checkpoints.
        let encoding = if weights.naming() == Naming::Diffusers && weights.has_stored_encodings() {
            PositionalEncoding::Stored
        } else {
            PositionalEncoding::Computed
        };
        let max_frames = weights
            .stored_encoding_frames()
            .unwrap_or(configured_frames);
        let layout = MotionLayout::from_tensor_names(
            unet,
            weights.names(),
            &heads,
            max_frames,
            encoding,
            &path,
        )?;
        let vb = weights.into_var_builder(device);
        Self::load(vb, &layout).map_err(|source| MotionError::Weights { path, source })
    }

    /// Longest frame sequence (context window) the modules accept.
    pub fn max_frames(&self) -> usize {
        self.max_frames
    }

    pub fn get(&self, position: &str) -> Option<&TemporalTransformer> {
        self.modules.get(position)
    }

    /// Positions that have a module, in name order.
    pub fn positions(&self) -> impl Iterator<Item = &str> {
        self.modules.keys().map(String::as_str)
    }

    /// The UNet hook for one call whose batch holds sequences of `frames` frames.
    pub fn hook(&self, frames: usize) -> MotionHook<'_> {
        MotionHook {
            modules: self,
            frames,
        }
    }
}

/// Runs the motion modules inside one UNet call (see the module docs).
pub struct MotionHook<'a> {
    modules: &'a MotionModules,
    frames: usize,
}

impl LayerOutputHook for MotionHook<'_> {
    fn after_layer(
        &self,
        position: &str,
        hidden_states: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        match self.modules.get(position) {
            None => Ok(None),
            Some(module) => module
                .forward(hidden_states, self.frames)
                .map(Some)
                .map_err(|e| e.context(format!("motion module {position}"))),
        }
    }
}

/// Reads a preset path's motion modules for `unet` (hub settings from the environment).
pub fn load_motion_modules(
    source: &str,
    unet: &UNetConfig,
    device: &Device,
) -> Result<MotionModules, MotionError> {
    let files = MotionModuleFiles::resolve(source, &HubOptions::from_env(true))?;
    MotionModules::load_files(&files, unet, device, &MotionLoadOptions::default())
}
