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

/// [`RegionInpainter`] with Stable Diffusion: the models are shared (`Arc`) with the
/// renderer that loaded them.
pub struct StableDiffusionInpainter {
    sd: Arc<StableDiffusion>,
    openpose: Option<Arc<ControlNetModel>>,
    scheduler: SchedulerKind,
    deep_cache: Option<DeepCacheSettings>,
}

impl StableDiffusionInpainter {
    pub fn new(
        sd: Arc<StableDiffusion>,
        openpose: Option<Arc<ControlNetModel>>,
        scheduler: SchedulerKind,
    ) -> Self {
        StableDiffusionInpainter {
            sd,
            openpose,
            scheduler,
            deep_cache: None,
        }
    }

    /// Reuses the UNet's deep features between full passes (the preset's `deep_cache:`).
    pub fn with_deep_cache(mut self, deep_cache: Option<DeepCacheSettings>) -> Self {
        self.deep_cache = deep_cache;
        self
    }

    fn device(&self) -> &Device {
        self.sd.device()
    }
}

impl RegionInpainter for StableDiffusionInpainter {
    fn inpaint(&mut self, request: &InpaintRequest) -> Result<RgbImage, Box<ImagePipelineError>> {
        let (width, height) = request.image.dimensions();
        let settings = GenerationSettings {
            prompt: request.prompt.to_string(),
            negative_prompt: request.negative_prompt.to_string(),
            width: width as usize,
            height: height as usize,
            steps: request.steps as usize,
            guidance_scale: request.cfg_scale as f64,
            scheduler: self.scheduler,
            seed: request.seed,
            deep_cache: self.deep_cache,
        };
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
