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

use candle_core::{DType, Tensor};
use image::RgbImage;

use crate::diffusion::guidance::uses_cfg;
use crate::diffusion::image_pipeline::{
    rgb_to_tensor, tensor_to_rgb, GenerationSettings, StableDiffusion,
};
use crate::diffusion::sampler::{StepProgress, TextConditioning};
use crate::diffusion::schedulers;
use crate::diffusion::video_sampler::{
    denoise_video, VideoControl, VideoDenoiseRequest, VideoError,
};
use crate::models::motion::MotionModules;
use crate::models::vae::LatentDist;
use crate::noise::TorchGenerator;
use crate::pipeline::resume::StopFlag;
use crate::preset::motion::ContextOptions;

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
    /// Prompt, size, steps, guidance, scheduler and seed (shared by all frames).
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
    if width == 0 || height == 0 || width % factor != 0 || height % factor != 0 {
        return Err(VideoError::Invalid(format!(
            "frame size {width}x{height} must be a positive multiple of {factor}"
        )));
    }
    if request.frames == 0 {
        return Err(VideoError::Invalid("no frames to generate".into()));
    }
    let channels = sd.vae.config().latent_channels;
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
    let mut scheduler = schedulers::build(settings.scheduler, &sd.scheduler_config)?;
    let strength = match request.init {
        VideoInit::Noise => 1.0,
        VideoInit::Video { strength, .. } => strength,
    };
    scheduler.set_timesteps(settings.steps, strength)?;

    let mut generator = TorchGenerator::new(settings.seed);
    let (h, w) = (height / factor, width / factor);
    let device = sd.device();
    let latents = match request.init {
        VideoInit::Noise => {
            let noise =
                generator.randn(&[1, channels, request.frames, h, w], DType::F32, device)?;
            (noise * scheduler.init_noise_sigma())?
        }
        VideoInit::Video { frames, .. } => {
            if frames.len() != request.frames {
                return Err(VideoError::Invalid(format!(
                    "{} input frames for a batch of {}",
                    frames.len(),
                    request.frames
                )));
            }
            let encoded = encode_frames(sd, frames, width, height, &mut generator)?;
            // diffusers draws this noise frame-major, (1, frames, channels, h, w).
            let noise =
                generator.randn(&[1, request.frames, channels, h, w], DType::F32, device)?;
            scheduler
                .add_noise(&encoded.unsqueeze(0)?, &noise, 0)?
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
/// posterior noise drawn per chunk as diffusers' `encode_video` does.
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
        let mut means = Vec::with_capacity(chunk.len());
        let mut logvars = Vec::with_capacity(chunk.len());
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
            let dist = sd
                .vae
                .encode(&image)
                .map_err(|e| e.context(format!("VAE encode of input frame {index}")))?;
            means.push(dist.mean);
            logvars.push(dist.logvar);
        }
        let dist = LatentDist {
            mean: Tensor::cat(&means, 0)?,
            logvar: Tensor::cat(&logvars, 0)?,
        };
        let noise = generator.randn(dist.mean.dims(), DType::F32, device)?;
        latents.push((dist.sample(&noise)? * sd.vae.scaling_factor())?);
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
