//! Latent Consistency Model sampling (Luo et al. 2023), diffusers' `LCMScheduler`
//! (for LCM-distilled UNets and LCM-LoRA).
//!
//! Each step predicts the clean sample through the consistency boundary condition and, except
//! on the last step, re-noises it to the next timestep with fresh noise from the generator.

use candle_core::Tensor;

use super::config::{BetaSchedule, PredictionType, SchedulerConfig};
use super::schedule::{np_linspace, BetaDefaults, NoiseSchedule};
use super::{check_index, strength_begin_index, Scheduler, SchedulerError};
use crate::noise::NoiseSource;

const LCM_BETA_DEFAULTS: BetaDefaults = BetaDefaults {
    beta_start: 0.00085,
    beta_end: 0.012,
    beta_schedule: BetaSchedule::ScaledLinear,
};

pub struct LcmScheduler {
    prediction_type: PredictionType,
    timestep_scaling: f32,
    clip_sample: Option<f32>,
    schedule: NoiseSchedule,
    final_alpha_cumprod: f32,
    timesteps: DistilledTimesteps,
}

impl LcmScheduler {
    pub fn new(config: &SchedulerConfig) -> Result<Self, SchedulerError> {
        config.reject_unsupported(&["thresholding"])?;
        let schedule = NoiseSchedule::from_config(config, LCM_BETA_DEFAULTS)?;
        let final_alpha_cumprod =
            schedule.final_alpha_cumprod(config.set_alpha_to_one.unwrap_or(true));
        let timesteps = DistilledTimesteps::new(config, &schedule)?;
        Ok(Self {
            prediction_type: config.prediction_type()?,
            timestep_scaling: config.timestep_scaling.unwrap_or(10.0) as f32,
            clip_sample: (config.clip_sample == Some(true))
                .then(|| config.clip_sample_range.unwrap_or(1.0) as f32),
            schedule,
            final_alpha_cumprod,
            timesteps,
        })
    }

    /// The consistency-model boundary scalings (c_skip, c_out) at timestep `t`.
    fn boundary_scalings(&self, t: i64) -> (f32, f32) {
        const SIGMA_DATA: f32 = 0.5;
        let scaled = t as f32 * self.timestep_scaling;
        let c_skip = SIGMA_DATA * SIGMA_DATA / (scaled * scaled + SIGMA_DATA * SIGMA_DATA);
        let c_out = scaled / (scaled * scaled + SIGMA_DATA * SIGMA_DATA).sqrt();
        (c_skip, c_out)
    }
}

/// LCM's timesteps: `steps` evenly spaced picks from the distillation schedule
/// (`original_inference_steps` timesteps k-1, 2k-1, ...), from the noisiest down.
pub(crate) fn lcm_timesteps(num_train: usize, original_steps: usize, steps: usize) -> Vec<i64> {
    let k = (num_train / original_steps) as i64;
    let origin: Vec<i64> = (1..=original_steps as i64)
        .rev()
        .map(|i| i * k - 1)
        .collect();
    np_linspace(0.0, origin.len() as f64, steps + 1)
        .into_iter()
        .take(steps)
        .map(|x| origin[x.floor() as usize])
        .collect()
}

/// The timesteps LCM and TCD run: `steps` picks from the distillation schedule
/// ([`lcm_timesteps`]); img2img starts part-way down them, as diffusers' pipelines slice.
#[derive(Debug)]
pub(crate) struct DistilledTimesteps {
    num_train: usize,
    /// The config's `original_inference_steps`: the distillation schedule's length.
    original_steps: usize,
    all: Vec<i64>,
    begin: usize,
    run: Vec<f64>,
}

impl DistilledTimesteps {
    /// The distillation schedule of `config` (`original_inference_steps`, default 50) over
    /// `schedule`'s training timesteps; nothing set yet.
    pub(crate) fn new(
        config: &SchedulerConfig,
        schedule: &NoiseSchedule,
    ) -> Result<Self, SchedulerError> {
        let num_train = schedule.num_train_timesteps();
        let original_steps = config.original_inference_steps.unwrap_or(50);
        if original_steps == 0 || original_steps > num_train {
            return Err(SchedulerError::Invalid(format!(
                "original_inference_steps {original_steps} must be in 1..={num_train}"
            )));
        }
        Ok(Self {
            num_train,
            original_steps,
            all: Vec::new(),
            begin: 0,
            run: Vec::new(),
        })
    }

    /// Picks `steps` timesteps, starting part-way for `strength` < 1; `name` names the
    /// scheduler in errors.
    pub(crate) fn set(
        &mut self,
        name: &str,
        steps: usize,
        strength: f64,
    ) -> Result<(), SchedulerError> {
        let (num_train, original_steps) = (self.num_train, self.original_steps);
        if steps == 0 || steps > original_steps {
            return Err(SchedulerError::Invalid(format!(
                "{name} needs 1..={original_steps} steps (original_inference_steps), got {steps}"
            )));
        }
        let all = lcm_timesteps(num_train, original_steps, steps);
        self.begin = strength_begin_index(steps, strength)?;
        self.run = all[self.begin..].iter().map(|&t| t as f64).collect();
        self.all = all;
        Ok(())
    }

    /// The timesteps still to run.
    pub(crate) fn run(&self) -> &[f64] {
        &self.run
    }

    /// Step `i`'s timestep and the schedule's next one (`None` after the last step).
    pub(crate) fn at(&self, i: usize) -> Result<(i64, Option<i64>), SchedulerError> {
        check_index(i, self.run.len())?;
        let k = self.begin + i;
        Ok((self.all[k], self.all.get(k + 1).copied()))
    }
}

impl Scheduler for LcmScheduler {
    fn set_timesteps(&mut self, steps: usize, strength: f64) -> Result<(), SchedulerError> {
        self.timesteps.set("LCM", steps, strength)
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
        let prev_t = next.unwrap_or(t);
        let alpha_prod_t = self.schedule.alphas_cumprod[t as usize];
        let alpha_prod_prev = if prev_t >= 0 {
            self.schedule.alphas_cumprod[prev_t as usize]
        } else {
            self.final_alpha_cumprod
        };
        let (sqrt_a, sqrt_b) = (
            alpha_prod_t.sqrt() as f64,
            (1.0 - alpha_prod_t).sqrt() as f64,
        );
        let mut pred_original = match self.prediction_type {
            PredictionType::Epsilon => ((sample - (model_output * sqrt_b)?)? / sqrt_a)?,
            PredictionType::Sample => model_output.clone(),
            PredictionType::VPrediction => ((sample * sqrt_a)? - (model_output * sqrt_b)?)?,
        };
        if let Some(range) = self.clip_sample {
            pred_original = pred_original.clamp(-range, range)?;
        }
        let (c_skip, c_out) = self.boundary_scalings(t);
        let denoised = ((pred_original * c_out as f64)? + (sample * c_skip as f64)?)?;
        if last_step {
            return Ok(denoised);
        }
        let fresh = noise.randn(model_output.dims(), model_output.device())?;
        Ok(((denoised * alpha_prod_prev.sqrt() as f64)?
            + (fresh * (1.0 - alpha_prod_prev).sqrt() as f64)?)?)
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
    fn four_step_schedule() {
        // diffusers LCMScheduler.set_timesteps(4) with the defaults.
        assert_eq!(lcm_timesteps(1000, 50, 4), vec![999, 759, 499, 259]);
    }
}
