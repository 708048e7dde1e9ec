//! Euler ancestral, diffusers' `EulerAncestralDiscreteScheduler` (A1111's "Euler a").
//!
//! Each step goes down to `sigma_down` deterministically and adds fresh noise of std
//! `sigma_up`, drawn from the run's generator (so the seed fixes every step's noise).

use candle_core::Tensor;

use super::config::{PredictionType, SchedulerConfig};
use super::euler::{predict_original, scale_by_sigma, SigmaOptions, SigmaSchedule};
use super::schedule::{NoiseSchedule, DDPM_BETA_DEFAULTS};
use super::{check_index, strength_begin_index, Scheduler, SchedulerError};
use crate::noise::NoiseSource;

pub struct EulerAncestralScheduler {
    prediction_type: PredictionType,
    options: SigmaOptions,
    schedule: NoiseSchedule,
    sigmas: SigmaSchedule,
    begin: usize,
    timesteps: Vec<f64>,
    init_noise_sigma: f64,
}

impl EulerAncestralScheduler {
    pub fn new(config: &SchedulerConfig) -> Result<Self, SchedulerError> {
        let options = SigmaOptions::for_euler_ancestral(config)?;
        let mut schedule = NoiseSchedule::from_config(config, DDPM_BETA_DEFAULTS)?;
        if config.rescale_betas_zero_snr == Some(true) {
            let last = schedule.alphas_cumprod.len() - 1;
            schedule.alphas_cumprod[last] = 2f32.powi(-24);
        }
        let mut sigmas = schedule.sigmas();
        sigmas.push(0.0);
        let init_noise_sigma = options.init_noise_sigma(&sigmas);
        Ok(Self {
            prediction_type: config.prediction_type()?,
            options,
            schedule,
            sigmas: SigmaSchedule {
                timesteps: Vec::new(),
                sigmas,
            },
            begin: 0,
            timesteps: Vec::new(),
            init_noise_sigma,
        })
    }

    pub fn sigmas(&self) -> &[f32] {
        &self.sigmas.sigmas
    }
}

/// Splits the move from `sigma_from` to `sigma_to` into a deterministic part down to
/// `sigma_down` and fresh noise of std `sigma_up` (k-diffusion's `get_ancestral_step`, eta 1).
pub(crate) fn ancestral_sigmas(sigma_from: f32, sigma_to: f32) -> (f32, f32) {
    let (from2, to2) = (sigma_from * sigma_from, sigma_to * sigma_to);
    let sigma_up = (to2 * (from2 - to2) / from2).sqrt();
    let sigma_down = (to2 - sigma_up * sigma_up).sqrt();
    (sigma_down, sigma_up)
}

impl Scheduler for EulerAncestralScheduler {
    fn set_timesteps(&mut self, steps: usize, strength: f64) -> Result<(), SchedulerError> {
        if steps == 0 || steps > self.schedule.num_train_timesteps() {
            return Err(SchedulerError::Invalid(format!(
                "Euler ancestral needs 1..={} steps, got {steps}",
                self.schedule.num_train_timesteps()
            )));
        }
        self.sigmas = self.options.build(&self.schedule, steps);
        self.init_noise_sigma = self.options.init_noise_sigma(&self.sigmas.sigmas);
        self.begin = strength_begin_index(steps, strength)?;
        self.timesteps = self.sigmas.timesteps[self.begin..].to_vec();
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn init_noise_sigma(&self) -> f64 {
        self.init_noise_sigma
    }

    fn scale_model_input(&self, sample: &Tensor, i: usize) -> Result<Tensor, SchedulerError> {
        check_index(i, self.timesteps.len())?;
        scale_by_sigma(sample, self.sigmas.sigmas[self.begin + i])
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        i: usize,
        sample: &Tensor,
        noise: &mut dyn NoiseSource,
    ) -> Result<Tensor, SchedulerError> {
        check_index(i, self.timesteps.len())?;
        let sigma = self.sigmas.sigmas[self.begin + i];
        let sigma_to = self.sigmas.sigmas[self.begin + i + 1];
        let pred_original = predict_original(self.prediction_type, model_output, sample, sigma)?;
        let (sigma_down, sigma_up) = ancestral_sigmas(sigma, sigma_to);
        let derivative = ((sample - pred_original)? / sigma as f64)?;
        let prev = (sample + (derivative * (sigma_down - sigma) as f64)?)?;
        let fresh = noise.randn(model_output.dims(), model_output.device())?;
        Ok((prev + (fresh * sigma_up as f64)?)?)
    }

    fn add_noise(
        &self,
        original: &Tensor,
        noise: &Tensor,
        i: usize,
    ) -> Result<Tensor, SchedulerError> {
        check_index(i, self.timesteps.len())?;
        Ok((original + (noise * self.sigmas.sigmas[self.begin + i] as f64)?)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ancestral_split_preserves_variance() {
        let (down, up) = ancestral_sigmas(3.0, 1.5);
        assert!((down * down + up * up - 1.5 * 1.5).abs() < 1e-5);
        assert_eq!(ancestral_sigmas(2.0, 0.0), (0.0, 0.0));
    }
}
