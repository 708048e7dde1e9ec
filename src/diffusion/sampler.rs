//! The denoising loop in latent space, step for step as diffusers'
//! `StableDiffusionControlNet{,Img2Img,Inpaint}Pipeline` run it:
//!
//! 1. the latents are doubled for classifier-free guidance (uncond, cond);
//! 2. every ControlNet active at this step (its `[start, end]` fraction of the steps) adds its
//!    residuals, scaled by its own `scale`; in guess mode a net sees only the cond half and
//!    contributes nothing to the uncond half;
//! 3. the UNet predicts noise (a 9-channel inpainting UNet also gets the mask and the
//!    masked-image latents), guidance combines the halves, the scheduler steps;
//! 4. for inpainting with an ordinary UNet, the known region is replaced after every step by
//!    the original latents noised to the next step's level (A1111 / ComfyUI / diffusers).
//!
//! The loop itself ([`run_steps`]) is shared with videos: a [`NoisePredictor`] makes the
//! guided noise prediction of one step (here: the UNet with its ControlNets over the image
//! batch; for videos, context windows over the frames, see
//! [`crate::diffusion::video_pipeline`]), the loop steps the scheduler. Both predict through
//! [`GuidedUNet`]. Text encoding, VAE encode/decode and the initial latents are the caller's
//! (see [`crate::diffusion::image_pipeline`], [`crate::diffusion::latents`]).

use candle_core::{Device, Tensor};

use crate::diffusion::deep_cache::{DeepCacheSettings, DeepCacheSlot};
use crate::diffusion::guidance::{classifier_free_guidance, control_active, uses_cfg};
use crate::diffusion::schedulers::{Scheduler, SchedulerError};
use crate::models::attention_hook::{LayerOutputHook, SelfAttentionHook};
use crate::models::controlnet::{
    sum_control_residuals, sum_down_residuals, ControlNetModel, ControlNetOutput,
};
use crate::models::unet::deep_cache::DeepCacheCall;
use crate::models::unet::{UNet2DConditionModel, UNetError, UNetExtras};
use crate::noise::{NoiseError, NoiseSource};

/// Errors of the denoising loop.
#[derive(Debug, thiserror::Error)]
pub enum SamplerError {
    #[error("denoising step {step}: {source}")]
    Model {
        step: usize,
        #[source]
        source: UNetError,
    },
    #[error(transparent)]
    Scheduler(#[from] SchedulerError),
    #[error(transparent)]
    Noise(#[from] NoiseError),
    #[error("sampler tensor op: {0}")]
    Tensor(#[from] candle_core::Error),
    #[error("sampler input: {0}")]
    Invalid(String),
}

/// Text conditioning, `(batch, tokens, dim)` each; `uncond` is required when guidance is on.
#[derive(Debug, Clone)]
pub struct TextConditioning {
    pub cond: Tensor,
    pub uncond: Option<Tensor>,
}

/// One ControlNet of a (multi-)ControlNet run.
pub struct ControlInput<'a> {
    pub model: &'a ControlNetModel,
    /// `(batch, 3, H, W)` RGB in [0, 1] at the output image size.
    pub image: Tensor,
    pub scale: f64,
    /// Fractions of the sampling steps where the net starts / stops acting.
    pub start: f64,
    pub end: f64,
    pub guess_mode: bool,
}

/// Inpainting, with the mask at latent size `(batch, 1, h, w)`, 1 = repaint, 0 = keep.
#[derive(Debug, Clone)]
pub enum Inpaint {
    /// An ordinary 4-channel UNet: after each step the kept region is reset to the original
    /// latents noised with `noise` to the next step's level.
    LatentBlend {
        image_latents: Tensor,
        mask: Tensor,
        noise: Tensor,
    },
    /// A 9-channel inpainting UNet: `[latents, mask, masked_image_latents]` as its input.
    InpaintingUnet {
        mask: Tensor,
        masked_image_latents: Tensor,
    },
}

/// Everything the loop needs besides the scheduler, the starting latents and the noise.
pub struct DenoiseRequest<'a> {
    pub unet: &'a UNet2DConditionModel,
    pub text: &'a TextConditioning,
    pub guidance_scale: f64,
    pub controls: &'a [ControlInput<'a>],
    pub inpaint: Option<&'a Inpaint>,
    /// Self-attention hook passed to every UNet call (cross-frame attention).
    pub attention_hook: Option<&'a dyn SelfAttentionHook>,
    /// Reuse the UNet's deep features between full passes (`deep_cache:`).
    pub deep_cache: Option<DeepCacheSettings>,
}

