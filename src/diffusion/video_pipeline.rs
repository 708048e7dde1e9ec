//! Whole-batch video generation with AnimateDiff motion modules: the entry point a batch
//! renderer calls when the preset enables `temporal.motion_module`.
//!
//! Reproduces diffusers for a seed:
//! * video-to-video ([`VideoInit::Video`]) as `AnimateDiffVideoToVideoControlNetPipeline`: the
//!   frames are VAE-encoded, posterior samples drawn per chunk of 16 frames
//!   (`decode_chunk_size`), then noise of shape `(1, frames, 4, h, w)` added at the first step
//!   of the `strength`-shortened schedule;
//! * text-to-video ([`VideoInit::Noise`]) as `AnimateDiffControlNetPipeline`: noise
//!   `(1, 4, frames, h, w)` times the scheduler's initial sigma;
//!
//! then the same generator feeds stochastic schedulers. Frames are VAE-encoded and decoded
//! one at a time so that memory stays flat in the number of frames.
//!
//! Denoising ([`denoise_video`]) is the image loop of [`crate::diffusion::sampler`] with
//! another noise prediction, as `AnimateDiff{,VideoToVideo}ControlNetPipeline` make it plus
//! context windows ([`crate::diffusion::context_windows`]): at every step, for each window in
//! turn, the window's latents are doubled for guidance (uncond frames, then cond frames, one
//! text embedding per frame), every active ControlNet runs on the window's frames with their
//! own control images (ControlNets see single frames, so a frame's residuals do not depend on
//! the window), the UNet runs with the motion modules over the window, guidance combines the
//! halves; then the windows' predictions are averaged per frame and the scheduler steps all
//! frames at once. Only one window's activations exist at a time, so memory follows the
//! window length. Latents are kept in diffusers' video layout `(1, channels, frames, h, w)`,
//! so stochastic schedulers draw their noise in its order.

use std::ops::Range;

use candle_core::{DType, Device, Tensor};
use image::RgbImage;

use crate::cancel::{Interrupted, StopFlag};
use crate::diffusion::context_windows::{
    context_windows, ContextError, ContextWindow, WindowAverager,
};
use crate::diffusion::guidance::{control_active, uses_cfg};
use crate::diffusion::image_pipeline::{
    rgb_to_tensor, tensor_to_rgb, GenerationSettings, ImagePipelineError, StableDiffusion,
};
use crate::diffusion::latents::{initial_latents, latent_size, strength_scheduler, LatentsError};
use crate::diffusion::sampler::{
    check_step_range, checked_uncond, run_steps, ControlCall, GuidedUNet, NoisePredictor,
    PredictError, StepAt, StepProgress, TextConditioning,
};
use crate::diffusion::schedulers::{Scheduler, SchedulerError};
use crate::models::controlnet::ControlNetModel;
use crate::models::motion::MotionModules;
use crate::models::unet::{UNet2DConditionModel, UNetError};
use crate::models::vae::VaeEncoding;
use crate::noise::{NoiseError, NoiseSource, TorchGenerator};
use crate::preset::motion::ContextOptions;

