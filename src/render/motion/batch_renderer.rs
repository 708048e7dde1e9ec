//! The batch renderer for presets with `temporal.motion_module`: every batch of the render
//! plan is generated jointly by [`sample_video`] (AnimateDiff, context windows inside the
//! batch) instead of frame by frame.
//!
//! Per batch, on the render's shared SD models ([`SharedModels`], so LoRAs, embeddings,
//! clip skip and the A1111-weighted prompt are the same as for the frame-by-frame renderer):
//!
//! 1. the source frames and every ControlNet's preprocessor maps are resized to the render
//!    size (one control image per frame and ControlNet, with the preset's scale and step
//!    range);
//! 2. the start: the source frames noised to `sampler.strength` (video-to-video), or pure
//!    noise at strength 1 (text-to-video with ControlNets), from `sampler.seed`;
//! 3. the context windows of `temporal.motion_module` are denoised and averaged at every
//!    step, then the frames are decoded one by one.
//!
//! Batches do not continue from each other (no frame of a joint batch exists before the
//! others): the lead-in is ignored and neighbouring batches meet in the pipeline's overlap
//! blend. A batch therefore depends only on its own inputs, which is what makes resumed
//! renders equal uninterrupted ones. The stop flag is checked before every context window.

use std::path::Path;
use std::sync::Arc;

use image::RgbImage;

use crate::cancel::StopFlag;
use crate::diffusion::video_pipeline::{
    sample_video, VideoControl, VideoError, VideoInit, VideoRequest,
};
use crate::loaders::sd_models::LoadedModels;
use crate::loaders::source::HubOptions;
use crate::models::motion::{MotionError, MotionLoadOptions, MotionModuleFiles, MotionModules};
use crate::pipeline::plan::Batch;
use crate::pipeline::resume::{ChainedRenderer, LeadIn, Notifier, RendererFactory, WorkDir};
use crate::pipeline::stages::{PreparedFrame, StageError};
use crate::preset::models_ext::locate;
use crate::preset::motion::ContextOptions;
use crate::preset::motion::MotionModuleSettings;
use crate::preset::ControlKind;
use crate::render::sd_config::{ControlSource, SdRenderConfig};
use crate::render::sd_renderer::{fit, SdRenderError};
use crate::render::shared_models::SharedModels;
use crate::video::Frame;

/// Errors of the motion-module batch renderer.
#[derive(Debug, thiserror::Error)]
pub enum MotionRenderError {
    #[error("temporal.motion_module {path}")]
    Load {
        path: String,
        #[source]
        source: MotionError,
    },
    /// Neither the SD models nor the motion module could be found: both lists at once.
    #[error("{models}\ntemporal.motion_module {path}: {motion}")]
    Unavailable {
        path: String,
        models: SdRenderError,
        motion: MotionError,
    },
    #[error(transparent)]
    Models(#[from] SdRenderError),
    #[error("frame {frame}: no {kind} map for the ControlNet {model}")]
    MissingControl {
        frame: u64,
        kind: ControlKind,
        model: String,
    },
    /// A ControlNet fed by the previous output (TemporalNet): the preset check refuses these
    /// next to a motion module; this guards configs built in code.
    #[error("ControlNet {model}: TemporalNet needs frame-by-frame rendering and cannot run with a motion module")]
    SequentialControl { model: String },
    #[error("batch {batch} (frames {first}..={last}): {source}")]
    Render {
        batch: usize,
        first: u64,
        last: u64,
        #[source]
        source: VideoError,
    },
}

/// Renders whole batches with AnimateDiff motion modules (see the module docs).
pub struct MotionBatchRenderer {
    config: SdRenderConfig,
    models: Arc<LoadedModels>,
    motion: MotionModules,
    context: ContextOptions,
}

impl MotionBatchRenderer {
    /// A renderer on models loaded for `config` and motion modules loaded for their UNet.
    pub fn new(
        config: SdRenderConfig,
        models: Arc<LoadedModels>,
        motion: MotionModules,
        context: ContextOptions,
    ) -> Self {
        Self {
            config,
            models,
            motion,
            context,
        }
    }

    /// Reads the motion modules of `settings` (`path` already located) for the shared
    /// models' UNet. When the motion files are missing, the SD models are still looked up so
    /// that everything missing is reported together.
    pub fn load(
        shared: &SharedModels,
        settings: &MotionModuleSettings,
        hub: &HubOptions,
    ) -> Result<Self, MotionRenderError> {
        let load_err = |source| MotionRenderError::Load {
            path: settings.path.clone(),
            source,
        };
        let (files, models) = match (
            MotionModuleFiles::resolve(&settings.path, hub),
            shared.get(),
        ) {
            (Ok(files), Ok(models)) => (files, models),
            (Ok(_), Err(models)) => return Err(models.into()),
            (Err(motion), Ok(_)) => return Err(load_err(motion)),
            (Err(motion), Err(models)) => {
                return Err(MotionRenderError::Unavailable {
                    path: settings.path.clone(),
                    models,
                    motion,
                })
            }
        };
        let motion = MotionModules::load_files(
            &files,
            models.sd.unet.config(),
            models.sd.device(),
            &MotionLoadOptions::default(),
        )
        .map_err(load_err)?;
        Ok(Self::new(
            shared.config().clone(),
            models,
            motion,
            settings.context(),
        ))
    }