/// Reported after every step.
pub struct StepProgress<'a> {
    /// 0-based step index and the number of steps of this run.
    pub step: usize,
    pub total: usize,
    pub timestep: f64,
    pub latents: &'a Tensor,
}

/// Where the loop stands.
#[derive(Debug, Clone, Copy)]
pub struct StepAt {
    /// 0-based step index and the number of steps of this run.
    pub index: usize,
    pub total: usize,
    pub timestep: f64,
}

/// How one step's guided noise prediction is made: all that differs between the image and
/// the video loop.
pub trait NoisePredictor {
    type Error: From<SchedulerError>;

    /// The guided noise prediction for `latents` at step `at`.
    fn predict(
        &mut self,
        scheduler: &dyn Scheduler,
        latents: &Tensor,
        at: StepAt,
    ) -> Result<Tensor, Self::Error>;

    /// The latents after the scheduler step (inpainting resets the known region here).
    fn after_step(
        &mut self,
        _scheduler: &dyn Scheduler,
        latents: Tensor,
        _at: StepAt,
    ) -> Result<Tensor, Self::Error> {
        Ok(latents)
    }
}

/// The one denoising loop: runs all steps of `scheduler` (already `set_timesteps`) from
/// `latents`, stochastic schedulers drawing from `noise`; `on_step` hears of every step.
pub fn run_steps<P: NoisePredictor + ?Sized>(
    predictor: &mut P,
    scheduler: &mut dyn Scheduler,
    mut latents: Tensor,
    noise: &mut dyn NoiseSource,
    on_step: &mut dyn FnMut(StepProgress),
) -> Result<Tensor, P::Error> {
    let timesteps = scheduler.timesteps().to_vec();
    let total = timesteps.len();
    for (index, &timestep) in timesteps.iter().enumerate() {
        let at = StepAt {
            index,
            total,
            timestep,
        };
        let guided = predictor.predict(&*scheduler, &latents, at)?;
        latents = scheduler.step(&guided, index, &latents, noise)?;
        latents = predictor.after_step(&*scheduler, latents, at)?;
        on_step(StepProgress {
            step: index,
            total,
            timestep,
            latents: &latents,
        });
    }
    Ok(latents)
}

/// Errors of one [`GuidedUNet::predict`], placed in context by the caller.
#[derive(Debug)]
pub enum PredictError {
    Model(UNetError),
    Scheduler(SchedulerError),
    Tensor(candle_core::Error),
}

impl From<candle_core::Error> for PredictError {
    fn from(e: candle_core::Error) -> Self {
        Self::Tensor(e)
    }
}

impl From<SchedulerError> for PredictError {
    fn from(e: SchedulerError) -> Self {
        Self::Scheduler(e)
    }
}

/// One ControlNet active at this step, its image in the layout of the batch it runs on.
#[derive(Clone)]
pub struct ControlCall<'a> {
    pub model: &'a ControlNetModel,
    /// Doubled for guidance unless `cond_only`.
    pub image: Tensor,
    pub scale: f64,
    pub guess_mode: bool,
    /// Guess mode with guidance: the net runs on the cond half only.
    pub cond_only: bool,
}

