//! Euler ancestral, diffusers' `EulerAncestralDiscreteScheduler` (A1111's "Euler a").
//!
//! Each step goes down to `sigma_down` deterministically and adds fresh noise of std
//! `sigma_up`, drawn from the run's generator (so the seed fixes every step's noise).

use candle_core::Tensor;

use super::config::SchedulerConfig;
use super::euler::{predict_original, EulerScheduler, SigmaOptions};
use super::{Scheduler, SchedulerError};
use crate::noise::NoiseSource;

/// Euler's sigma schedule with an ancestral step: everything but `step` is Euler's.
pub struct EulerAncestralScheduler {
    euler: EulerScheduler,
}

impl EulerAncestralScheduler {
    pub fn new(config: &SchedulerConfig) -> Result<Self, SchedulerError> {
        let options = SigmaOptions::for_euler_ancestral(config)?;
        Ok(Self {
            euler: EulerScheduler::with_options(config, options)?,
        })
    }

    pub fn sigmas(&self) -> &[f32] {
        self.euler.sigmas()
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
        self.euler.set_timesteps(steps, strength)
    }

    fn timesteps(&self) -> &[f64] {
        self.euler.timesteps()
    }

    fn init_noise_sigma(&self) -> f64 {
        self.euler.init_noise_sigma()
    }

    fn scale_model_input(&self, sample: &Tensor, i: usize) -> Result<Tensor, SchedulerError> {
        self.euler.scale_model_input(sample, i)
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        i: usize,
        sample: &Tensor,
        noise: &mut dyn NoiseSource,
    ) -> Result<Tensor, SchedulerError> {
        let (sigma, sigma_to) = self.euler.sigma_pair(i)?;
        let pred_original =
            predict_original(self.euler.prediction_type(), model_output, sample, sigma)?;
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
        self.euler.add_noise(original, noise, i)
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
