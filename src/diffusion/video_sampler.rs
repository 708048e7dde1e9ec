//! The denoising loop for a batch of video frames with AnimateDiff motion modules, step for
//! step as diffusers' `AnimateDiff{,VideoToVideo}ControlNetPipeline` run it, plus context
//! windows (see [`crate::diffusion::context_windows`]):
//!
//! at every step, for each context window in turn,
//! 1. the window's latents are doubled for classifier-free guidance (uncond frames, then cond
//!    frames, one text embedding per frame);
//! 2. every ControlNet active at this step runs on the window's frames with their own control
//!    images (ControlNets see single frames, so a frame's residuals do not depend on the
//!    window); guess mode as in [`crate::diffusion::sampler`];
//! 3. the UNet runs with the motion modules over the window's frames, guidance combines the
//!    halves;
//!
//! then the windows' predictions are averaged per frame and the scheduler steps all frames
//! at once. Only one window's activations exist at a time, so memory follows the window
//! length, not the number of frames. Latents are kept in diffusers' video layout
//! `(1, channels, frames, h, w)`, so stochastic schedulers draw their noise in its order.

use std::ops::Range;

use candle_core::{Device, Tensor};
use image::RgbImage;

use crate::diffusion::context_windows::{
    context_windows, ContextError, ContextWindow, WindowAverager,
};
use crate::diffusion::guidance::{classifier_free_guidance, control_active, uses_cfg};
use crate::diffusion::image_pipeline::{rgb_to_tensor, ImagePipelineError};
use crate::diffusion::sampler::{StepProgress, TextConditioning};
use crate::diffusion::schedulers::{Scheduler, SchedulerError};
use crate::models::controlnet::{sum_control_residuals, ControlNetModel, ControlNetOutput};
use crate::models::motion::MotionModules;
use crate::models::unet::{UNet2DConditionModel, UNetError, UNetExtras};
use crate::noise::{NoiseError, NoiseSource};
use crate::pipeline::resume::{Interrupted, StopFlag};
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

/// Everything the loop needs besides the scheduler, the starting latents and the noise.
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

/// Runs all steps of `scheduler` (already `set_timesteps`) from `latents`
/// `(1, channels, frames, h, w)`.
pub fn denoise_video(
    request: &VideoDenoiseRequest,
    scheduler: &mut dyn Scheduler,
    mut latents: Tensor,
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

    let timesteps = scheduler.timesteps().to_vec();
    let total = timesteps.len();
    for (i, &t) in timesteps.iter().enumerate() {
        // (frames, channels, h, w): windows are contiguous frame ranges.
        let frame_latents = latents.squeeze(0)?.transpose(0, 1)?.contiguous()?;
        let mut average = WindowAverager::new(frames);
        for window in &windows {
            if let Some(stop) = request.stop {
                stop.check()?;
            }
            let step = WindowStep {
                request,
                text: &text,
                cfg,
                step: i,
                total,
                timestep: t,
            };
            let prediction = step.predict(&*scheduler, &frame_latents, window)?;
            average.add(window, &prediction)?;
        }
        let noise_pred = average
            .finish()?
            .transpose(0, 1)?
            .unsqueeze(0)?
            .contiguous()?;
        latents = scheduler.step(&noise_pred, i, &latents, noise)?;
        on_step(StepProgress {
            step: i,
            total,
            timestep: t,
            latents: &latents,
        });
    }
    Ok(latents)
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
        if !(0.0..=1.0).contains(&control.start) || !(control.start..=1.0).contains(&control.end) {
            return Err(VideoError::Invalid(format!(
                "ControlNet {k}: start {} / end {} must satisfy 0 <= start <= end <= 1",
                control.start, control.end
            )));
        }
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
            let uncond = text.uncond.as_ref().ok_or_else(|| {
                VideoError::Invalid("guidance scale > 1 needs negative-prompt embeddings".into())
            })?;
            if uncond.dims() != text.cond.dims() {
                return Err(VideoError::Invalid(format!(
                    "negative embeddings {:?} differ from prompt embeddings {:?}",
                    uncond.dims(),
                    text.cond.dims()
                )));
            }
            Some(uncond.clone())
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

/// One window's prediction at one step.
struct WindowStep<'a> {
    request: &'a VideoDenoiseRequest<'a>,
    text: &'a WindowText,
    cfg: bool,
    step: usize,
    total: usize,
    timestep: f64,
}

impl WindowStep<'_> {
    /// The guided noise prediction `(window frames, channels, h, w)`.
    fn predict(
        &self,
        scheduler: &dyn Scheduler,
        frame_latents: &Tensor,
        window: &ContextWindow,
    ) -> Result<Tensor, VideoError> {
        let range = window.frames.clone();
        let len = range.len();
        let model_err = |source| VideoError::Model {
            step: self.step,
            frames: range.clone(),
            source,
        };
        let x = frame_latents.narrow(0, range.start, len)?;
        let latent_in = scheduler.scale_model_input(&double_if(&x, self.cfg)?, self.step)?;
        let text_both = self.text.both(len)?;

        let mut outputs: Vec<ControlNetOutput> = Vec::new();
        for control in self.request.controls {
            if !control_active(self.step, self.total, control.start, control.end) {
                continue;
            }
            let image = control_images(&control.frames[range.clone()], x.device())?;
            // Shuffle-style nets (global pooling) always run in guess mode, as in diffusers.
            let guess_mode = control.guess_mode || control.model.config().global_pool_conditions;
            let out = if guess_mode && self.cfg {
                // The net sees the cond half only; the uncond half gets zero residuals.
                let input = scheduler.scale_model_input(&x, self.step)?;
                let out = control
                    .model
                    .forward(
                        &input,
                        self.timestep,
                        &self.text.cond(len)?,
                        &image,
                        control.scale,
                        true,
                    )
                    .map_err(model_err)?;
                zero_uncond_half(out)?
            } else {
                control
                    .model
                    .forward(
                        &latent_in,
                        self.timestep,
                        &text_both,
                        &double_if(&image, self.cfg)?,
                        control.scale,
                        guess_mode,
                    )
                    .map_err(model_err)?
            };
            outputs.push(out);
        }
        let residuals = if outputs.is_empty() {
            None
        } else {
            Some(sum_control_residuals(&outputs).map_err(model_err)?)
        };
        let hook = self.request.motion.hook(len);
        let extras = UNetExtras {
            down_residuals: residuals.as_ref().map(|r| r.down_residuals.as_slice()),
            mid_residual: residuals.as_ref().map(|r| &r.mid_residual),
            layer_hook: Some(&hook),
            ..Default::default()
        };
        let prediction = self
            .request
            .unet
            .forward(&latent_in, self.timestep, &text_both, &extras)
            .map_err(model_err)?;
        Ok(if self.cfg {
            classifier_free_guidance(
                &prediction.narrow(0, 0, len)?,
                &prediction.narrow(0, len, len)?,
                self.request.guidance_scale,
            )?
        } else {
            prediction
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

fn double_if(x: &Tensor, cfg: bool) -> candle_core::Result<Tensor> {
    if cfg {
        Tensor::cat(&[x, x], 0)
    } else {
        Ok(x.clone())
    }
}

fn zero_uncond_half(out: ControlNetOutput) -> candle_core::Result<ControlNetOutput> {
    let pad = |t: &Tensor| Tensor::cat(&[&t.zeros_like()?, t], 0);
    Ok(ControlNetOutput {
        down_residuals: out
            .down_residuals
            .iter()
            .map(pad)
            .collect::<candle_core::Result<_>>()?,
        mid_residual: pad(&out.mid_residual)?,
    })
}
