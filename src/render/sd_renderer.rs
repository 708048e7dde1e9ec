//! The Stable Diffusion renderer: every frame of a batch is generated in order with SD1.5,
//! any number of ControlNets (openpose / softedge maps from the preprocessors, TemporalNet on
//! the previous output) and the temporal conditioning the preset switches on
//! ([`crate::render::temporal`]).
//!
//! Per frame, with the same seed for every frame (the same initial noise tensor):
//!
//! 1. the source frame and the control maps are resized to the render size;
//! 2. with a previous frame, the input's optical flow between the two source frames;
//! 3. control images: each map, and for TemporalNet the previous output (flow-warped);
//! 4. the start latents: noise (txt2img, `sampler.strength: 1`), the source frame noised to
//!    `sampler.strength` (img2img), or with `flow_init` the warped previous output noised to
//!    `flow_init.strength`; generated in diffusers' order, so a frame without temporal
//!    conditioning equals `StableDiffusionControlNet{Img2Img,}Pipeline` for that seed;
//! 5. denoising, with the cross-frame attention hook when enabled, then the VAE decode.
//!
//! The models come from [`crate::loaders::sd_models`] (loaded once, kept across jobs on the
//! same models by a [`ModelCache`], combined with each job's prompt in [`LoadedModels`]) and
//! are shared ([`crate::render::shared_models`], e.g. with face and hand detailing). The
//! first frame of a batch continues from the frame before the batch (its [`LeadIn`], from
//! the previous batch), so batches chain; the previous frame's attention cache starts empty
//! at every batch, which keeps the state at a batch start reproducible from disk.

use std::sync::Arc;

use candle_core::Tensor;
use image::RgbImage;

use crate::cancel::{Interrupted, StopFlag};
use crate::device::{DeviceChoice, DeviceError};
use crate::diffusion::image_pipeline::{
    rgb_to_tensor, tensor_to_rgb, ImagePipelineError as SdError,
};
use crate::diffusion::latents::{image_latent_shape, initial_latents};
use crate::diffusion::sampler::{denoise, ControlInput, DenoiseRequest};
use crate::diffusion::schedulers;
use crate::flow::Plane;
use crate::loaders::sd_models::{LoadedModels, SdModelsError};
use crate::loaders::source::HubOptions;
use crate::models::attention_hook::SelfAttentionHook;
use crate::noise::TorchGenerator;
use crate::pipeline::plan::Batch;
use crate::pipeline::resume::{next_lead_in, ChainedRenderer, LeadIn};
use crate::pipeline::stages::{FrameRenderer, PreparedFrame, StageError};
use crate::preset::ControlKind;
use crate::render::sd_config::{ControlSource, SdRenderConfig};
use crate::render::temporal::anchor::RenderedAnchor;
use crate::render::temporal::cross_frame::CrossFrameAttention;
use crate::render::temporal::input_flow::{luma, InputFlow};
use crate::render::temporal::{flow_init, temporalnet};
use crate::video::Frame;

/// The renderer's name in progress output and manifests.
pub const RENDERER_NAME: &str = "sd15";

#[derive(Debug, thiserror::Error)]
pub enum SdRenderError {
    /// Finding, reading or preparing the models (every missing file at once).
    #[error(transparent)]
    Models(#[from] SdModelsError),
    #[error(transparent)]
    Device(#[from] DeviceError),
    #[error(
        "frame {frame}: the {kind} ControlNet ({model}) needs a {kind} map, but no preprocessor made one"
    )]
    MissingControl {
        frame: u64,
        kind: ControlKind,
        model: String,
    },
    #[error("frame {frame}: {source}")]
    Frame {
        frame: u64,
        #[source]
        source: Box<SdError>,
    },
    #[error("cross-frame attention to the anchor needs the anchor frame rendered first")]
    NoAnchor,
}

/// The previous frame, as the next frame needs it.
struct Previous {
    output: RgbImage,
    /// Luma of its source frame, when the flow is needed.
    source_luma: Option<Plane>,
}

