//! The diffusion pass on one crop: masked img2img with the ordinary SD UNet (the kept part
//! is reset to the crop's noised latents after every step), optionally guided by the
//! openpose ControlNet. Behind a trait so the detailer's bookkeeping can be tested without
//! models.

use std::sync::Arc;

use candle_core::Device;
use image::{GrayImage, RgbImage};

use crate::diffusion::deep_cache::DeepCacheSettings;
use crate::diffusion::image_pipeline::{
    gray_to_tensor, rgb_to_tensor, tensor_to_rgb, GenerationSettings, ImagePipelineError,
    InitImage, StableDiffusion,
};
use crate::diffusion::sampler::ControlInput;
use crate::diffusion::schedulers::SamplerOptions;
use crate::models::controlnet::ControlNetModel;
use crate::preset::SchedulerKind;

/// One crop to repaint, everything at the detail size.
#[derive(Debug, Clone)]
pub struct InpaintRequest<'a> {
    pub image: &'a RgbImage,
    /// 255 = repaint, 0 = keep.
    pub mask: &'a GrayImage,
    /// The part's keypoints drawn as an openpose map, when the ControlNet guides the pass.
    pub control: Option<&'a RgbImage>,
    pub control_scale: f32,
    pub prompt: &'a str,
    pub negative_prompt: &'a str,
    pub denoise: f32,
    pub steps: u32,
    pub cfg_scale: f32,
    pub seed: u64,
}

/// Repaints crops.
pub trait RegionInpainter: Send {
    /// The repainted crop, the size of `request.image`.
    fn inpaint(&mut self, request: &InpaintRequest) -> Result<RgbImage, Box<ImagePipelineError>>;

    /// Whether a control image can be used (an openpose ControlNet is loaded).
    fn has_controlnet(&self) -> bool;

    /// Pixel size the crops must be a multiple of.
    fn size_multiple(&self) -> u32;
}

/// The sampler of the detail pass: the preset's scheduler, its `sampler.eta` and
/// `sampler.timestep_spacing` and its `deep_cache:`, as the resolver reads them
/// (`crate::app::resolve::Sampling::inpaint_sampler`). Steps, CFG and seed are the detail
/// section's, per request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InpaintSampler {
    pub scheduler: SchedulerKind,
    pub options: SamplerOptions,
    pub deep_cache: Option<DeepCacheSettings>,
}

impl InpaintSampler {
    /// `scheduler` with its default eta, the model's spacing and no DeepCache.
    pub fn plain(scheduler: SchedulerKind) -> Self {
        InpaintSampler {
            scheduler,
            options: SamplerOptions::default(),
            deep_cache: None,
        }
    }

    /// What the image pipeline runs for `request`, a crop of `width` x `height`.
    pub fn generation_settings(
        &self,
        request: &InpaintRequest,
        width: u32,
        height: u32,
    ) -> GenerationSettings {
        GenerationSettings {
            prompt: request.prompt.to_string(),
            negative_prompt: request.negative_prompt.to_string(),
            width: width as usize,
            height: height as usize,
            steps: request.steps as usize,
            guidance_scale: request.cfg_scale as f64,
            scheduler: self.scheduler,
            options: self.options,
            seed: request.seed,
            deep_cache: self.deep_cache,
        }
    }
}

/// [`RegionInpainter`] with Stable Diffusion: the models are shared (`Arc`) with the
/// renderer that loaded them.
pub struct StableDiffusionInpainter {
    sd: Arc<StableDiffusion>,
    openpose: Option<Arc<ControlNetModel>>,
    sampler: InpaintSampler,
}

impl StableDiffusionInpainter {
    /// With `scheduler`'s default eta, the model's timestep spacing and no DeepCache
    /// ([`InpaintSampler::plain`]).
    pub fn new(
        sd: Arc<StableDiffusion>,
        openpose: Option<Arc<ControlNetModel>>,
        scheduler: SchedulerKind,
    ) -> Self {
        Self::with_sampler(sd, openpose, InpaintSampler::plain(scheduler))
    }

    /// With the preset's sampler as resolved ([`InpaintSampler`]).
    pub fn with_sampler(
        sd: Arc<StableDiffusion>,
        openpose: Option<Arc<ControlNetModel>>,
        sampler: InpaintSampler,
    ) -> Self {
        StableDiffusionInpainter {
            sd,
            openpose,
            sampler,
        }
    }

    /// Reuses the UNet's deep features between full passes (the preset's `deep_cache:`).
    pub fn with_deep_cache(mut self, deep_cache: Option<DeepCacheSettings>) -> Self {
        self.sampler.deep_cache = deep_cache;
        self
    }

    /// The sampler every crop is repainted with.
    pub fn sampler(&self) -> &InpaintSampler {
        &self.sampler
    }

    fn device(&self) -> &Device {
        self.sd.device()
    }
}

impl RegionInpainter for StableDiffusionInpainter {
    fn inpaint(&mut self, request: &InpaintRequest) -> Result<RgbImage, Box<ImagePipelineError>> {
        let (width, height) = request.image.dimensions();
        let settings = self.sampler.generation_settings(request, width, height);
        let init = InitImage::Inpaint {
            image: rgb_to_tensor(request.image, self.device()).map_err(Box::new)?,
            mask: gray_to_tensor(request.mask, self.device()).map_err(Box::new)?,
            strength: request.denoise as f64,
        };
        let mut controls = Vec::new();
        if let (Some(image), Some(model)) = (request.control, &self.openpose) {
            controls.push(ControlInput {
                model: model.as_ref(),
                image: rgb_to_tensor(image, self.device()).map_err(Box::new)?,
                scale: request.control_scale as f64,
                start: 0.0,
                end: 1.0,
                guess_mode: false,
            });
        }
        let generated = self
            .sd
            .generate(&settings, &init, &controls, None, &mut |_| {})
            .map_err(Box::new)?;
        tensor_to_rgb(&generated.image).map_err(Box::new)
    }

    fn has_controlnet(&self) -> bool {
        self.openpose.is_some()
    }

    fn size_multiple(&self) -> u32 {
        self.sd.latent_factor() as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diffusion::schedulers::TimestepSpacing;

    #[test]
    fn every_crop_is_sampled_with_the_sampler_options() {
        let image = RgbImage::new(16, 8);
        let mask = GrayImage::new(16, 8);
        let request = InpaintRequest {
            image: &image,
            mask: &mask,
            control: None,
            control_scale: 1.0,
            prompt: "a face",
            negative_prompt: "blurry",
            denoise: 0.4,
            steps: 6,
            cfg_scale: 5.0,
            seed: 11,
        };
        let options = SamplerOptions {
            eta: Some(0.5),
            timestep_spacing: Some(TimestepSpacing::Trailing),
        };
        let sampler = InpaintSampler {
            scheduler: SchedulerKind::Ddim,
            options,
            deep_cache: None,
        };
        let settings = sampler.generation_settings(&request, 16, 8);
        assert_eq!(settings.options, options);
        assert_eq!(settings.scheduler, SchedulerKind::Ddim);
        assert_eq!(
            (settings.width, settings.height, settings.steps),
            (16, 8, 6)
        );
        assert_eq!(settings.seed, 11);
        let plain = InpaintSampler::plain(SchedulerKind::Euler);
        assert_eq!(
            plain.generation_settings(&request, 16, 8).options,
            SamplerOptions::default()
        );
    }
}
