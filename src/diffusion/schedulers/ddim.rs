//! DDIM (Song et al. 2020), diffusers' `DDIMScheduler`.

use candle_core::Tensor;

use super::config::{PredictionType, SchedulerConfig, TimestepSpacing};
use super::schedule::{np_arange, np_linspace, NoiseSchedule, DDPM_BETA_DEFAULTS};
use super::{check_index, strength_begin_index, Scheduler, SchedulerError};
use crate::noise::NoiseSource;

/// Resolved DDIM options (diffusers class defaults for absent keys).
#[derive(Clone, Debug)]
pub struct DdimOptions {
    pub prediction_type: PredictionType,
    pub timestep_spacing: TimestepSpacing,
    pub steps_offset: usize,
    pub set_alpha_to_one: bool,
    pub clip_sample: Option<f32>,
    /// 0 = deterministic DDIM, 1 = DDPM-like (pipeline argument `eta`).
    pub eta: f64,
}

pub struct DdimScheduler {
    options: DdimOptions,
    schedule: NoiseSchedule,
    final_alpha_cumprod: f32,
    num_inference_steps: usize,
    /// Whole schedule (integer training timesteps) and where the run starts.
    all_timesteps: Vec<i64>,
    timesteps: Vec<f64>,
    begin: usize,
}

impl DdimScheduler {
    pub fn new(config: &SchedulerConfig) -> Result<Self, SchedulerError> {
        config.reject_unsupported(&["thresholding"])?;
        let options = DdimOptions {
            prediction_type: config.prediction_type()?,
            timestep_spacing: config.timestep_spacing_or(TimestepSpacing::Leading)?,
            steps_offset: config.steps_offset.unwrap_or(0),
            set_alpha_to_one: config.set_alpha_to_one.unwrap_or(true),
            clip_sample: config
                .clip_sample
                .unwrap_or(true)
                .then(|| config.clip_sample_range.unwrap_or(1.0) as f32),
            eta: 0.0,
        };
        let schedule = NoiseSchedule::from_config(config, DDPM_BETA_DEFAULTS)?;
        let final_alpha_cumprod = schedule.final_alpha_cumprod(options.set_alpha_to_one);
        Ok(Self {
            options,
            schedule,
            final_alpha_cumprod,
            num_inference_steps: 0,
            all_timesteps: Vec::new(),
            timesteps: Vec::new(),
            begin: 0,
        })
    }

    /// Sets DDIM's stochasticity `eta` (diffusers pipeline argument, default 0).
    pub fn with_eta(mut self, eta: f64) -> Self {
        self.options.eta = eta;
        self
    }

    pub fn options(&self) -> &DdimOptions {
        &self.options
    }

    fn alpha_cumprod_at(&self, t: i64) -> f32 {
        if t >= 0 {
            self.schedule.alphas_cumprod[t as usize]
        } else {
            self.final_alpha_cumprod
        }
    }
}

/// DDIM-family integer timesteps for `steps` inference steps (DDIM and LCM-free spacing).
pub(crate) fn ddim_timesteps(
    spacing: TimestepSpacing,
    num_train: usize,
    steps: usize,
    steps_offset: usize,
) -> Vec<i64> {
    match spacing {
        TimestepSpacing::Linspace => np_linspace(0.0, (num_train - 1) as f64, steps)
            .into_iter()
            .rev()
            .map(|t| t.round_ties_even() as i64)
            .collect(),
        TimestepSpacing::Leading => {
            let ratio = (num_train / steps) as i64;
            (0..steps as i64)
                .rev()
                .map(|i| i * ratio + steps_offset as i64)
                .collect()
        }
        TimestepSpacing::Trailing => {
            let ratio = num_train as f64 / steps as f64;
            np_arange(num_train as f64, 0.0, -ratio)
                .into_iter()
                .map(|t| t.round_ties_even() as i64 - 1)
                .collect()
        }
    }
}

