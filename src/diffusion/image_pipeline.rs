//! Stable Diffusion image generation (txt2img, img2img, inpaint) with any number of
//! ControlNets, reproducing diffusers' `StableDiffusionControlNet{,Img2Img,Inpaint}Pipeline`
//! (and, with no ControlNet, `StableDiffusion{,Img2Img,Inpaint}Pipeline`) for a seed:
//! the generator is consumed in the same order (VAE posterior samples, initial noise,
//! ancestral noise), images are pre- and post-processed the same way.

use candle_core::{DType, Device, Tensor};
use image::RgbImage;

use crate::diffusion::deep_cache::DeepCacheSettings;
use crate::diffusion::guidance::uses_cfg;
use crate::diffusion::latents::{
    image_latent_shape, initial_latents, strength_scheduler, LatentsError,
};
use crate::diffusion::sampler::{
    denoise, mask_to_latent_size, ControlInput, DenoiseRequest, Inpaint, SamplerError,
    StepProgress, TextConditioning,
};
use crate::diffusion::schedulers::{SamplerOptions, SchedulerConfig, SchedulerError};
use crate::models::attention_hook::SelfAttentionHook;
use crate::models::clip::{ClipError, ClipTextEncoder};
use crate::models::tokenizer::{ClipTokenizer, TokenizerError};
use crate::models::unet::{UNet2DConditionModel, UNetError};
use crate::models::vae::{Vae, VaeError};
use crate::noise::{NoiseError, TorchGenerator};
use crate::preset::SchedulerKind;

