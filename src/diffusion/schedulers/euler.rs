//! Euler (Karras et al. 2022, Algorithm 2 without churn), diffusers' `EulerDiscreteScheduler`.
//!
//! Also holds the sigma-schedule construction shared with Euler ancestral.

use candle_core::Tensor;

use super::config::{parse_enum, PredictionType, SchedulerConfig, TimestepSpacing};
use super::schedule::{
    karras_sigmas, log_sigmas, np_arange, np_interp_index, np_linspace, sigma_to_t, NoiseSchedule,
    DDPM_BETA_DEFAULTS,
};
use super::{check_index, strength_begin_index, Scheduler, SchedulerError};
use crate::noise::NoiseSource;

/// Float timesteps of the Euler family (`np.float32` values, before any Karras remapping).
pub(crate) fn euler_timesteps(
    spacing: TimestepSpacing,
    num_train: usize,
    steps: usize,
    steps_offset: usize,
) -> Vec<f64> {
    match spacing {
        TimestepSpacing::Linspace => np_linspace(0.0, (num_train - 1) as f64, steps)
            .into_iter()
            .rev()
            .map(|t| t as f32 as f64)
            .collect(),
        TimestepSpacing::Leading => {
            let ratio = num_train / steps;
            (0..steps)
                .rev()
                .map(|i| (i * ratio) as f32 as f64 + steps_offset as f64)
                .collect()
        }
        TimestepSpacing::Trailing => {
            let ratio = num_train as f64 / steps as f64;
            np_arange(num_train as f64, 0.0, -ratio)
                .into_iter()
                .map(|t| t.round_ties_even() as f32 as f64 - 1.0)
                .collect()
        }
    }
}

/// A sigma schedule: model timesteps plus one more sigma than steps (the final one).
#[derive(Clone, Debug)]
pub(crate) struct SigmaSchedule {
    pub timesteps: Vec<f64>,
    pub sigmas: Vec<f32>,
}

/// What Euler-family schedulers read from the config.
#[derive(Clone, Debug)]
pub(crate) struct SigmaOptions {
    pub spacing: TimestepSpacing,
    pub steps_offset: usize,
    pub use_karras_sigmas: bool,
    pub sigma_min: Option<f64>,
    pub sigma_max: Option<f64>,
    /// Final sigma: 0 ("zero") or the smallest training sigma ("sigma_min").
    pub final_sigma_min: bool,
}

impl SigmaOptions {
    /// `EulerDiscreteScheduler` keys.
    pub fn for_euler(config: &SchedulerConfig) -> Result<Self, SchedulerError> {
        config.reject_unsupported(&["use_exponential_sigmas", "use_beta_sigmas"])?;
        parse_enum(
            "interpolation_type",
            config.interpolation_type.as_deref(),
            (),
            &[("linear", ())],
        )?;
        parse_enum(
            "timestep_type",
            config.timestep_type.as_deref(),
            (),
            &[("discrete", ())],
        )?;
        Ok(Self {
            use_karras_sigmas: config.use_karras_sigmas == Some(true),
            sigma_min: config.sigma_min,
            sigma_max: config.sigma_max,
            final_sigma_min: parse_enum(
                "final_sigmas_type",
                config.final_sigmas_type.as_deref(),
                false,
                &[("zero", false), ("sigma_min", true)],
            )?,
            ..Self::for_euler_ancestral(config)?
        })
    }

    /// `EulerAncestralDiscreteScheduler` keys: it has no Karras / final-sigma options and,
    /// like diffusers' `from_config`, ignores them when a config carries them.
    pub fn for_euler_ancestral(config: &SchedulerConfig) -> Result<Self, SchedulerError> {
        Ok(Self {
            spacing: config.timestep_spacing_or(TimestepSpacing::Linspace)?,
            steps_offset: config.steps_offset.unwrap_or(0),
            use_karras_sigmas: false,
            sigma_min: None,
            sigma_max: None,
            final_sigma_min: false,
        })
    }

    /// diffusers' Euler `set_timesteps` (also Euler ancestral's, which never uses Karras).
    pub fn build(&self, schedule: &NoiseSchedule, steps: usize) -> SigmaSchedule {
        let num_train = schedule.num_train_timesteps();
        let mut timesteps = euler_timesteps(self.spacing, num_train, steps, self.steps_offset);
        let train_sigmas = schedule.sigmas();
        let mut sigmas: Vec<f64> = timesteps
            .iter()
            .map(|&t| np_interp_index(t, &train_sigmas))
            .collect();
        if self.use_karras_sigmas {
            let sigma_min = self.sigma_min.unwrap_or(sigmas[sigmas.len() - 1]);
            let sigma_max = self.sigma_max.unwrap_or(sigmas[0]);
            sigmas = karras_sigmas(sigma_min, sigma_max, steps);
            let logs = log_sigmas(&train_sigmas);
            timesteps = sigmas
                .iter()
                .map(|&s| sigma_to_t(s, &logs) as f32 as f64)
                .collect();
        }
        let last = if self.final_sigma_min {
            train_sigmas[0] as f64
        } else {
            0.0
        };
        sigmas.push(last);
        SigmaSchedule {
            timesteps,
            sigmas: sigmas.into_iter().map(|s| s as f32).collect(),
        }
    }