/// Errors of video generation.
#[derive(Debug, thiserror::Error)]
pub enum VideoError {
    #[error("denoising step {step}, frames {}..{}: {source}", .frames.start, .frames.end)]
    Model {
        step: usize,
        frames: Range<usize>,
        #[source]
        source: UNetError,
    },
    #[error(transparent)]
    Scheduler(#[from] SchedulerError),
    #[error(transparent)]
    Noise(#[from] NoiseError),
    #[error("context windows: {0}")]
    Context(#[from] ContextError),
    /// Text encoding, VAE or image conversion (boxed: the pipeline error is large).
    #[error(transparent)]
    Pipeline(Box<ImagePipelineError>),
    #[error("video tensor op: {0}")]
    Tensor(#[from] candle_core::Error),
    #[error("{0}")]
    Invalid(String),
    /// A stop was requested (Ctrl-C) between two context windows.
    #[error("{0}")]
    Interrupted(#[from] Interrupted),
}

impl From<ImagePipelineError> for VideoError {
    fn from(e: ImagePipelineError) -> Self {
        Self::Pipeline(Box::new(e))
    }
}

impl From<LatentsError> for VideoError {
    fn from(e: LatentsError) -> Self {
        match e {
            LatentsError::Size {
                width,
                height,
                factor,
            } => Self::Invalid(format!(
                "frame size {width}x{height} must be a positive multiple of {factor}"
            )),
            LatentsError::Scheduler(e) => e.into(),
            LatentsError::Noise(e) => e.into(),
            LatentsError::Tensor(e) => e.into(),
        }
    }
}

/// One ControlNet of a video run, with a control image per frame.
pub struct VideoControl<'a> {
    pub model: &'a ControlNetModel,
    /// One image per frame of the batch, at the output size (latent size × the ControlNet's
    /// image scale, 8 for SD).
    pub frames: &'a [RgbImage],
    pub scale: f64,
    /// Fractions of the sampling steps where the net starts / stops acting.
    pub start: f64,
    pub end: f64,
    pub guess_mode: bool,
}

/// Everything the video loop needs besides the scheduler, the starting latents and the noise.
pub struct VideoDenoiseRequest<'a> {
    pub unet: &'a UNet2DConditionModel,
    pub motion: &'a MotionModules,
    /// One prompt for all frames, `(1, tokens, dim)` each.
    pub text: &'a TextConditioning,
    pub guidance_scale: f64,
    pub controls: &'a [VideoControl<'a>],
    pub context: ContextOptions,
    /// Checked before every context window, so that Ctrl-C does not wait for a whole batch.
    pub stop: Option<&'a StopFlag>,
}

/// Frames per VAE posterior noise draw (diffusers' default `decode_chunk_size`).
pub const ENCODE_CHUNK_FRAMES: usize = 16;

/// Where the video latents start.
#[derive(Debug, Clone, Copy)]
pub enum VideoInit<'a> {
    /// Pure noise (text-to-video with ControlNets).
    Noise,
    /// The input frames (at the output size), denoised from `strength` (1 = only their
    /// noised latents remain as a start).
    Video {
        frames: &'a [RgbImage],
        strength: f64,
    },
}

/// What to generate for one batch of frames.
pub struct VideoRequest<'a> {
    /// Prompt, size, steps, guidance, scheduler with its sampler options (`eta`,
    /// `timestep_spacing`) and seed (shared by all frames).
    pub settings: &'a GenerationSettings,
    pub frames: usize,
    pub init: VideoInit<'a>,
    pub controls: &'a [VideoControl<'a>],
    pub context: ContextOptions,
    /// The prompt already encoded (e.g. with A1111 weighting, embeddings and clip skip, as
    /// the renderer's models encode it); `None` encodes `settings.prompt` and
    /// `settings.negative_prompt` as diffusers does.
    pub text: Option<&'a TextConditioning>,
    /// Checked before every context window of every step (Ctrl-C).
    pub stop: Option<&'a StopFlag>,
}

