//! The start of every denoising run, as diffusers' `prepare_latents` and `get_timesteps`
//! make it: the latent shape from the image size, the schedule shortened by `strength`, and
//! the initial latents (noise × the scheduler's initial sigma, or encoded image latents noised
//! to the first step of the shortened schedule). The images, the videos and the renderer all
//! start here, so the generator is consumed in one order everywhere: VAE posterior samples
//! (the caller's, before), then this noise.

use candle_core::{DType, Device, Tensor};

use crate::diffusion::schedulers::{
    self, SamplerOptions, Scheduler, SchedulerConfig, SchedulerError,
};
use crate::noise::{NoiseError, TorchGenerator};
use crate::preset::SchedulerKind;

/// Errors of preparing the initial latents.
#[derive(Debug, thiserror::Error)]
pub enum LatentsError {
    #[error("image size {width}x{height} must be a positive multiple of {factor}")]
    Size {
        width: usize,
        height: usize,
        factor: usize,
    },
    #[error(transparent)]
    Scheduler(#[from] SchedulerError),
    #[error(transparent)]
    Noise(#[from] NoiseError),
    #[error("initial latents: {0}")]
    Tensor(#[from] candle_core::Error),
}

/// Latent `(1, channels, height / factor, width / factor)` of one image; the size must be a
/// positive multiple of the VAE's `factor`.
pub fn image_latent_shape(
    width: usize,
    height: usize,
    channels: usize,
    factor: usize,
) -> Result<[usize; 4], LatentsError> {
    let (h, w) = latent_size(width, height, factor)?;
    Ok([1, channels, h, w])
}

/// Latent `(height / factor, width / factor)`, checked as [`image_latent_shape`].
pub fn latent_size(
    width: usize,
    height: usize,
    factor: usize,
) -> Result<(usize, usize), LatentsError> {
    if factor == 0 || width == 0 || height == 0 || width % factor != 0 || height % factor != 0 {
        return Err(LatentsError::Size {
            width,
            height,
            factor,
        });
    }
    Ok((height / factor, width / factor))
}

/// A scheduler of `kind` on the model's scheduler `config` with the preset's sampler
/// `options` ([`schedulers::build_with`]), its `steps`-step schedule shortened by `strength`
/// (1 = all). Every pipeline (frame renderer, `still`, detailer, AnimateDiff) builds its
/// scheduler here.
pub fn strength_scheduler(
    kind: SchedulerKind,
    config: &SchedulerConfig,
    options: &SamplerOptions,
    steps: usize,
    strength: f64,
) -> Result<Box<dyn Scheduler>, SchedulerError> {
    let mut scheduler = schedulers::build_with(kind, config, options)?;
    scheduler.set_timesteps(steps, strength)?;
    Ok(scheduler)
}

/// Initial latents and the noise that made them (inpainting re-noises the known region with
/// the same noise).
#[derive(Debug, Clone)]
pub struct InitialLatents {
    pub latents: Tensor,
    pub noise: Tensor,
}

/// Draws noise of `noise_shape` from `generator` on `device`, then: without `image_latents`
/// (txt2img, or full strength) `noise × init_noise_sigma`, else `image_latents` noised to the
/// first step of `scheduler`'s (already shortened) schedule. `image_latents` has the noise's
/// shape.
pub fn initial_latents(
    scheduler: &dyn Scheduler,
    generator: &mut TorchGenerator,
    noise_shape: &[usize],
    device: &Device,
    image_latents: Option<&Tensor>,
) -> Result<InitialLatents, LatentsError> {
    let noise = generator.randn(noise_shape, DType::F32, device)?;
    let latents = noised_start(scheduler, &noise, image_latents)?;
    Ok(InitialLatents { latents, noise })
}

/// The combination step of [`initial_latents`] for noise already drawn.
pub fn noised_start(
    scheduler: &dyn Scheduler,
    noise: &Tensor,
    image_latents: Option<&Tensor>,
) -> Result<Tensor, LatentsError> {
    Ok(match image_latents {
        None => (noise * scheduler.init_noise_sigma())?,
        Some(image_latents) => scheduler.add_noise(image_latents, noise, 0)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latent_shape_divides_by_the_vae_factor() {
        assert_eq!(image_latent_shape(512, 256, 4, 8).unwrap(), [1, 4, 32, 64]);
        assert!(matches!(
            image_latent_shape(500, 256, 4, 8),
            Err(LatentsError::Size { width: 500, .. })
        ));
        assert!(image_latent_shape(0, 256, 4, 8).is_err());
        assert!(image_latent_shape(64, 64, 4, 0).is_err());
    }

    #[test]
    fn strength_shortens_the_schedule_as_get_timesteps() {
        let config = SchedulerConfig::sd15();
        let full = strength_scheduler(
            SchedulerKind::Ddim,
            &config,
            &SamplerOptions::default(),
            20,
            1.0,
        )
        .unwrap();
        let part = strength_scheduler(
            SchedulerKind::Ddim,
            &config,
            &SamplerOptions::default(),
            20,
            0.5,
        )
        .unwrap();
        assert_eq!(full.timesteps().len(), 20);
        assert_eq!(part.timesteps().len(), 10);
        assert_eq!(part.timesteps(), &full.timesteps()[10..]);
        assert_eq!(schedulers::strength_begin_index(20, 0.5).unwrap(), 10);
        assert!(strength_scheduler(
            SchedulerKind::Ddim,
            &config,
            &SamplerOptions::default(),
            20,
            0.01
        )
        .is_err());
    }

    #[test]
    fn txt2img_latents_are_noise_times_sigma() {
        let config = SchedulerConfig::sd15();
        let scheduler = strength_scheduler(
            SchedulerKind::Euler,
            &config,
            &SamplerOptions::default(),
            10,
            1.0,
        )
        .unwrap();
        let sigma = scheduler.init_noise_sigma();
        assert!(sigma > 1.0);
        let shape = [1, 4, 2, 3];
        let start = initial_latents(
            scheduler.as_ref(),
            &mut TorchGenerator::new(7),
            &shape,
            &Device::Cpu,
            None,
        )
        .unwrap();
        let expected = TorchGenerator::new(7)
            .randn(&shape, DType::F32, &Device::Cpu)
            .unwrap();
        let noise: Vec<f32> = start.noise.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(
            noise,
            expected.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
        let latents: Vec<f32> = start.latents.flatten_all().unwrap().to_vec1().unwrap();
        let scaled: Vec<f32> = (expected * sigma)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(latents, scaled);
        assert_eq!(start.latents.dims(), &shape);
    }

    #[test]
    fn img2img_latents_are_noised_image_latents() {
        let config = SchedulerConfig::sd15();
        let scheduler = strength_scheduler(
            SchedulerKind::Ddim,
            &config,
            &SamplerOptions::default(),
            10,
            0.6,
        )
        .unwrap();
        let image = Tensor::full(0.5f32, (1, 4, 2, 2), &Device::Cpu).unwrap();
        let start = initial_latents(
            scheduler.as_ref(),
            &mut TorchGenerator::new(3),
            &[1, 4, 2, 2],
            &Device::Cpu,
            Some(&image),
        )
        .unwrap();
        let expected = scheduler.add_noise(&image, &start.noise, 0).unwrap();
        let diff = (start.latents - expected)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!(diff, 0.0);
    }
}