/// Control images and start image of one frame.
struct Conditioning {
    controls: Vec<RgbImage>,
    /// img2img start image and strength; `None` for txt2img.
    init: Option<(RgbImage, f64)>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Pass {
    Anchor,
    Frame,
}

/// See the module docs.
pub struct SdRenderer {
    config: SdRenderConfig,
    models: Arc<LoadedModels>,
    cross_frame: Option<CrossFrameAttention>,
    anchor: Option<RenderedAnchor>,
    /// For use as a plain [`FrameRenderer`]: the lead-in of the next batch, and a stop flag.
    lead_in: Option<LeadIn>,
    stop: StopFlag,
}

impl SdRenderer {
    /// Load the models of `config` on the default device (the CPU) and build the renderer:
    /// for one-off use; a job opens its device once and shares its models
    /// ([`SharedModels`]).
    pub fn load(config: SdRenderConfig, hub: &HubOptions) -> Result<Self, SdRenderError> {
        let device = DeviceChoice::default().open()?;
        let models = LoadedModels::load(&config.model_key(), config.text_prompt(), hub, &device)?;
        Ok(Self::new(config, Arc::new(models)))
    }

    /// A renderer on models loaded for `config`.
    pub fn new(config: SdRenderConfig, models: Arc<LoadedModels>) -> Self {
        let factor = models.sd.latent_factor();
        let cross_frame = config.temporal.cross_frame_attention.active().then(|| {
            CrossFrameAttention::new(
                &config.temporal.cross_frame_attention,
                config.height as usize / factor,
                config.width as usize / factor,
            )
        });
        Self {
            config,
            models,
            cross_frame,
            anchor: None,
            lead_in: None,
            stop: StopFlag::new(),
        }
    }

    pub fn models(&self) -> &Arc<LoadedModels> {
        &self.models
    }

    pub fn config(&self) -> &SdRenderConfig {
        &self.config
    }

    /// Bytes held by the cross-frame attention caches (anchor, previous frame).
    pub fn attention_cache_bytes(&self) -> (usize, usize) {
        self.cross_frame
            .as_ref()
            .map_or((0, 0), CrossFrameAttention::cache_bytes)
    }

    /// The stop flag checked between frames when used as a plain [`FrameRenderer`].
    pub fn set_stop_flag(&mut self, stop: StopFlag) {
        self.stop = stop;
    }

    /// Render the anchor frame (no previous frame) and record its attention keys/values.
    /// With `cached` (its output from an earlier run), only the denoising runs, to rebuild
    /// the cache, and the cached image is kept. Returns the output when it was rendered now
    /// (to be cached).
    pub fn prepare_anchor(
        &mut self,
        anchor: &PreparedFrame,
        cached: Option<Frame>,
    ) -> Result<Option<Frame>, SdRenderError> {
        let index = anchor.source.index;
        let source = fit(&anchor.source, self.config.width, self.config.height);
        let conditioning = self.conditioning(anchor, &source, None)?;
        let latents = self.denoise_frame(index, &conditioning, Pass::Anchor)?;
        let (output, fresh) = match cached {
            Some(frame) => (frame, None),
            None => {
                let frame = self.decode(index, &latents)?;
                (frame.clone(), Some(frame))
            }
        };
        self.anchor = Some(RenderedAnchor { output });
        Ok(fresh)
    }

    pub fn anchor(&self) -> Option<&RenderedAnchor> {
        self.anchor.as_ref()
    }

    /// Render one frame continuing from `previous` (see the module docs).
    fn render_frame(
        &self,
        prepared: &PreparedFrame,
        source: &RgbImage,
        previous: Option<&Previous>,
        source_luma: Option<&Plane>,
    ) -> Result<Frame, SdRenderError> {
        let index = prepared.source.index;
        let flow = match (previous, source_luma) {
            (
                Some(Previous {
                    source_luma: Some(previous),
                    ..
                }),
                Some(current),
            ) => Some(InputFlow::estimate(
                previous,
                current,
                self.config.temporal.flow_init.enabled,
                &self.config.flow,
            )),
            _ => None,
        };
        let conditioning = self.conditioning(
            prepared,
            source,
            previous.map(|p| (&p.output, flow.as_ref())),
        )?;
        let latents = self.denoise_frame(index, &conditioning, Pass::Frame)?;
        self.decode(index, &latents)
    }

