//! Diffusion schedulers (samplers), one file each, matching diffusers step for step.
//!
//! Every scheduler works on a fixed inference schedule made by
//! [`Scheduler::set_timesteps`]. Steps are addressed by their index `i` into
//! [`Scheduler::timesteps`] (which, for img2img, already starts part-way down the schedule),
//! and must be stepped in order because multistep solvers keep history.

pub mod config;
pub mod ddim;
pub mod dpmpp_2m;
pub mod euler;
pub mod euler_ancestral;
pub mod lcm;
pub mod schedule;
pub mod tcd;

use std::path::Path;

use candle_core::Tensor;

pub use config::{PredictionType, SchedulerConfig, TimestepSpacing};

use crate::noise::{NoiseError, NoiseSource};
use crate::preset::SchedulerKind;

/// Errors from building or running a scheduler.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("scheduler config {origin}: {message}")]
    Config { origin: String, message: String },
    #[error("scheduler option {field} = {value} is not supported (supported: {supported})")]
    Unsupported {
        field: String,
        value: String,
        supported: String,
    },
    #[error("scheduler: {0}")]
    Invalid(String),
    #[error("scheduler step {index} out of range: the schedule has {len} steps")]
    StepOutOfRange { index: usize, len: usize },
    #[error("scheduler tensor op: {0}")]
    Tensor(#[from] candle_core::Error),
    #[error(transparent)]
    Noise(#[from] NoiseError),
}

/// A diffusers-compatible scheduler.
pub trait Scheduler: Send {
    /// Builds the schedule for `num_inference_steps`. `strength` < 1 starts part-way down it
    /// (img2img / inpaint denoise strength), exactly as diffusers' img2img pipelines do:
    /// the first `steps - floor(steps * strength)` steps are skipped.
    fn set_timesteps(
        &mut self,
        num_inference_steps: usize,
        strength: f64,
    ) -> Result<(), SchedulerError>;

    /// The model timesteps still to run, one per step (Euler-family schedules can be
    /// fractional; the UNet embeds them as float32).
    fn timesteps(&self) -> &[f64];

    /// Standard deviation of the initial noise for txt2img (`latents = noise * sigma`):
    /// 1 for the DDPM-parameterised samplers (DDIM, DPM++, LCM).
    fn init_noise_sigma(&self) -> f64 {
        1.0
    }

    /// Scales the denoiser input for step `i`: the identity unless the sampler works in
    /// sigma space (Euler).
    fn scale_model_input(&self, sample: &Tensor, i: usize) -> Result<Tensor, SchedulerError> {
        check_index(i, self.timesteps().len())?;
        Ok(sample.clone())
    }

    /// Takes step `i`: from `sample` and the (guided) model output to the next sample.
    /// Ancestral/stochastic schedulers draw their noise from `noise`.
    fn step(
        &mut self,
        model_output: &Tensor,
        i: usize,
        sample: &Tensor,
        noise: &mut dyn NoiseSource,
    ) -> Result<Tensor, SchedulerError>;

    /// Noises a clean sample to the noise level of step `i` (img2img start, inpaint blending).
    fn add_noise(
        &self,
        original: &Tensor,
        noise: &Tensor,
        i: usize,
    ) -> Result<Tensor, SchedulerError>;
}

/// What a preset's `sampler` section sets on top of the model's scheduler config.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SamplerOptions {
    /// diffusers' `step(eta=...)`: TCD's gamma (absent: 0.3) and DDIM's eta (absent: 0).
    /// Other schedulers take no eta.
    pub eta: Option<f64>,
    /// Replaces the config's `timestep_spacing`. LCM and TCD ignore spacing (as in
    /// diffusers: their timesteps come from `original_inference_steps`).
    pub timestep_spacing: Option<TimestepSpacing>,
}

impl SamplerOptions {
    /// `config` with `timestep_spacing` replaced, as `from_config(config,
    /// timestep_spacing=...)` does in diffusers.
    pub fn apply(&self, config: &SchedulerConfig) -> SchedulerConfig {
        let mut config = config.clone();
        if let Some(spacing) = self.timestep_spacing {
            config.timestep_spacing = Some(spacing.as_str().to_string());
        }
        config
    }
}