impl<'a> ControlCall<'a> {
    /// `image` `(batch, 3, H, W)` for a net; shuffle-style nets (global pooling) always run in
    /// guess mode, as in diffusers.
    pub fn new(
        model: &'a ControlNetModel,
        image: &Tensor,
        scale: f64,
        guess_mode: bool,
        cfg: bool,
    ) -> candle_core::Result<Self> {
        let guess_mode = guess_mode || model.config().global_pool_conditions;
        let cond_only = guess_mode && cfg;
        let image = if cond_only {
            image.clone()
        } else {
            double_if(image, cfg)?
        };
        Ok(Self {
            model,
            image,
            scale,
            guess_mode,
            cond_only,
        })
    }
}

/// The UNet with its ControlNets and classifier-free guidance, for one batch of latents.
pub struct GuidedUNet<'a> {
    pub unet: &'a UNet2DConditionModel,
    pub guidance_scale: f64,
    /// `[uncond; cond]` with guidance, else `cond`, in the batch's layout.
    pub text_both: &'a Tensor,
    pub text_cond: &'a Tensor,
    /// Channels appended to the UNet input (a 9-channel inpainting UNet), already doubled.
    pub extra_input: Option<&'a Tensor>,
    pub attention_hook: Option<&'a dyn SelfAttentionHook>,
    pub layer_hook: Option<&'a dyn LayerOutputHook>,
}

impl GuidedUNet<'_> {
    /// The guided noise prediction for `x` `(batch, channels, h, w)`.
    pub fn predict(
        &self,
        scheduler: &dyn Scheduler,
        x: &Tensor,
        controls: &[ControlCall],
        at: StepAt,
    ) -> Result<Tensor, PredictError> {
        self.predict_cached(scheduler, x, controls, at, None)
    }

    /// [`Self::predict`], with DeepCache when `cache` is given: the UNet runs whole on the
    /// refresh steps (keeping its deep features in the slot) and shallow in between, where
    /// the ControlNets make only the residuals the shallow pass reads.
    pub fn predict_cached(
        &self,
        scheduler: &dyn Scheduler,
        x: &Tensor,
        controls: &[ControlCall],
        at: StepAt,
        cache: Option<(&DeepCacheSettings, &mut DeepCacheSlot)>,
    ) -> Result<Tensor, PredictError> {
        let cfg = uses_cfg(self.guidance_scale);
        let (i, t) = (at.index, at.timestep);
        let latent_in = scheduler.scale_model_input(&double_if(x, cfg)?, i)?;
        let plan = cache
            .as_ref()
            .map(|(settings, slot)| (settings.branch, slot.reused(settings, i)));
        let call = plan.as_ref().map(|(branch, reused)| match reused {
            Some(features) => DeepCacheCall::Reuse {
                branch: *branch,
                features,
            },
            None => DeepCacheCall::Refresh(*branch),
        });
        // A shallow pass reads only the first skip tensors.
        let shallow = match call {
            Some(DeepCacheCall::Reuse { branch, .. }) => Some(
                self.unet
                    .shallow_skip_count(branch)
                    .map_err(PredictError::Model)?,
            ),
            _ => None,
        };

        let mut outputs: Vec<ControlNetOutput> = Vec::new();
        let mut shallow_outputs: Vec<Vec<Tensor>> = Vec::new();
        for control in controls {
            let (input, text, guess_mode) = if control.cond_only {
                (scheduler.scale_model_input(x, i)?, self.text_cond, true)
            } else {
                (latent_in.clone(), self.text_both, control.guess_mode)
            };
            let pad = |t: &Tensor| -> candle_core::Result<Tensor> {
                if control.cond_only {
                    zero_uncond_half(t)
                } else {
                    Ok(t.clone())
                }
            };
            match shallow {
                Some(count) => {
                    let residuals = control
                        .model
                        .forward_shallow(
                            &input,
                            t,
                            text,
                            &control.image,
                            control.scale,
                            guess_mode,
                            count,
                        )
                        .map_err(PredictError::Model)?;
                    shallow_outputs.push(residuals.iter().map(pad).collect::<Result<_, _>>()?);
                }
                None => {
                    let out = control
                        .model
                        .forward(&input, t, text, &control.image, control.scale, guess_mode)
                        .map_err(PredictError::Model)?;
                    outputs.push(ControlNetOutput {
                        down_residuals: out
                            .down_residuals
                            .iter()
                            .map(pad)
                            .collect::<Result<_, _>>()?,
                        mid_residual: pad(&out.mid_residual)?,
                    });
                }
            }
        }
        let residuals = if outputs.is_empty() {
            None
        } else {
            Some(sum_control_residuals(&outputs).map_err(PredictError::Model)?)
        };
        let shallow_residuals = if shallow_outputs.is_empty() {
            None
        } else {
            let lists: Vec<&[Tensor]> = shallow_outputs.iter().map(Vec::as_slice).collect();
            Some(sum_down_residuals(&lists).map_err(PredictError::Model)?)
        };

        let unet_in = match self.extra_input {
            Some(extra) => Tensor::cat(&[&latent_in, extra], 1)?,
            None => latent_in,
        };
        let extras = UNetExtras {
            down_residuals: residuals
                .as_ref()
                .map(|r| r.down_residuals.as_slice())
                .or(shallow_residuals.as_deref()),
            mid_residual: residuals.as_ref().map(|r| &r.mid_residual),
            attention_hook: self.attention_hook,
            layer_hook: self.layer_hook,
        };
        let (prediction, features) = self
            .unet
            .forward_cached(&unet_in, t, self.text_both, &extras, call)
            .map_err(PredictError::Model)?;
        if let Some((_, slot)) = cache {
            slot.keep(features);
        }
        Ok(if cfg {
            let batch = x.dim(0)?;
            classifier_free_guidance(
                &prediction.narrow(0, 0, batch)?,
                &prediction.narrow(0, batch, batch)?,
                self.guidance_scale,
            )?
        } else {
            prediction
        })
    }
}

