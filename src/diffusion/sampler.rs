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
//! Text encoding, VAE encode/decode and the initial latents are the caller's
//! (see [`crate::diffusion::image_pipeline`]).

use candle_core::{Device, Tensor};

use crate::diffusion::guidance::{classifier_free_guidance, control_active, uses_cfg};
use crate::diffusion::schedulers::{Scheduler, SchedulerError};
use crate::models::attention_hook::SelfAttentionHook;
use crate::models::controlnet::{sum_control_residuals, ControlNetModel, ControlNetOutput};
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
}

/// Reported after every step.
pub struct StepProgress<'a> {
    /// 0-based step index and the number of steps of this run.
    pub step: usize,
    pub total: usize,
    pub timestep: f64,
    pub latents: &'a Tensor,
}

/// Runs all steps of `scheduler` (already `set_timesteps`) from `latents`.
pub fn denoise(
    request: &DenoiseRequest,
    scheduler: &mut dyn Scheduler,
    mut latents: Tensor,
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

    let timesteps = scheduler.timesteps().to_vec();
    let total = timesteps.len();
    for (i, &t) in timesteps.iter().enumerate() {
        let model_err = |source| SamplerError::Model { step: i, source };
        let latent_in = scheduler.scale_model_input(&double_if(&latents, cfg)?, i)?;

        let mut outputs: Vec<ControlNetOutput> = Vec::new();
        for control in controls.iter() {
            if !control_active(i, total, control.input.start, control.input.end) {
                continue;
            }
            let out = if control.cond_only {
                let input = scheduler.scale_model_input(&latents, i)?;
                let out = control
                    .input
                    .model
                    .forward(
                        &input,
                        t,
                        &text.cond,
                        &control.image,
                        control.input.scale,
                        true,
                    )
                    .map_err(model_err)?;
                zero_uncond_half(out)?
            } else {
                control
                    .input
                    .model
                    .forward(
                        &latent_in,
                        t,
                        &text.both,
                        &control.image,
                        control.input.scale,
                        control.guess_mode,
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

        let unet_in = match &inpaint_inputs {
            Some(extra) => Tensor::cat(&[&latent_in, extra], 1)?,
            None => latent_in,
        };
        let extras = UNetExtras {
            down_residuals: residuals.as_ref().map(|r| r.down_residuals.as_slice()),
            mid_residual: residuals.as_ref().map(|r| &r.mid_residual),
            attention_hook: request.attention_hook,
            ..Default::default()
        };
        let prediction = request
            .unet
            .forward(&unet_in, t, &text.both, &extras)
            .map_err(model_err)?;
        let guided = if cfg {
            let batch = latents.dim(0)?;
            classifier_free_guidance(
                &prediction.narrow(0, 0, batch)?,
                &prediction.narrow(0, batch, batch)?,
                request.guidance_scale,
            )?
        } else {
            prediction
        };
        latents = scheduler.step(&guided, i, &latents, noise)?;

        if let Some(Inpaint::LatentBlend {
            image_latents,
            mask,
            noise: inpaint_noise,
        }) = request.inpaint
        {
            let known = if i + 1 < total {
                scheduler.add_noise(image_latents, inpaint_noise, i + 1)?
            } else {
                image_latents.clone()
            };
            latents = blend_known_region(&latents, &known, mask)?;
        }
        on_step(StepProgress {
            step: i,
            total,
            timestep: t,
            latents: &latents,
        });
    }
    Ok(latents)
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
            let uncond = text.uncond.as_ref().ok_or_else(|| {
                SamplerError::Invalid("guidance scale > 1 needs negative-prompt embeddings".into())
            })?;
            if uncond.dims() != text.cond.dims() {
                return Err(SamplerError::Invalid(format!(
                    "negative embeddings {:?} differ from prompt embeddings {:?}",
                    uncond.dims(),
                    text.cond.dims()
                )));
            }
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

struct PreparedControl<'a> {
    input: &'a ControlInput<'a>,
    /// Control image in the layout of the batch this net runs on.
    image: Tensor,
    guess_mode: bool,
    /// Guess mode with guidance: the net runs on the cond half only.
    cond_only: bool,
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
            if !(0.0..=1.0).contains(&input.start) || !(input.start..=1.0).contains(&input.end) {
                return Err(SamplerError::Invalid(format!(
                    "ControlNet {k}: start {} / end {} must satisfy 0 <= start <= end <= 1",
                    input.start, input.end
                )));
            }
            // Shuffle-style nets (global pooling) always run in guess mode, as in diffusers.
            let guess_mode = input.guess_mode || input.model.config().global_pool_conditions;
            let cond_only = guess_mode && cfg;
            let image = if cond_only {
                input.image.clone()
            } else {
                double_if(&input.image, cfg)?
            };
            Ok(PreparedControl {
                input,
                image,
                guess_mode,
                cond_only,
            })
        })
        .collect()
}

fn double_if(x: &Tensor, cfg: bool) -> Result<Tensor, candle_core::Error> {
    if cfg {
        Tensor::cat(&[x, x], 0)
    } else {
        Ok(x.clone())
    }
}

/// Guess mode with guidance: the uncond half of the batch gets zero residuals.
fn zero_uncond_half(out: ControlNetOutput) -> Result<ControlNetOutput, candle_core::Error> {
    let pad = |t: &Tensor| Tensor::cat(&[&t.zeros_like()?, t], 0);
    Ok(ControlNetOutput {
        down_residuals: out
            .down_residuals
            .iter()
            .map(pad)
            .collect::<Result<_, _>>()?,
        mid_residual: pad(&out.mid_residual)?,
    })
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