/// Builds a scheduler of `kind` from a diffusers scheduler config, with diffusers' default
/// step arguments (see [`build_with`]).
pub fn build(
    kind: SchedulerKind,
    config: &SchedulerConfig,
) -> Result<Box<dyn Scheduler>, SchedulerError> {
    build_with(kind, config, &SamplerOptions::default())
}

/// Builds a scheduler of `kind` from a diffusers scheduler config and the preset's sampler
/// `options`. An `eta` for a scheduler without one is refused rather than ignored.
pub fn build_with(
    kind: SchedulerKind,
    config: &SchedulerConfig,
    options: &SamplerOptions,
) -> Result<Box<dyn Scheduler>, SchedulerError> {
    if let (Some(eta), false) = (options.eta, kind.takes_eta()) {
        return Err(SchedulerError::Unsupported {
            field: format!("eta of {kind}"),
            value: eta.to_string(),
            supported: "eta with ddim and tcd only".into(),
        });
    }
    let config = &options.apply(config);
    Ok(match kind {
        SchedulerKind::Ddim => {
            Box::new(ddim::DdimScheduler::new(config)?.with_eta(options.eta.unwrap_or(0.0)))
        }
        SchedulerKind::Euler => Box::new(euler::EulerScheduler::new(config)?),
        SchedulerKind::EulerAncestral => {
            Box::new(euler_ancestral::EulerAncestralScheduler::new(config)?)
        }
        SchedulerKind::DpmPp2M => Box::new(dpmpp_2m::DpmPp2MScheduler::new(config, false)?),
        SchedulerKind::DpmPp2MKarras => Box::new(dpmpp_2m::DpmPp2MScheduler::new(config, true)?),
        SchedulerKind::Lcm => Box::new(lcm::LcmScheduler::new(config)?),
        SchedulerKind::Tcd => Box::new(
            tcd::TcdScheduler::new(config)?.with_eta(options.eta.unwrap_or(tcd::DEFAULT_ETA))?,
        ),
    })
}

/// Reads `<model>/scheduler/scheduler_config.json` when present, else SD1.5's config.
pub fn load_config(model_dir: &Path) -> Result<SchedulerConfig, SchedulerError> {
    let path = model_dir.join("scheduler").join("scheduler_config.json");
    if path.is_file() {
        SchedulerConfig::from_file(&path)
    } else {
        Ok(SchedulerConfig::sd15())
    }
}

/// Index of the first step run at denoise `strength` (diffusers' `get_timesteps`).
pub fn strength_begin_index(
    num_inference_steps: usize,
    strength: f64,
) -> Result<usize, SchedulerError> {
    if !(0.0..=1.0).contains(&strength) {
        return Err(SchedulerError::Invalid(format!(
            "strength must be in [0, 1], got {strength}"
        )));
    }
    let init = ((num_inference_steps as f64 * strength) as usize).min(num_inference_steps);
    if init == 0 {
        return Err(SchedulerError::Invalid(format!(
            "strength {strength} with {num_inference_steps} steps leaves no denoising step"
        )));
    }
    Ok(num_inference_steps - init)
}

/// Checks a step index against the remaining schedule.
pub(crate) fn check_index(i: usize, len: usize) -> Result<(), SchedulerError> {
    if i < len {
        Ok(())
    } else {
        Err(SchedulerError::StepOutOfRange { index: i, len })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strength_skips_leading_steps_like_diffusers() {
        assert_eq!(strength_begin_index(20, 1.0).unwrap(), 0);
        assert_eq!(strength_begin_index(20, 0.75).unwrap(), 5);
        // int(10 * 0.55) = 5 -> start at 5.
        assert_eq!(strength_begin_index(10, 0.55).unwrap(), 5);
        assert!(strength_begin_index(4, 0.2).is_err());
        assert!(strength_begin_index(4, 1.5).is_err());
    }
}