    /// `init_noise_sigma`: the largest sigma, or the std of the noised sample for "leading".
    pub fn init_noise_sigma(&self, sigmas: &[f32]) -> f64 {
        let max = sigmas.iter().copied().fold(f32::MIN, f32::max);
        match self.spacing {
            TimestepSpacing::Linspace | TimestepSpacing::Trailing => max as f64,
            TimestepSpacing::Leading => (max * max + 1.0).sqrt() as f64,
        }
    }
}

/// `sample / sqrt(sigma^2 + 1)`: the denoiser input of a variance-exploding sample.
pub(crate) fn scale_by_sigma(sample: &Tensor, sigma: f32) -> Result<Tensor, SchedulerError> {
    Ok((sample / (sigma * sigma + 1.0).sqrt() as f64)?)
}

/// Denoised estimate x0 from a variance-exploding sample at `sigma`.
pub(crate) fn predict_original(
    prediction_type: PredictionType,
    model_output: &Tensor,
    sample: &Tensor,
    sigma: f32,
) -> Result<Tensor, SchedulerError> {
    Ok(match prediction_type {
        PredictionType::Epsilon => (sample - (model_output * sigma as f64)?)?,
        PredictionType::Sample => model_output.clone(),
        PredictionType::VPrediction => {
            let c_out = -sigma / (sigma * sigma + 1.0).sqrt();
            let c_skip = 1.0 / (sigma * sigma + 1.0);
            ((model_output * c_out as f64)? + (sample * c_skip as f64)?)?
        }
    })
}

pub struct EulerScheduler {
    prediction_type: PredictionType,
    options: SigmaOptions,
    schedule: NoiseSchedule,
    sigmas: SigmaSchedule,
    begin: usize,
    timesteps: Vec<f64>,
    init_noise_sigma: f64,
}

impl EulerScheduler {
    pub fn new(config: &SchedulerConfig) -> Result<Self, SchedulerError> {
        Self::with_options(config, SigmaOptions::for_euler(config)?)
    }

    /// The sigma schedule both Euler samplers share; Euler ancestral differs in its options
    /// and in `step` only.
    pub(crate) fn with_options(
        config: &SchedulerConfig,
        options: SigmaOptions,
    ) -> Result<Self, SchedulerError> {
        let mut schedule = NoiseSchedule::from_config(config, DDPM_BETA_DEFAULTS)?;
        if config.rescale_betas_zero_snr == Some(true) {
            // diffusers keeps the terminal sigma finite.
            let last = schedule.alphas_cumprod.len() - 1;
            schedule.alphas_cumprod[last] = 2f32.powi(-24);
        }
        let full = SigmaSchedule {
            timesteps: Vec::new(),
            sigmas: {
                let mut s = schedule.sigmas();
                s.push(0.0);
                s
            },
        };
        let init_noise_sigma = options.init_noise_sigma(&full.sigmas);
        Ok(Self {
            prediction_type: config.prediction_type()?,
            options,
            schedule,
            sigmas: full,
            begin: 0,
            timesteps: Vec::new(),
            init_noise_sigma,
        })
    }

    /// Sigmas of the whole schedule (one more than steps), as diffusers' `scheduler.sigmas`.
    pub fn sigmas(&self) -> &[f32] {
        &self.sigmas.sigmas
    }

    /// The sigma at step `i` and the one it steps to.
    pub(crate) fn sigma_pair(&self, i: usize) -> Result<(f32, f32), SchedulerError> {
        check_index(i, self.timesteps.len())?;
        Ok((
            self.sigmas.sigmas[self.begin + i],
            self.sigmas.sigmas[self.begin + i + 1],
        ))
    }

    pub(crate) fn prediction_type(&self) -> PredictionType {
        self.prediction_type
    }
}

impl Scheduler for EulerScheduler {
    fn set_timesteps(&mut self, steps: usize, strength: f64) -> Result<(), SchedulerError> {
        if steps == 0 || steps > self.schedule.num_train_timesteps() {
            return Err(SchedulerError::Invalid(format!(
                "Euler samplers need 1..={} steps, got {steps}",
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
        _noise: &mut dyn NoiseSource,
    ) -> Result<Tensor, SchedulerError> {
        let (sigma, sigma_next) = self.sigma_pair(i)?;
        let pred_original = predict_original(self.prediction_type, model_output, sample, sigma)?;
        let derivative = ((sample - pred_original)? / sigma as f64)?;
        Ok((sample + (derivative * (sigma_next - sigma) as f64)?)?)
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
    fn linspace_timesteps_are_fractional_float32() {
        let t = euler_timesteps(TimestepSpacing::Linspace, 1000, 4, 0);
        assert_eq!(t, vec![999.0, 666.0, 333.0, 0.0]);
        let t = euler_timesteps(TimestepSpacing::Linspace, 1000, 7, 0);
        assert_eq!(t[1], 832.5);
    }

    #[test]
    fn sd15_euler_starts_at_max_sigma() {
        let mut s = EulerScheduler::new(&SchedulerConfig::sd15()).unwrap();
        s.set_timesteps(20, 1.0).unwrap();
        assert_eq!(s.timesteps().len(), 20);
        assert_eq!(s.sigmas().len(), 21);
        assert_eq!(s.sigmas()[20], 0.0);
        // SD1.5's largest sigma is about 14.6.
        assert!((s.init_noise_sigma() - 14.6146).abs() < 1e-3);
    }
}