    /// Control images and start image; `previous` is the previous output with the flow
    /// from it (when computed).
    fn conditioning(
        &self,
        prepared: &PreparedFrame,
        source: &RgbImage,
        previous: Option<(&RgbImage, Option<&InputFlow>)>,
    ) -> Result<Conditioning, SdRenderError> {
        let (w, h) = (self.config.width, self.config.height);
        let mut controls = Vec::with_capacity(self.config.controlnets.len());
        for net in &self.config.controlnets {
            controls.push(match net.source {
                ControlSource::Map(kind) => {
                    let map =
                        prepared
                            .control(kind)
                            .ok_or_else(|| SdRenderError::MissingControl {
                                frame: prepared.source.index,
                                kind,
                                model: net.model.clone(),
                            })?;
                    fit(map, w, h)
                }
                ControlSource::PreviousOutput { warp } => temporalnet::control_image(
                    previous.map(|p| p.0),
                    previous.and_then(|p| p.1),
                    warp,
                    source,
                ),
            });
        }
        let flow_init = &self.config.temporal.flow_init;
        let init = match previous {
            Some((output, Some(flow))) if flow_init.enabled => Some((
                flow_init::init_image(output, flow, source),
                flow_init.strength as f64,
            )),
            _ if self.config.strength < 1.0 => Some((source.clone(), self.config.strength)),
            _ => None,
        };
        Ok(Conditioning { controls, init })
    }

    /// Start latents and the denoising loop; the latents of the clean frame.
    fn denoise_frame(
        &self,
        index: u64,
        conditioning: &Conditioning,
        pass: Pass,
    ) -> Result<Tensor, SdRenderError> {
        let frame_err = |source: SdError| SdRenderError::Frame {
            frame: index,
            source: Box::new(source),
        };
        let device = self.models.sd.device().clone();
        let tensor_err = |context: &'static str| {
            move |source| SdRenderError::Frame {
                frame: index,
                source: Box::new(SdError::Tensor { context, source }),
            }
        };
        let mut controls = Vec::with_capacity(conditioning.controls.len());
        for ((plan, image), &net) in self
            .config
            .controlnets
            .iter()
            .zip(&conditioning.controls)
            .zip(&self.models.net_of)
        {
            controls.push(ControlInput {
                model: &self.models.nets[net],
                image: rgb_to_tensor(image, &device).map_err(frame_err)?,
                scale: plan.scale,
                start: plan.start,
                end: plan.end,
                guess_mode: plan.guess_mode,
            });
        }

        let seed = self.config.seed_per_frame.seed_for(self.config.seed, index);
        let mut generator = TorchGenerator::new(seed);
        let strength = conditioning.init.as_ref().map_or(1.0, |(_, s)| *s);
        let steps = self.config.steps;
        let sd = &self.models.sd;
        let mut scheduler = self
            .config
            .scheduler(&sd.scheduler_config, steps, strength)
            .map_err(|e| frame_err(e.into()))?;
        let first_step =
            schedulers::strength_begin_index(steps, strength).map_err(|e| frame_err(e.into()))?;
        let shape = image_latent_shape(
            self.config.width as usize,
            self.config.height as usize,
            sd.vae.latent_channels(),
            sd.latent_factor(),
        )
        .map_err(|e| frame_err(e.into()))?;
        // diffusers' order of draws: the VAE posterior sample, then the initial noise.
        let image_latents = match &conditioning.init {
            None => None,
            Some((image, _)) => {
                let image = rgb_to_tensor(image, &device)
                    .map_err(frame_err)?
                    .affine(2.0, -1.0)
                    .map_err(tensor_err("image normalize"))?;
                Some(sd.encode_image(&image, &mut generator).map_err(frame_err)?)
            }
        };
        let latents = initial_latents(
            &*scheduler,
            &mut generator,
            &shape,
            &device,
            image_latents.as_ref(),
        )
        .map_err(|e| frame_err(e.into()))?
        .latents;