/// Runs all steps of `scheduler` (already `set_timesteps`) from `latents`.
pub fn denoise(
    request: &DenoiseRequest,
    scheduler: &mut dyn Scheduler,
    latents: Tensor,
    noise: &mut dyn NoiseSource,
    on_step: &mut dyn FnMut(StepProgress),
) -> Result<Tensor, SamplerError> {
    let cfg = uses_cfg(request.guidance_scale);
    let text = Embeddings::new(request.text, cfg)?;
    let controls = prepare_controls(request.controls, cfg, latents.dim(0)?)?;
    let inpaint_inputs = match request.inpaint {
        Some(Inpaint::InpaintingUnet {
            mask,
            masked_image_latents,
        }) => Some(Tensor::cat(
            &[double_if(mask, cfg)?, double_if(masked_image_latents, cfg)?],
            1,
        )?),
        _ => None,
    };
    let mut predictor = ImagePredictor {
        request,
        text,
        controls,
        inpaint_inputs,
        deep_cache: DeepCacheSlot::default(),
    };
    run_steps(&mut predictor, scheduler, latents, noise, on_step)
}

/// The image batch's prediction: every active ControlNet on the whole batch.
struct ImagePredictor<'a> {
    request: &'a DenoiseRequest<'a>,
    text: Embeddings,
    controls: Vec<PreparedControl<'a>>,
    inpaint_inputs: Option<Tensor>,
    deep_cache: DeepCacheSlot,
}