/// Denoises a batch of frames and returns the final latents `(1, 4, frames, h, w)`.
pub fn generate_video_latents(
    sd: &StableDiffusion,
    motion: &MotionModules,
    request: &VideoRequest,
    on_step: &mut dyn FnMut(StepProgress),
) -> Result<Tensor, VideoError> {
    let settings = request.settings;
    let factor = sd.latent_factor();
    let (width, height) = (settings.width, settings.height);
    let (h, w) = latent_size(width, height, factor)?;
    if request.frames == 0 {
        return Err(VideoError::Invalid("no frames to generate".into()));
    }
    let channels = sd.vae.latent_channels();
    if sd.unet.config().in_channels != channels {
        return Err(VideoError::Invalid(format!(
            "the UNet takes {} input channels; motion modules need a plain {channels}-channel UNet",
            sd.unet.config().in_channels
        )));
    }
    let cfg = uses_cfg(settings.guidance_scale);
    let encoded;
    let text = match request.text {
        Some(text) => {
            if text.uncond.is_some() != cfg {
                return Err(VideoError::Invalid(format!(
                    "the encoded prompt {} a negative prompt, but guidance scale {} {} one",
                    if text.uncond.is_some() {
                        "has"
                    } else {
                        "lacks"
                    },
                    settings.guidance_scale,
                    if cfg { "needs" } else { "does not use" }
                )));
            }
            text
        }
        None => {
            encoded = sd.encode_prompt(&settings.prompt, &settings.negative_prompt, cfg)?;
            &encoded
        }
    };
    let strength = match request.init {
        VideoInit::Noise => 1.0,
        VideoInit::Video { strength, .. } => strength,
    };
    let mut scheduler = strength_scheduler(
        settings.scheduler,
        &sd.scheduler_config,
        &settings.options,
        settings.steps,
        strength,
    )?;

    let mut generator = TorchGenerator::new(settings.seed);
    let device = sd.device();
    let latents = match request.init {
        VideoInit::Noise => {
            let shape = [1, channels, request.frames, h, w];
            initial_latents(&*scheduler, &mut generator, &shape, device, None)?.latents
        }
        VideoInit::Video { frames, .. } => {
            if frames.len() != request.frames {
                return Err(VideoError::Invalid(format!(
                    "{} input frames for a batch of {}",
                    frames.len(),
                    request.frames
                )));
            }
            let encoded = encode_frames(sd, frames, width, height, &mut generator)?.unsqueeze(0)?;
            // diffusers draws this noise frame-major, (1, frames, channels, h, w).
            let shape = [1, request.frames, channels, h, w];
            initial_latents(&*scheduler, &mut generator, &shape, device, Some(&encoded))?
                .latents
                .permute((0, 2, 1, 3, 4))?
                .contiguous()?
        }
    };
    let denoise = VideoDenoiseRequest {
        unet: &sd.unet,
        motion,
        text,
        guidance_scale: settings.guidance_scale,
        controls: request.controls,
        context: request.context,
        stop: request.stop,
    };
    denoise_video(
        &denoise,
        scheduler.as_mut(),
        latents,
        &mut generator,
        on_step,
    )
}

/// VAE latents `(frames, 4, h, w)` (scaled) of the input frames: each frame encoded alone,
/// posterior noise drawn per chunk as diffusers' `encode_video` does (none for the tiny VAE,
/// whose latents are taken as they are).
fn encode_frames(
    sd: &StableDiffusion,
    frames: &[RgbImage],
    width: usize,
    height: usize,
    generator: &mut TorchGenerator,
) -> Result<Tensor, VideoError> {
    let device = sd.device();
    let mut latents = Vec::with_capacity(frames.len());
    for (chunk_index, chunk) in frames.chunks(ENCODE_CHUNK_FRAMES).enumerate() {
        let mut encodings = Vec::with_capacity(chunk.len());
        for (k, frame) in chunk.iter().enumerate() {
            let index = chunk_index * ENCODE_CHUNK_FRAMES + k;
            if frame.dimensions() != (width as u32, height as u32) {
                return Err(VideoError::Invalid(format!(
                    "input frame {index} is {}x{}, expected {width}x{height}",
                    frame.width(),
                    frame.height()
                )));
            }
            let image = rgb_to_tensor(frame, device)?.affine(2.0, -1.0)?;
            let encoding = sd
                .vae
                .encode(&image)
                .map_err(|e| e.context(format!("VAE encode of input frame {index}")))?;
            encodings.push(encoding);
        }
        let encoding = VaeEncoding::cat(&encodings)?;
        let chunk_latents = match encoding.posterior() {
            Some(dist) => {
                let noise = generator.randn(dist.mean.dims(), DType::F32, device)?;
                dist.sample(&noise)?
            }
            None => encoding.mean,
        };
        latents.push((chunk_latents * sd.vae.scaling_factor())?);
    }
    Ok(Tensor::cat(&latents, 0)?)
}