impl Scheduler for DdimScheduler {
    fn set_timesteps(&mut self, steps: usize, strength: f64) -> Result<(), SchedulerError> {
        let num_train = self.schedule.num_train_timesteps();
        if steps == 0 || steps > num_train {
            return Err(SchedulerError::Invalid(format!(
                "DDIM needs 1..={num_train} steps, got {steps}"
            )));
        }
        let all = ddim_timesteps(
            self.options.timestep_spacing,
            num_train,
            steps,
            self.options.steps_offset,
        );
        if let Some(&t) = all.iter().find(|&&t| t < 0 || t as usize >= num_train) {
            return Err(SchedulerError::Invalid(format!(
                "timestep {t} outside the {num_train} training timesteps (steps_offset too large?)"
            )));
        }
        self.begin = strength_begin_index(steps, strength)?.min(all.len());
        self.num_inference_steps = steps;
        self.timesteps = all[self.begin..].iter().map(|&t| t as f64).collect();
        self.all_timesteps = all;
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        i: usize,
        sample: &Tensor,
        noise: &mut dyn NoiseSource,
    ) -> Result<Tensor, SchedulerError> {
        check_index(i, self.timesteps.len())?;
        let t = self.all_timesteps[self.begin + i];
        let prev_t = t - (self.schedule.num_train_timesteps() / self.num_inference_steps) as i64;
        let alpha_prod_t = self.alpha_cumprod_at(t);
        let alpha_prod_prev = self.alpha_cumprod_at(prev_t);
        let beta_prod_t = 1.0 - alpha_prod_t;
        let (sqrt_a, sqrt_b) = (alpha_prod_t.sqrt() as f64, beta_prod_t.sqrt() as f64);

        let (mut pred_original, pred_epsilon) =
            self.options
                .prediction_type
                .x0_and_epsilon(model_output, sample, sqrt_a, sqrt_b)?;
        if let Some(range) = self.options.clip_sample {
            pred_original = pred_original.clamp(-range, range)?;
        }

        let beta_prod_prev = 1.0 - alpha_prod_prev;
        let variance = (beta_prod_prev / beta_prod_t) * (1.0 - alpha_prod_t / alpha_prod_prev);
        let std_dev = self.options.eta as f32 * variance.sqrt();
        let direction = (pred_epsilon * (1.0 - alpha_prod_prev - std_dev * std_dev).sqrt() as f64)?;
        let mut prev = ((pred_original * alpha_prod_prev.sqrt() as f64)? + direction)?;
        if self.options.eta > 0.0 {
            let variance_noise = noise.randn(model_output.dims(), model_output.device())?;
            prev = (prev + (variance_noise * std_dev as f64)?)?;
        }
        Ok(prev)
    }

    fn add_noise(
        &self,
        original: &Tensor,
        noise: &Tensor,
        i: usize,
    ) -> Result<Tensor, SchedulerError> {
        check_index(i, self.timesteps.len())?;
        let t = self.all_timesteps[self.begin + i] as usize;
        Ok(self.schedule.add_noise(original, noise, t)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sd15_leading_timesteps() {
        assert_eq!(
            ddim_timesteps(TimestepSpacing::Leading, 1000, 4, 1),
            vec![751, 501, 251, 1]
        );
        assert_eq!(
            ddim_timesteps(TimestepSpacing::Trailing, 1000, 4, 0),
            vec![999, 749, 499, 249]
        );
        assert_eq!(
            ddim_timesteps(TimestepSpacing::Linspace, 1000, 4, 0),
            vec![999, 666, 333, 0]
        );
    }

    #[test]
    fn img2img_starts_later() {
        let mut s = DdimScheduler::new(&SchedulerConfig::sd15()).unwrap();
        s.set_timesteps(10, 0.5).unwrap();
        assert_eq!(s.timesteps(), &[401.0, 301.0, 201.0, 101.0, 1.0]);
    }
}