    pub fn config(&self) -> &SdRenderConfig {
        &self.config
    }

    pub fn motion(&self) -> &MotionModules {
        &self.motion
    }

    /// Renders `frames` jointly; `batch` only names them in errors.
    pub fn render_frames(
        &self,
        batch: usize,
        frames: &[PreparedFrame],
        stop: Option<&StopFlag>,
    ) -> Result<Vec<Frame>, MotionRenderError> {
        let (Some(first), Some(last)) = (frames.first(), frames.last()) else {
            return Ok(Vec::new());
        };
        let (w, h) = (self.config.width, self.config.height);
        let mut control_frames = Vec::with_capacity(self.config.controlnets.len());
        for net in &self.config.controlnets {
            let ControlSource::Map(kind) = net.source else {
                return Err(MotionRenderError::SequentialControl {
                    model: net.model.clone(),
                });
            };
            let images = frames
                .iter()
                .map(|f| {
                    f.control(kind).map(|map| fit(map, w, h)).ok_or_else(|| {
                        MotionRenderError::MissingControl {
                            frame: f.source.index,
                            kind,
                            model: net.model.clone(),
                        }
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            control_frames.push(images);
        }
        let controls: Vec<VideoControl> = self
            .config
            .controlnets
            .iter()
            .enumerate()
            .zip(&control_frames)
            .map(|((k, net), images)| VideoControl {
                model: &self.models.nets[self.models.net_of[k]],
                frames: images,
                scale: net.scale,
                start: net.start,
                end: net.end,
                guess_mode: net.guess_mode,
            })
            .collect();
        let sources: Vec<RgbImage>;
        let init = if self.config.strength < 1.0 {
            sources = frames.iter().map(|f| fit(&f.source, w, h)).collect();
            VideoInit::Video {
                frames: &sources,
                strength: self.config.strength,
            }
        } else {
            VideoInit::Noise
        };
        let settings = self.config.generation_settings();
        let request = VideoRequest {
            settings: &settings,
            frames: frames.len(),
            init,
            controls: &controls,
            context: self.context,
            text: Some(&self.models.text),
            stop,
        };
        let images = sample_video(&self.models.sd, &self.motion, &request, &mut |_| {}).map_err(
            |source| MotionRenderError::Render {
                batch,
                first: first.source.index,
                last: last.source.index,
                source,
            },
        )?;
        Ok(frames
            .iter()
            .zip(images)
            .map(|(f, image)| Frame::from_rgb_image(f.source.index, image))
            .collect())
    }
}

impl ChainedRenderer for MotionBatchRenderer {
    fn render_chained(
        &mut self,
        batch: &Batch,
        frames: &[PreparedFrame],
        _lead_in: Option<&LeadIn>,
        stop: &StopFlag,
    ) -> Result<Vec<Frame>, StageError> {
        stop.check()?;
        match self.render_frames(batch.index, frames, Some(stop)) {
            Ok(outputs) => Ok(outputs),
            Err(MotionRenderError::Render {
                source: VideoError::Interrupted(interrupted),
                ..
            }) => Err(Box::new(interrupted)),
            Err(e) => Err(Box::new(e)),
        }
    }
}

/// The renderer factory of `rotoscope render` for a preset with `temporal.motion_module`:
/// the models are loaded when the first batch needs rendering. `settings.path` resolves
/// relative to `preset_dir` like the other models.
pub fn motion_renderer_factory(
    shared: Arc<SharedModels>,
    settings: MotionModuleSettings,
    preset_dir: Option<&Path>,
    hub: HubOptions,
    notify: Notifier,
) -> RendererFactory {
    let settings = MotionModuleSettings {
        path: locate(&settings.path, preset_dir),
        ..settings
    };
    Box::new(move |_work: &WorkDir, _batch: &[PreparedFrame]| {
        notify(&format!(
            "loading models: {} with motion module {} (context windows of {} frames sharing {}, {} weights)",
            shared.config().models.base,
            settings.path,
            settings.context_length,
            settings.context_overlap,
            settings.weighting.as_str(),
        ));
        let renderer = MotionBatchRenderer::load(&shared, &settings, &hub)?;
        Ok(Box::new(renderer) as Box<dyn ChainedRenderer>)
    })
}