/// Decodes video latents `(1, 4, frames, h, w)` frame by frame; `on_frame` gets each frame's
/// `(1, 3, H, W)` image in [0, 1] (diffusers' `output_type="np"` values).
pub fn decode_video(
    sd: &StableDiffusion,
    latents: &Tensor,
    on_frame: &mut dyn FnMut(usize, Tensor) -> Result<(), VideoError>,
) -> Result<(), VideoError> {
    let frames = latents.dim(2)?;
    for f in 0..frames {
        let frame = latents.narrow(2, f, 1)?.squeeze(2)?.contiguous()?;
        on_frame(f, sd.decode_latents(&frame)?)?;
    }
    Ok(())
}

/// Generates a batch of frames as 8-bit images (see the module docs).
pub fn sample_video(
    sd: &StableDiffusion,
    motion: &MotionModules,
    request: &VideoRequest,
    on_step: &mut dyn FnMut(StepProgress),
) -> Result<Vec<RgbImage>, VideoError> {
    let latents = generate_video_latents(sd, motion, request, on_step)?;
    let mut images = Vec::with_capacity(request.frames);
    decode_video(sd, &latents, &mut |_, image| {
        images.push(tensor_to_rgb(&image)?);
        Ok(())
    })?;
    Ok(images)
}

/// Runs all steps of `scheduler` (already `set_timesteps`) from `latents`
/// `(1, channels, frames, h, w)` (see the module docs).
pub fn denoise_video(
    request: &VideoDenoiseRequest,
    scheduler: &mut dyn Scheduler,
    latents: Tensor,
    noise: &mut dyn NoiseSource,
    on_step: &mut dyn FnMut(StepProgress),
) -> Result<Tensor, VideoError> {
    let (one, _, frames, h, w) = latents.dims5()?;
    if one != 1 {
        return Err(VideoError::Invalid(format!(
            "video latents must hold one video (1, channels, frames, h, w), got {:?}",
            latents.dims()
        )));
    }
    let windows = context_windows(frames, &request.context)?;
    let longest = windows.iter().map(|w| w.frames.len()).max().unwrap_or(0);
    if longest > request.motion.max_frames() {
        return Err(VideoError::Invalid(format!(
            "context windows of {longest} frames, but the motion module's positional encoding covers {} (lower context_length)",
            request.motion.max_frames()
        )));
    }
    let cfg = uses_cfg(request.guidance_scale);
    let text = WindowText::new(request.text, cfg)?;
    check_controls(request.controls, frames, h, w)?;
    let mut predictor = WindowPredictor {
        request,
        text,
        cfg,
        frames,
        windows,
    };
    run_steps(&mut predictor, scheduler, latents, noise, on_step)
}

fn check_controls(
    controls: &[VideoControl],
    frames: usize,
    h: usize,
    w: usize,
) -> Result<(), VideoError> {
    for (k, control) in controls.iter().enumerate() {
        if control.frames.len() != frames {
            return Err(VideoError::Invalid(format!(
                "ControlNet {k}: {} control images for {frames} frames",
                control.frames.len()
            )));
        }
        check_step_range(k, control.start, control.end).map_err(VideoError::Invalid)?;
        let scale = control.model.config().control_image_scale();
        let expected = ((w * scale) as u32, (h * scale) as u32);
        if let Some((f, img)) = control
            .frames
            .iter()
            .enumerate()
            .find(|(_, img)| img.dimensions() != expected)
        {
            return Err(VideoError::Invalid(format!(
                "ControlNet {k}: control image of frame {f} is {}x{}, expected {}x{}",
                img.width(),
                img.height(),
                expected.0,
                expected.1
            )));
        }
    }
    Ok(())
}

/// Text embeddings repeated per frame of a window.
struct WindowText {
    uncond: Option<Tensor>,
    cond: Tensor,
}