        let hook = self.cross_frame.as_ref();
        if let Some(hook) = hook {
            match pass {
                Pass::Anchor => hook.begin_anchor(first_step),
                Pass::Frame => hook.begin_frame(first_step),
            }
        }
        let request = DenoiseRequest {
            unet: &self.models.sd.unet,
            text: &self.models.text,
            guidance_scale: self.config.guidance_scale,
            controls: &controls,
            inpaint: None,
            attention_hook: hook.map(|h| h as &dyn SelfAttentionHook),
            deep_cache: self.config.deep_cache,
        };
        let result = denoise(
            &request,
            scheduler.as_mut(),
            latents,
            &mut generator,
            &mut |_| {
                if let Some(hook) = hook {
                    hook.next_step();
                }
            },
        );
        if let Some(hook) = hook {
            hook.end_pass();
        }
        result.map_err(|e| frame_err(e.into()))
    }

    fn decode(&self, index: u64, latents: &Tensor) -> Result<Frame, SdRenderError> {
        let frame_err = |source| SdRenderError::Frame {
            frame: index,
            source: Box::new(source),
        };
        let image = self.models.sd.decode_latents(latents).map_err(frame_err)?;
        let rgb = tensor_to_rgb(&image).map_err(frame_err)?;
        Ok(Frame::from_rgb_image(index, rgb))
    }
}

impl ChainedRenderer for SdRenderer {
    fn render_chained(
        &mut self,
        _batch: &Batch,
        frames: &[PreparedFrame],
        lead_in: Option<&LeadIn>,
        stop: &StopFlag,
    ) -> Result<Vec<Frame>, StageError> {
        let (w, h) = (self.config.width, self.config.height);
        if self.config.needs_anchor() && self.anchor.is_none() {
            return Err(SdRenderError::NoAnchor.into());
        }
        if let Some(hook) = &self.cross_frame {
            hook.clear_previous();
        }
        let needs_flow = self.config.needs_flow();
        let luma_of = |image: &RgbImage| needs_flow.then(|| luma(image));
        let lead_in = lead_in.filter(|_| self.config.temporal.chain_batches);
        let mut previous = lead_in.map(|l| Previous {
            output: fit(&l.output, w, h),
            source_luma: luma_of(&fit(&l.source, w, h)),
        });
        let mut outputs = Vec::with_capacity(frames.len());
        for prepared in frames {
            stop.check()
                .map_err(|Interrupted| Box::new(Interrupted) as StageError)?;
            let source = fit(&prepared.source, w, h);
            let source_luma = luma_of(&source);
            let anchor_output = self
                .anchor
                .as_ref()
                .filter(|a| previous.is_none() && a.index() == prepared.source.index);
            let output = match anchor_output {
                // The clip's first frame is the anchor: its rendering is exactly the anchor's.
                Some(anchor) => {
                    if let Some(hook) = &self.cross_frame {
                        hook.previous_from_anchor();
                    }
                    anchor.output.clone()
                }
                None => {
                    self.render_frame(prepared, &source, previous.as_ref(), source_luma.as_ref())?
                }
            };
            previous = Some(Previous {
                output: fit(&output, w, h),
                source_luma,
            });
            outputs.push(output);
        }
        Ok(outputs)
    }
}

impl FrameRenderer for SdRenderer {
    fn name(&self) -> &str {
        RENDERER_NAME
    }

    fn output_size(&self, _input_width: u32, _input_height: u32) -> (u32, u32) {
        (self.config.width, self.config.height)
    }

    fn render_batch(
        &mut self,
        batch: &Batch,
        frames: &[PreparedFrame],
    ) -> Result<Vec<Frame>, StageError> {
        let lead_in = self.lead_in.take();
        let stop = self.stop.clone();
        let outputs = self.render_chained(batch, frames, lead_in.as_ref(), &stop)?;
        self.lead_in = next_lead_in(batch, frames, &outputs);
        Ok(outputs)
    }
}

/// A frame as an RGB image of `width`×`height` (bilinear when the size differs), as every
/// renderer resizes its inputs.
pub(crate) fn fit(frame: &Frame, width: u32, height: u32) -> RgbImage {
    let image = RgbImage::from_raw(frame.width, frame.height, frame.data.clone())
        .expect("frames hold width·height·3 bytes");
    if (frame.width, frame.height) == (width, height) {
        image
    } else {
        image::imageops::resize(&image, width, height, image::imageops::FilterType::Triangle)
    }
}