/// Errors of loading or running the image pipeline.
#[derive(Debug, thiserror::Error)]
pub enum ImagePipelineError {
    #[error("UNet / ControlNet: {0}")]
    UNet(#[from] UNetError),
    #[error("VAE: {0}")]
    Vae(#[from] VaeError),
    #[error("text encoder: {0}")]
    Clip(#[from] ClipError),
    #[error("tokenizer: {0}")]
    Tokenizer(#[from] TokenizerError),
    #[error(transparent)]
    Scheduler(#[from] SchedulerError),
    #[error(transparent)]
    Sampler(#[from] SamplerError),
    #[error(transparent)]
    Latents(#[from] LatentsError),
    #[error(transparent)]
    Noise(#[from] NoiseError),
    #[error("{context}: {source}")]
    Tensor {
        context: &'static str,
        #[source]
        source: candle_core::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

fn tensor_err(context: &'static str) -> impl Fn(candle_core::Error) -> ImagePipelineError {
    move |source| ImagePipelineError::Tensor { context, source }
}

/// The models of one Stable Diffusion checkpoint.
pub struct StableDiffusion {
    pub unet: UNet2DConditionModel,
    /// SD's KL VAE or the tiny one (TAESD).
    pub vae: Vae,
    pub text_encoder: ClipTextEncoder,
    pub tokenizer: ClipTokenizer,
    pub scheduler_config: SchedulerConfig,
    device: Device,
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenerationSettings {
    pub prompt: String,
    pub negative_prompt: String,
    /// Output size in pixels (multiples of the VAE factor, 8).
    pub width: usize,
    pub height: usize,
    pub steps: usize,
    pub guidance_scale: f64,
    pub scheduler: SchedulerKind,
    /// The preset's `sampler.eta` and `sampler.timestep_spacing`
    /// (`SamplerOptions::default()`: the scheduler's default eta, the model's spacing).
    pub options: SamplerOptions,
    pub seed: u64,
    /// Reuse the UNet's deep features between full passes (`deep_cache:`).
    pub deep_cache: Option<DeepCacheSettings>,
}

/// Where the latents start.
#[derive(Debug, Clone)]
pub enum InitImage {
    /// Pure noise (txt2img).
    None,
    /// `image` `(1, 3, H, W)` RGB in [0, 1], denoised from `strength` (1 = ignore the image).
    Img2Img { image: Tensor, strength: f64 },
    /// Repaint where `mask` `(1, 1, H, W)` is >= 0.5; with an ordinary UNet by latent blending,
    /// with a 9-channel inpainting UNet through its extra inputs.
    Inpaint {
        image: Tensor,
        mask: Tensor,
        strength: f64,
    },
}

/// A generated image.
#[derive(Debug, Clone)]
pub struct GeneratedImage {
    /// Final latents (before the VAE scaling is undone).
    pub latents: Tensor,
    /// `(1, 3, H, W)` RGB in [0, 1] (diffusers' `output_type="np"`, channels first).
    pub image: Tensor,
}

impl StableDiffusion {
    /// Models loaded elsewhere (`crate::loaders` reads checkpoints, VAE overrides and LoRAs),
    /// on `device`.
    pub fn from_parts(
        unet: UNet2DConditionModel,
        vae: impl Into<Vae>,
        text_encoder: ClipTextEncoder,
        tokenizer: ClipTokenizer,
        scheduler_config: SchedulerConfig,
        device: &Device,
    ) -> Self {
        Self {
            unet,
            vae: vae.into(),
            text_encoder,
            tokenizer,
            scheduler_config,
            device: device.clone(),
        }
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Spatial factor between pixels and latents.
    pub fn latent_factor(&self) -> usize {
        self.vae.downscale_factor()
    }

    /// diffusers' `encode_prompt`: the prompt and (with guidance) the negative prompt, each
    /// padded to the tokenizer's length, through the text encoder.
    pub fn encode_prompt(
        &self,
        prompt: &str,
        negative_prompt: &str,
        guidance: bool,
    ) -> Result<TextConditioning, ImagePipelineError> {
        let encode = |text: &str| -> Result<Tensor, ImagePipelineError> {
            let ids = self.tokenizer.encode_padded(text)?;
            self.text_encoder
                .encode_ids(&[ids], &self.device, 0)
                .map_err(tensor_err("text encoder"))
        };
        Ok(TextConditioning {
            cond: encode(prompt)?,
            uncond: if guidance {
                Some(encode(negative_prompt)?)
            } else {
                None
            },
        })
    }

    /// VAE encode of an image in [-1, 1], sampling the posterior with `generator` and scaling
    /// (diffusers' `retrieve_latents(..., sample_mode="sample") * scaling_factor`). The tiny
    /// VAE has no posterior: its latents are taken as they are and `generator` is not drawn
    /// from, as in diffusers.
    pub fn encode_image(
        &self,
        image: &Tensor,
        generator: &mut TorchGenerator,
    ) -> Result<Tensor, ImagePipelineError> {
        let encoding = self.vae.encode(image).map_err(tensor_err("VAE encode"))?;
        let latents = match encoding.posterior() {
            Some(dist) => {
                let noise = generator.randn(dist.mean.dims(), DType::F32, &self.device)?;
                dist.sample(&noise).map_err(tensor_err("VAE sample"))?
            }
            None => encoding.mean,
        };
        (latents * self.vae.scaling_factor()).map_err(tensor_err("VAE scaling"))
    }

    /// Latents to an image in [0, 1] (diffusers' decode + `postprocess(..., "np")`).
    pub fn decode_latents(&self, latents: &Tensor) -> Result<Tensor, ImagePipelineError> {
        let scaled = (latents / self.vae.scaling_factor()).map_err(tensor_err("VAE scaling"))?;
        let decoded = self.vae.decode(&scaled).map_err(tensor_err("VAE decode"))?;
        decoded
            .affine(0.5, 0.5)
            .and_then(|x| x.clamp(0f32, 1f32))
            .map_err(tensor_err("image postprocess"))
    }

    /// Generates one image, the settings' prompts encoded as diffusers' `encode_prompt` does
    /// (see [`Self::generate_with_text`]).
    pub fn generate(
        &self,
        settings: &GenerationSettings,
        init: &InitImage,
        controls: &[ControlInput],
        attention_hook: Option<&dyn SelfAttentionHook>,
        on_step: &mut dyn FnMut(StepProgress),
    ) -> Result<GeneratedImage, ImagePipelineError> {
        let cfg = uses_cfg(settings.guidance_scale);
        let text = self.encode_prompt(&settings.prompt, &settings.negative_prompt, cfg)?;
        self.generate_with_text(settings, &text, init, controls, attention_hook, on_step)
    }

    /// Generates one image for a prompt encoded elsewhere (A1111 weighting, long prompts,
    /// embeddings and clip skip: [`crate::prompt::PromptEncoder`]); `settings.prompt` and
    /// `negative_prompt` are not read. `controls` hold the ControlNets with their images at
    /// the output size; `on_step` is told about every denoising step.
    pub fn generate_with_text(
        &self,
        settings: &GenerationSettings,
        text: &TextConditioning,
        init: &InitImage,
        controls: &[ControlInput],
        attention_hook: Option<&dyn SelfAttentionHook>,
        on_step: &mut dyn FnMut(StepProgress),
    ) -> Result<GeneratedImage, ImagePipelineError> {
        if uses_cfg(settings.guidance_scale) && text.uncond.is_none() {
            return Err(ImagePipelineError::Invalid(format!(
                "guidance scale {} needs the negative prompt's conditioning",
                settings.guidance_scale
            )));
        }
        let factor = self.latent_factor();
        let (width, height) = (settings.width, settings.height);
        let shape = image_latent_shape(width, height, self.vae.latent_channels(), factor)?;
        check_image("init image", init_image(init), 3, width, height)?;
        for (k, control) in controls.iter().enumerate() {
            let what = format!("control image of ControlNet {k}");
            check_image(&what, Some(&control.image), 3, width, height)?;
        }
        let unet_channels = self.unet.config().in_channels;
        let inpainting_unet = unet_channels == self.vae.latent_channels() * 2 + 1;
        if inpainting_unet && !matches!(init, InitImage::Inpaint { .. }) {
            return Err(ImagePipelineError::Invalid(format!(
                "the UNet has {unet_channels} input channels (an inpainting model): it needs an image and a mask"
            )));
        }

        let strength = match init {
            InitImage::None => 1.0,
            InitImage::Img2Img { strength, .. } | InitImage::Inpaint { strength, .. } => *strength,
        };
        let mut scheduler = strength_scheduler(
            settings.scheduler,
            &self.scheduler_config,
            &settings.options,
            settings.steps,
            strength,
        )?;

        let mut generator = TorchGenerator::new(settings.seed);
        let mut inpaint = None;
        let latents = match init {
            InitImage::None => {
                initial_latents(&*scheduler, &mut generator, &shape, &self.device, None)?.latents
            }
            InitImage::Img2Img { image, .. } => {
                let image_latents = self.encode_image(&to_signed(image)?, &mut generator)?;
                let start = initial_latents(
                    &*scheduler,
                    &mut generator,
                    &shape,
                    &self.device,
                    Some(&image_latents),
                )?;
                start.latents
            }
            InitImage::Inpaint {
                image,
                mask,
                strength,
            } => {
                check_image("inpaint mask", Some(mask), 1, width, height)?;
                let image = to_signed(image)?;
                let full_strength = *strength >= 1.0;
                // Binarised mask; the masked image keeps only the region not repainted.
                let mask = mask.ge(0.5f32).and_then(|m| m.to_dtype(DType::F32));
                let mask = mask.map_err(tensor_err("inpaint mask"))?;
                let masked_image = mask
                    .affine(-1.0, 1.0)
                    .and_then(|keep| image.broadcast_mul(&keep))
                    .map_err(tensor_err("masked image"))?;
                let image_latents = if !inpainting_unet || !full_strength {
                    Some(self.encode_image(&image, &mut generator)?)
                } else {
                    None
                };
                // At full strength the start is pure noise even with known latents.
                let start = initial_latents(
                    &*scheduler,
                    &mut generator,
                    &shape,
                    &self.device,
                    image_latents.as_ref().filter(|_| !full_strength),
                )?;
                let masked_image_latents = self.encode_image(&masked_image, &mut generator)?;
                let latent_mask = mask_to_latent_size(&mask, factor)?;
                inpaint = Some(match image_latents {
                    Some(image_latents) if !inpainting_unet => Inpaint::LatentBlend {
                        image_latents,
                        mask: latent_mask,
                        noise: start.noise,
                    },
                    _ => Inpaint::InpaintingUnet {
                        mask: latent_mask,
                        masked_image_latents,
                    },
                });
                start.latents
            }
        };

        let request = DenoiseRequest {
            unet: &self.unet,
            text,
            guidance_scale: settings.guidance_scale,
            controls,
            inpaint: inpaint.as_ref(),
            attention_hook,
            deep_cache: settings.deep_cache,
        };
        let latents = denoise(
            &request,
            scheduler.as_mut(),
            latents,
            &mut generator,
            on_step,
        )?;
        let image = self.decode_latents(&latents)?;
        Ok(GeneratedImage { latents, image })
    }
}

fn init_image(init: &InitImage) -> Option<&Tensor> {
    match init {
        InitImage::None => None,
        InitImage::Img2Img { image, .. } | InitImage::Inpaint { image, .. } => Some(image),
    }
}

fn check_image(
    what: &str,
    image: Option<&Tensor>,
    channels: usize,
    width: usize,
    height: usize,
) -> Result<(), ImagePipelineError> {
    let Some(image) = image else { return Ok(()) };
    if image.dims() != [1, channels, height, width] {
        return Err(ImagePipelineError::Invalid(format!(
            "{what} has shape {:?}, expected [1, {channels}, {height}, {width}]",
            image.dims()
        )));
    }
    Ok(())
}

/// [0, 1] → [-1, 1], as diffusers' `VaeImageProcessor.normalize`.
fn to_signed(image: &Tensor) -> Result<Tensor, ImagePipelineError> {
    image
        .affine(2.0, -1.0)
        .map_err(tensor_err("image normalize"))
}

/// An 8-bit RGB image as a `(1, 3, H, W)` tensor in [0, 1] (`np.asarray(img) / 255`).
pub fn rgb_to_tensor(image: &RgbImage, device: &Device) -> Result<Tensor, ImagePipelineError> {
    let (w, h) = image.dimensions();
    let data: Vec<f32> = image.as_raw().iter().map(|&v| v as f32 / 255.0).collect();
    Tensor::from_vec(data, (h as usize, w as usize, 3), device)
        .and_then(|t| t.permute((2, 0, 1)))
        .and_then(|t| t.unsqueeze(0))
        .and_then(|t| t.contiguous())
        .map_err(tensor_err("image to tensor"))
}

/// An 8-bit grayscale image as a `(1, 1, H, W)` tensor in [0, 1].
pub fn gray_to_tensor(
    image: &image::GrayImage,
    device: &Device,
) -> Result<Tensor, ImagePipelineError> {
    let (w, h) = image.dimensions();
    let data: Vec<f32> = image.as_raw().iter().map(|&v| v as f32 / 255.0).collect();
    Tensor::from_vec(data, (1, 1, h as usize, w as usize), device)
        .map_err(tensor_err("mask to tensor"))
}

/// A `(1, 3, H, W)` tensor in [0, 1] as 8-bit RGB, rounding like diffusers' `numpy_to_pil`
/// (`(x * 255).round()`, ties to even).
pub fn tensor_to_rgb(image: &Tensor) -> Result<RgbImage, ImagePipelineError> {
    let (b, c, h, w) = image
        .dims4()
        .map_err(tensor_err("tensor to image: shape"))?;
    if b != 1 || c != 3 {
        return Err(ImagePipelineError::Invalid(format!(
            "expected a (1, 3, H, W) image tensor, got {:?}",
            image.dims()
        )));
    }
    let pixels: Vec<f32> = image
        .squeeze(0)
        .and_then(|t| t.permute((1, 2, 0)))
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1())
        .map_err(tensor_err("tensor to image"))?;
    let bytes = pixels.iter().map(|&v| quantize(v)).collect();
    RgbImage::from_raw(w as u32, h as u32, bytes)
        .ok_or_else(|| ImagePipelineError::Invalid("image buffer size mismatch".into()))
}

/// One channel value in [0, 1] to 8 bits as numpy does it (float32 multiply, round half even).
pub fn quantize(v: f32) -> u8 {
    (v * 255.0).round_ties_even().clamp(0.0, 255.0) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantize_rounds_half_to_even() {
        // Inputs and outputs from numpy: (np.float32(x) * 255).round().astype("uint8").
        let x = [
            0.5f32 / 255.0,
            1.5 / 255.0,
            2.5 / 255.0,
            0.5,
            0.99,
            0.0,
            1.0,
        ];
        let expected = [0u8, 2, 2, 128, 252, 0, 255];
        let got: Vec<u8> = x.iter().map(|&v| quantize(v)).collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn image_tensor_roundtrip() {
        let mut img = RgbImage::new(3, 2);
        for (i, p) in img.pixels_mut().enumerate() {
            *p = image::Rgb([i as u8 * 40, 255 - i as u8 * 40, 7]);
        }
        let t = rgb_to_tensor(&img, &Device::Cpu).unwrap();
        assert_eq!(t.dims(), &[1, 3, 2, 3]);
        assert_eq!(tensor_to_rgb(&t).unwrap(), img);
    }
}