impl NoisePredictor for ImagePredictor<'_> {
    type Error = SamplerError;

    fn predict(
        &mut self,
        scheduler: &dyn Scheduler,
        latents: &Tensor,
        at: StepAt,
    ) -> Result<Tensor, SamplerError> {
        let calls: Vec<ControlCall> = self
            .controls
            .iter()
            .filter(|c| control_active(at.index, at.total, c.start, c.end))
            .map(|c| c.call.clone())
            .collect();
        let unet = GuidedUNet {
            unet: self.request.unet,
            guidance_scale: self.request.guidance_scale,
            text_both: &self.text.both,
            text_cond: &self.text.cond,
            extra_input: self.inpaint_inputs.as_ref(),
            attention_hook: self.request.attention_hook,
            layer_hook: None,
        };
        let cache = self
            .request
            .deep_cache
            .as_ref()
            .map(|settings| (settings, &mut self.deep_cache));
        unet.predict_cached(scheduler, latents, &calls, at, cache)
            .map_err(|e| match e {
                PredictError::Model(source) => SamplerError::Model {
                    step: at.index,
                    source,
                },
                PredictError::Scheduler(e) => e.into(),
                PredictError::Tensor(e) => e.into(),
            })
    }

    fn after_step(
        &mut self,
        scheduler: &dyn Scheduler,
        latents: Tensor,
        at: StepAt,
    ) -> Result<Tensor, SamplerError> {
        let Some(Inpaint::LatentBlend {
            image_latents,
            mask,
            noise,
        }) = self.request.inpaint
        else {
            return Ok(latents);
        };
        let known = if at.index + 1 < at.total {
            scheduler.add_noise(image_latents, noise, at.index + 1)?
        } else {
            image_latents.clone()
        };
        blend_known_region(&latents, &known, mask)
    }
}

/// `(1 - mask) * known + mask * generated`.
pub fn blend_known_region(
    generated: &Tensor,
    known: &Tensor,
    mask: &Tensor,
) -> Result<Tensor, SamplerError> {
    let keep = mask.affine(-1.0, 1.0)?;
    Ok((keep.broadcast_mul(known)? + mask.broadcast_mul(generated)?)?)
}

/// Text embeddings in the layout of the UNet batch.
struct Embeddings {
    /// `[uncond; cond]` with guidance, else `cond`.
    both: Tensor,
    cond: Tensor,
}

impl Embeddings {
    fn new(text: &TextConditioning, cfg: bool) -> Result<Self, SamplerError> {
        let both = if cfg {
            let uncond = checked_uncond(text).map_err(SamplerError::Invalid)?;
            Tensor::cat(&[uncond, &text.cond], 0)?
        } else {
            text.cond.clone()
        };
        Ok(Self {
            both,
            cond: text.cond.clone(),
        })
    }
}

/// The negative-prompt embeddings guidance needs, of the prompt's shape.
pub fn checked_uncond(text: &TextConditioning) -> Result<&Tensor, String> {
    let uncond = text
        .uncond
        .as_ref()
        .ok_or_else(|| "guidance scale > 1 needs negative-prompt embeddings".to_string())?;
    if uncond.dims() != text.cond.dims() {
        return Err(format!(
            "negative embeddings {:?} differ from prompt embeddings {:?}",
            uncond.dims(),
            text.cond.dims()
        ));
    }
    Ok(uncond)
}

/// A ControlNet with its step range.
struct PreparedControl<'a> {
    call: ControlCall<'a>,
    start: f64,
    end: f64,
}

fn prepare_controls<'a>(
    controls: &'a [ControlInput<'a>],
    cfg: bool,
    batch: usize,
) -> Result<Vec<PreparedControl<'a>>, SamplerError> {
    controls
        .iter()
        .enumerate()
        .map(|(k, input)| {
            if input.image.dim(0)? != batch {
                return Err(SamplerError::Invalid(format!(
                    "control image {k} has batch {} but the latents have {batch}",
                    input.image.dim(0)?
                )));
            }
            check_step_range(k, input.start, input.end).map_err(SamplerError::Invalid)?;
            Ok(PreparedControl {
                call: ControlCall::new(
                    input.model,
                    &input.image,
                    input.scale,
                    input.guess_mode,
                    cfg,
                )?,
                start: input.start,
                end: input.end,
            })
        })
        .collect()
}

/// `0 <= start <= end <= 1` for ControlNet `k`.
pub fn check_step_range(k: usize, start: f64, end: f64) -> Result<(), String> {
    if !(0.0..=1.0).contains(&start) || !(start..=1.0).contains(&end) {
        return Err(format!(
            "ControlNet {k}: start {start} / end {end} must satisfy 0 <= start <= end <= 1"
        ));
    }
    Ok(())
}

/// The batch doubled for classifier-free guidance (`[x; x]`), else `x`.
pub fn double_if(x: &Tensor, cfg: bool) -> Result<Tensor, candle_core::Error> {
    if cfg {
        Tensor::cat(&[x, x], 0)
    } else {
        Ok(x.clone())
    }
}

