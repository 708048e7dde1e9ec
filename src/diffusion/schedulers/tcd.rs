//! Trajectory Consistency Distillation sampling (Zheng et al. 2024), diffusers'
//! `TCDScheduler` (for TCD-distilled UNets and LoRAs such as TCD-SD15 and Hyper-SD).
//!
//! TCD samples LCM's timestep schedule with "strategic stochastic sampling": each step
//! predicts the clean sample, noises it deterministically to the intermediate timestep
//! `s = floor((1 - eta) * t_prev)` and, except on the last step, re-noises from `s` to
//! `t_prev` with fresh noise from the generator. `eta` (the paper's gamma) = 0 is
//! deterministic; 1 re-noises all the way (LCM-like).

use candle_core::Tensor;

use super::config::{BetaSchedule, PredictionType, SchedulerConfig};
use super::lcm::DistilledTimesteps;
use super::schedule::{BetaDefaults, NoiseSchedule};
use super::{Scheduler, SchedulerError};
use crate::noise::NoiseSource;

/// `TCDScheduler`'s beta defaults (the same as LCM's).
const TCD_BETA_DEFAULTS: BetaDefaults = BetaDefaults {
    beta_start: 0.00085,
    beta_end: 0.012,
    beta_schedule: BetaSchedule::ScaledLinear,
};

/// diffusers' default of `TCDScheduler.step(eta=...)`.
pub const DEFAULT_ETA: f64 = 0.3;

pub struct TcdScheduler {
    prediction_type: PredictionType,
    schedule: NoiseSchedule,
    final_alpha_cumprod: f32,
    eta: f64,
    timesteps: DistilledTimesteps,
}

impl TcdScheduler {
    /// A TCD scheduler with diffusers' default `eta` ([`DEFAULT_ETA`]).
    pub fn new(config: &SchedulerConfig) -> Result<Self, SchedulerError> {
        // `TCDScheduler` keeps clip_sample in its config but never clips in `step`.
        config.reject_unsupported(&["thresholding"])?;
        let schedule = NoiseSchedule::from_config(config, TCD_BETA_DEFAULTS)?;
        let final_alpha_cumprod =
            schedule.final_alpha_cumprod(config.set_alpha_to_one.unwrap_or(true));
        let timesteps = DistilledTimesteps::new(config, &schedule)?;
        Ok(Self {
            prediction_type: config.prediction_type()?,
            schedule,
            final_alpha_cumprod,
            eta: DEFAULT_ETA,
            timesteps,
        })
    }

    /// Sets `eta` (diffusers' `step(eta=...)`, the paper's gamma), which must be in [0, 1].
    pub fn with_eta(mut self, eta: f64) -> Result<Self, SchedulerError> {
        if !(0.0..=1.0).contains(&eta) {
            return Err(SchedulerError::Invalid(format!(
                "TCD's eta (gamma) must be between 0 and 1, got {eta}"
            )));
        }
        self.eta = eta;
        Ok(self)
    }

    pub fn eta(&self) -> f64 {
        self.eta
    }

    fn alpha_cumprod_at(&self, t: i64) -> f32 {
        if t >= 0 {
            self.schedule.alphas_cumprod[t as usize]
        } else {
            self.final_alpha_cumprod
        }
    }
}

/// TCD's intermediate timestep `floor((1 - eta) * t_prev)`, computed as torch does it: the
/// integer timestep times the Python float, in float32.
pub(crate) fn intermediate_timestep(eta: f64, prev_t: i64) -> i64 {
    ((1.0 - eta) as f32 * prev_t as f32).floor() as i64
}

impl Scheduler for TcdScheduler {
    fn set_timesteps(&mut self, steps: usize, strength: f64) -> Result<(), SchedulerError> {
        // The same pick from the distillation schedule as LCM (`TCDScheduler.set_timesteps`
        // with strength 1; img2img shortens it afterwards, as diffusers' pipelines do).
        self.timesteps.set("TCD", steps, strength)
    }

    fn timesteps(&self) -> &[f64] {
        self.timesteps.run()
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        i: usize,
        sample: &Tensor,
        noise: &mut dyn NoiseSource,
    ) -> Result<Tensor, SchedulerError> {
        let (t, next) = self.timesteps.at(i)?;
        let last_step = next.is_none();
        // diffusers steps to timestep 0 (not to `final_alpha_cumprod`) after the last one.
        let prev_t = next.unwrap_or(0);
        let s = intermediate_timestep(self.eta, prev_t);
        let alpha_prod_t = self.alpha_cumprod_at(t);
        let beta_prod_t = 1.0 - alpha_prod_t;
        let alpha_prod_prev = self.alpha_cumprod_at(prev_t);
        let alpha_prod_s = self.alpha_cumprod_at(s);
        let beta_prod_s = 1.0 - alpha_prod_s;
        let (sqrt_a, sqrt_b) = (alpha_prod_t.sqrt() as f64, beta_prod_t.sqrt() as f64);

        let (pred_original, pred_epsilon) =
            self.prediction_type
                .x0_and_epsilon(model_output, sample, sqrt_a, sqrt_b)?;
        let pred_noised = ((pred_original * alpha_prod_s.sqrt() as f64)?
            + (pred_epsilon * beta_prod_s.sqrt() as f64)?)?;
        if self.eta <= 0.0 || last_step {
            // No noise on the last step (so none for one-step sampling) nor at eta 0.
            return Ok(pred_noised);
        }
        let fresh = noise.randn(model_output.dims(), model_output.device())?;
        let ratio = alpha_prod_prev / alpha_prod_s;
        Ok(((pred_noised * ratio.sqrt() as f64)? + (fresh * (1.0 - ratio).sqrt() as f64)?)?)
    }

    fn add_noise(
        &self,
        original: &Tensor,
        noise: &Tensor,
        i: usize,
    ) -> Result<Tensor, SchedulerError> {
        let t = self.timesteps.at(i)?.0 as usize;
        Ok(self.schedule.add_noise(original, noise, t)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn four_step_schedule_is_lcms() {
        let mut s = TcdScheduler::new(&SchedulerConfig::sd15()).unwrap();
        s.set_timesteps(4, 1.0).unwrap();
        assert_eq!(s.timesteps(), &[999.0, 759.0, 499.0, 259.0]);
        s.set_timesteps(4, 0.5).unwrap();
        assert_eq!(s.timesteps(), &[499.0, 259.0]);
    }

    #[test]
    fn intermediate_timestep_follows_float32_floor() {
        assert_eq!(intermediate_timestep(0.0, 759), 759);
        assert_eq!(intermediate_timestep(1.0, 759), 0);
        // 0.7f32 * 500 rounds to exactly 350 in float32.
        assert_eq!(intermediate_timestep(0.3, 500), 350);
        assert_eq!(intermediate_timestep(0.3, 259), 181);
        assert_eq!(intermediate_timestep(0.3, 0), 0);
    }

    #[test]
    fn eta_outside_the_unit_interval_is_refused() {
        let s = || TcdScheduler::new(&SchedulerConfig::sd15()).unwrap();
        assert!(s().with_eta(1.5).is_err());
        assert!(s().with_eta(-0.1).is_err());
        assert_eq!(s().with_eta(1.0).unwrap().eta(), 1.0);
        assert_eq!(s().eta(), DEFAULT_ETA);
    }
}