impl WindowText {
    fn new(text: &TextConditioning, cfg: bool) -> Result<Self, VideoError> {
        if text.cond.dim(0)? != 1 {
            return Err(VideoError::Invalid(format!(
                "one prompt embedding (1, tokens, dim) expected, got {:?}",
                text.cond.dims()
            )));
        }
        let uncond = if cfg {
            Some(checked_uncond(text).map_err(VideoError::Invalid)?.clone())
        } else {
            None
        };
        Ok(Self {
            uncond,
            cond: text.cond.clone(),
        })
    }

    /// `[uncond × frames; cond × frames]` with guidance, else `cond × frames`.
    fn both(&self, frames: usize) -> candle_core::Result<Tensor> {
        let cond = self.cond.repeat((frames, 1, 1))?;
        match &self.uncond {
            Some(uncond) => Tensor::cat(&[&uncond.repeat((frames, 1, 1))?, &cond], 0),
            None => Ok(cond),
        }
    }

    fn cond(&self, frames: usize) -> candle_core::Result<Tensor> {
        self.cond.repeat((frames, 1, 1))
    }
}

/// A step's prediction over all frames: the windows' guided predictions, averaged per frame.
struct WindowPredictor<'a> {
    request: &'a VideoDenoiseRequest<'a>,
    text: WindowText,
    cfg: bool,
    frames: usize,
    windows: Vec<ContextWindow>,
}

impl NoisePredictor for WindowPredictor<'_> {
    type Error = VideoError;

    fn predict(
        &mut self,
        scheduler: &dyn Scheduler,
        latents: &Tensor,
        at: StepAt,
    ) -> Result<Tensor, VideoError> {
        // (frames, channels, h, w): windows are contiguous frame ranges.
        let frame_latents = latents.squeeze(0)?.transpose(0, 1)?.contiguous()?;
        let mut average = WindowAverager::new(self.frames);
        for window in &self.windows {
            if let Some(stop) = self.request.stop {
                stop.check()?;
            }
            let prediction = self.window_prediction(scheduler, &frame_latents, window, at)?;
            average.add(window, &prediction)?;
        }
        Ok(average
            .finish()?
            .transpose(0, 1)?
            .unsqueeze(0)?
            .contiguous()?)
    }
}

impl WindowPredictor<'_> {
    /// The guided noise prediction of one window `(window frames, channels, h, w)`.
    fn window_prediction(
        &self,
        scheduler: &dyn Scheduler,
        frame_latents: &Tensor,
        window: &ContextWindow,
        at: StepAt,
    ) -> Result<Tensor, VideoError> {
        let range = window.frames.clone();
        let len = range.len();
        let x = frame_latents.narrow(0, range.start, len)?;
        let mut calls = Vec::new();
        for control in self.request.controls {
            if !control_active(at.index, at.total, control.start, control.end) {
                continue;
            }
            let image = control_images(&control.frames[range.clone()], x.device())?;
            calls.push(ControlCall::new(
                control.model,
                &image,
                control.scale,
                control.guess_mode,
                self.cfg,
            )?);
        }
        let text_both = self.text.both(len)?;
        let text_cond = self.text.cond(len)?;
        let hook = self.request.motion.hook(len);
        let unet = GuidedUNet {
            unet: self.request.unet,
            guidance_scale: self.request.guidance_scale,
            text_both: &text_both,
            text_cond: &text_cond,
            extra_input: None,
            attention_hook: None,
            layer_hook: Some(&hook),
        };
        unet.predict(scheduler, &x, &calls, at)
            .map_err(|e| match e {
                PredictError::Model(source) => VideoError::Model {
                    step: at.index,
                    frames: range,
                    source,
                },
                PredictError::Scheduler(e) => e.into(),
                PredictError::Tensor(e) => e.into(),
            })
    }
}

/// `(frames, 3, H, W)` in [0, 1] from 8-bit frames.
fn control_images(frames: &[RgbImage], device: &Device) -> Result<Tensor, VideoError> {
    let tensors = frames
        .iter()
        .map(|img| rgb_to_tensor(img, device).map_err(VideoError::from))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Tensor::cat(&tensors, 0)?)
}