/// Guess mode with guidance: the uncond half of the batch gets a zero residual.
fn zero_uncond_half(residual: &Tensor) -> Result<Tensor, candle_core::Error> {
    Tensor::cat(&[&residual.zeros_like()?, residual], 0)
}

/// Nearest-neighbour downsampling of an image-size mask `(b, 1, H, W)` to latent size by an
/// integer `factor`, as `torch.nn.functional.interpolate(mask, size=(H/f, W/f))` picks pixels.
pub fn mask_to_latent_size(mask: &Tensor, factor: usize) -> Result<Tensor, SamplerError> {
    let (b, c, h, w) = mask.dims4()?;
    if h % factor != 0 || w % factor != 0 {
        return Err(SamplerError::Invalid(format!(
            "mask {h}x{w} is not a multiple of the latent factor {factor}"
        )));
    }
    let device: &Device = mask.device();
    let rows = Tensor::arange_step(0u32, h as u32, factor as u32, device)?;
    let cols = Tensor::arange_step(0u32, w as u32, factor as u32, device)?;
    let picked = mask.index_select(&rows, 2)?.index_select(&cols, 3)?;
    debug_assert_eq!(picked.dims(), &[b, c, h / factor, w / factor]);
    Ok(picked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blend_keeps_unmasked_region() {
        let d = Device::Cpu;
        let generated = Tensor::new(&[[[[5f32, 5.0]]]], &d).unwrap();
        let known = Tensor::new(&[[[[1f32, 1.0]]]], &d).unwrap();
        let mask = Tensor::new(&[[[[1f32, 0.0]]]], &d).unwrap();
        let out = blend_known_region(&generated, &known, &mask).unwrap();
        assert_eq!(
            out.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            vec![5.0, 1.0]
        );
    }

    /// Predicts zeros and records the steps it saw.
    struct Recorder(Vec<(usize, usize)>);

    impl NoisePredictor for Recorder {
        type Error = SamplerError;

        fn predict(
            &mut self,
            _scheduler: &dyn Scheduler,
            latents: &Tensor,
            at: StepAt,
        ) -> Result<Tensor, SamplerError> {
            self.0.push((at.index, at.total));
            Ok(latents.zeros_like()?)
        }
    }

    #[test]
    fn loop_runs_every_step_in_order_and_reports_it() {
        use crate::diffusion::schedulers::{build, SchedulerConfig};
        use crate::noise::TorchGenerator;
        use crate::preset::SchedulerKind;

        let mut scheduler = build(SchedulerKind::Ddim, &SchedulerConfig::sd15()).unwrap();
        scheduler.set_timesteps(8, 0.5).unwrap();
        let expected_timesteps = scheduler.timesteps().to_vec();
        let latents = Tensor::ones((1, 4, 2, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
        let mut recorder = Recorder(Vec::new());
        let mut reported = Vec::new();
        run_steps(
            &mut recorder,
            scheduler.as_mut(),
            latents,
            &mut TorchGenerator::new(0),
            &mut |p| reported.push((p.step, p.total, p.timestep)),
        )
        .unwrap();
        assert_eq!(recorder.0, vec![(0, 4), (1, 4), (2, 4), (3, 4)]);
        let steps: Vec<(usize, usize, f64)> = expected_timesteps
            .iter()
            .enumerate()
            .map(|(i, &t)| (i, 4, t))
            .collect();
        assert_eq!(reported, steps);
    }

    #[test]
    fn mask_downsampling_picks_top_left_pixels() {
        let d = Device::Cpu;
        let data: Vec<f32> = (0..16).map(|v| v as f32).collect();
        let mask = Tensor::from_vec(data, (1, 1, 4, 4), &d).unwrap();
        let small = mask_to_latent_size(&mask, 2).unwrap();
        assert_eq!(
            small.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            vec![0.0, 2.0, 8.0, 10.0]
        );
    }
}
