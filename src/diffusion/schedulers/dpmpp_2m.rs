//! DPM-Solver++(2M) (Lu et al. 2022), diffusers' `DPMSolverMultistepScheduler` with
//! `algorithm_type="dpmsolver++"`, optionally on Karras sigmas (A1111's "DPM++ 2M Karras").
//!
//! A multistep solver: each step reuses the previous step's denoised estimate, so steps
//! must run in order after `set_timesteps`.

use candle_core::Tensor;

use super::config::{parse_enum, PredictionType, SchedulerConfig, TimestepSpacing};
use super::schedule::{
    karras_sigmas, log_sigmas, mix, np_arange, np_interp_index, np_linspace, sigma_to_t,
    NoiseSchedule, DDPM_BETA_DEFAULTS,
};
use super::{check_index, strength_begin_index, Scheduler, SchedulerError};
use crate::noise::NoiseSource;

/// How the second-order correction is formed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SolverType {
    Midpoint,
    Heun,
}

/// Resolved options (diffusers class defaults for absent keys).
#[derive(Clone, Debug)]
pub struct DpmOptions {
    pub prediction_type: PredictionType,
    pub solver_order: usize,
    pub solver_type: SolverType,
    pub lower_order_final: bool,
    pub euler_at_final: bool,
    pub use_karras_sigmas: bool,
    pub sigma_min: Option<f64>,
    pub sigma_max: Option<f64>,
    pub final_sigma_min: bool,
    pub lambda_min_clipped: f64,
    pub timestep_spacing: TimestepSpacing,
    pub steps_offset: usize,
    /// Karras timesteps are rounded to integers except for the cosine schedule.
    pub round_karras_timesteps: bool,
}

pub struct DpmPp2MScheduler {
    options: DpmOptions,
    schedule: NoiseSchedule,
    /// Whole-schedule timesteps and sigmas (one more sigma than timesteps).
    all_timesteps: Vec<f64>,
    sigmas: Vec<f32>,
    begin: usize,
    timesteps: Vec<f64>,
    /// Denoised estimates of the previous and the current step.
    model_outputs: [Option<Tensor>; 2],
    lower_order_nums: usize,
    next_index: usize,
}

impl DpmPp2MScheduler {
    /// `karras` selects Karras sigmas (the `dpmpp_2m_karras` sampler) whatever the config says.
    pub fn new(config: &SchedulerConfig, karras: bool) -> Result<Self, SchedulerError> {
        config.reject_unsupported(&[
            "thresholding",
            "use_exponential_sigmas",
            "use_beta_sigmas",
            "use_lu_lambdas",
            "use_flow_sigmas",
        ])?;
        parse_enum(
            "algorithm_type",
            config.algorithm_type.as_deref(),
            (),
            &[("dpmsolver++", ()), ("deis", ())],
        )?;
        if let Some(v) = config.variance_type.as_deref() {
            return Err(SchedulerError::Unsupported {
                field: "variance_type".into(),
                value: v.into(),
                supported: "null".into(),
            });
        }
        let solver_order = config.solver_order.unwrap_or(2);
        if !(1..=2).contains(&solver_order) {
            return Err(SchedulerError::Unsupported {
                field: "solver_order".into(),
                value: solver_order.to_string(),
                supported: "1, 2".into(),
            });
        }
        let beta_schedule = config.beta_schedule_or(DDPM_BETA_DEFAULTS.beta_schedule)?;
        let options = DpmOptions {
            prediction_type: config.prediction_type()?,
            solver_order,
            solver_type: parse_enum(
                "solver_type",
                config.solver_type.as_deref(),
                SolverType::Midpoint,
                &[
                    ("midpoint", SolverType::Midpoint),
                    ("heun", SolverType::Heun),
                    // diffusers maps the UniPC/DEIS names onto midpoint.
                    ("logrho", SolverType::Midpoint),
                    ("bh1", SolverType::Midpoint),
                    ("bh2", SolverType::Midpoint),
                ],
            )?,
            lower_order_final: config.lower_order_final.unwrap_or(true),
            euler_at_final: config.euler_at_final.unwrap_or(false),
            use_karras_sigmas: karras,
            sigma_min: config.sigma_min,
            sigma_max: config.sigma_max,
            final_sigma_min: parse_enum(
                "final_sigmas_type",
                config.final_sigmas_type.as_deref(),
                false,
                &[("zero", false), ("sigma_min", true)],
            )?,
            lambda_min_clipped: config.lambda_min_clipped.unwrap_or(f64::NEG_INFINITY),
            timestep_spacing: config.timestep_spacing_or(TimestepSpacing::Linspace)?,
            steps_offset: config.steps_offset.unwrap_or(0),
            round_karras_timesteps: beta_schedule != super::config::BetaSchedule::SquaredCosCapV2,
        };
        let mut schedule = NoiseSchedule::from_config(config, DDPM_BETA_DEFAULTS)?;
        if config.rescale_betas_zero_snr == Some(true) {
            let last = schedule.alphas_cumprod.len() - 1;
            schedule.alphas_cumprod[last] = 2f32.powi(-24);
        }
        Ok(Self {
            options,
            schedule,
            all_timesteps: Vec::new(),
            sigmas: Vec::new(),
            begin: 0,
            timesteps: Vec::new(),
            model_outputs: [None, None],
            lower_order_nums: 0,
            next_index: 0,
        })
    }

    pub fn options(&self) -> &DpmOptions {
        &self.options
    }

    /// Sigmas of the whole schedule (one more than steps), as diffusers' `scheduler.sigmas`.
    pub fn sigmas(&self) -> &[f32] {
        &self.sigmas
    }

    /// Training timesteps before `lambda_min_clipped` cuts the low-noise end.
    fn last_timestep(&self) -> usize {
        let n = self.schedule.num_train_timesteps();
        // searchsorted(flip(lambda_t), lambda_min_clipped): entries strictly below the limit.
        let clipped = self
            .schedule
            .alphas_cumprod
            .iter()
            .map(|&a| a.sqrt().ln() - (1.0 - a).sqrt().ln())
            .filter(|&l| (l as f64) < self.options.lambda_min_clipped)
            .count();
        n - clipped
    }

    fn integer_timesteps(&self, steps: usize) -> Vec<f64> {
        let last = self.last_timestep();
        match self.options.timestep_spacing {
            TimestepSpacing::Linspace => {
                let mut t: Vec<f64> = np_linspace(0.0, (last - 1) as f64, steps + 1)
                    .into_iter()
                    .map(f64::round_ties_even)
                    .collect();
                t.reverse();
                t.truncate(steps);
                t
            }
            TimestepSpacing::Leading => {
                let ratio = last / (steps + 1);
                (1..=steps)
                    .rev()
                    .map(|i| (i * ratio + self.options.steps_offset) as f64)
                    .collect()
            }
            TimestepSpacing::Trailing => {
                let ratio = self.schedule.num_train_timesteps() as f64 / steps as f64;
                np_arange(last as f64, 0.0, -ratio)
                    .into_iter()
                    .map(|t| t.round_ties_even() - 1.0)
                    .collect()
            }
        }
    }
}

/// (alpha_t, sigma_t) of the variance-preserving process at VE noise level `sigma`.
fn alpha_sigma(sigma: f32) -> (f32, f32) {
    let alpha = 1.0 / (sigma * sigma + 1.0).sqrt();
    (alpha, sigma * alpha)
}

/// Half log-SNR `lambda = log(alpha) - log(sigma)` (infinite at sigma 0).
fn lambda(alpha: f32, sigma: f32) -> f32 {
    alpha.ln() - sigma.ln()
}

impl Scheduler for DpmPp2MScheduler {
    fn set_timesteps(&mut self, steps: usize, strength: f64) -> Result<(), SchedulerError> {
        let num_train = self.schedule.num_train_timesteps();
        if steps == 0 || steps >= num_train {
            return Err(SchedulerError::Invalid(format!(
                "DPM-Solver++ needs 1..{num_train} steps, got {steps}"
            )));
        }
        let train_sigmas = self.schedule.sigmas();
        let mut timesteps = self.integer_timesteps(steps);
        let mut sigmas: Vec<f64> = if self.options.use_karras_sigmas {
            let sigma_min = self.options.sigma_min.unwrap_or(train_sigmas[0] as f64);
            let sigma_max = self
                .options
                .sigma_max
                .unwrap_or(train_sigmas[num_train - 1] as f64);
            let sigmas = karras_sigmas(sigma_min, sigma_max, steps);
            let logs = log_sigmas(&train_sigmas);
            timesteps = sigmas
                .iter()
                .map(|&s| {
                    let t = sigma_to_t(s, &logs);
                    if self.options.round_karras_timesteps {
                        t.round_ties_even()
                    } else {
                        t
                    }
                })
                .collect();
            sigmas
        } else {
            timesteps
                .iter()
                .map(|&t| np_interp_index(t, &train_sigmas))
                .collect()
        };
        // diffusers stores the timesteps as int64.
        for t in &mut timesteps {
            *t = t.trunc();
        }
        sigmas.push(if self.options.final_sigma_min {
            train_sigmas[0] as f64
        } else {
            0.0
        });
        self.sigmas = sigmas.into_iter().map(|s| s as f32).collect();
        self.begin = strength_begin_index(steps, strength)?.min(timesteps.len());
        self.timesteps = timesteps[self.begin..].to_vec();
        self.all_timesteps = timesteps;
        self.model_outputs = [None, None];
        self.lower_order_nums = 0;
        self.next_index = 0;
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
        _noise: &mut dyn NoiseSource,
    ) -> Result<Tensor, SchedulerError> {
        check_index(i, self.timesteps.len())?;
        if i != self.next_index {
            return Err(SchedulerError::Invalid(format!(
                "DPM-Solver++ steps must run in order: expected step {}, got {i}",
                self.next_index
            )));
        }
        let k = self.begin + i;
        let len = self.all_timesteps.len();
        let opts = &self.options;
        let lower_order_final = k == len - 1
            && (opts.euler_at_final
                || (opts.lower_order_final && len < 15)
                || !opts.final_sigma_min);

        // Denoised estimate x0 (dpmsolver++ works in data prediction).
        let (alpha_s0, sigma_s0) = alpha_sigma(self.sigmas[k]);
        let x0 = match opts.prediction_type {
            PredictionType::Epsilon => {
                ((sample - (model_output * sigma_s0 as f64)?)? / alpha_s0 as f64)?
            }
            PredictionType::Sample => model_output.clone(),
            PredictionType::VPrediction => {
                ((sample * alpha_s0 as f64)? - (model_output * sigma_s0 as f64)?)?
            }
        };
        self.model_outputs.swap(0, 1);
        self.model_outputs[1] = Some(x0.clone());

        let (alpha_t, sigma_t) = alpha_sigma(self.sigmas[k + 1]);
        let lambda_t = lambda(alpha_t, sigma_t);
        let lambda_s0 = lambda(alpha_s0, sigma_s0);
        let h = lambda_t - lambda_s0;
        let phi = alpha_t * ((-h).exp() - 1.0);
        let base = ((sample * (sigma_t / sigma_s0) as f64)? - (&x0 * phi as f64)?)?;

        let prev = if opts.solver_order == 1 || self.lower_order_nums < 1 || lower_order_final {
            base
        } else {
            let m1 = self.model_outputs[0]
                .as_ref()
                .ok_or_else(|| SchedulerError::Invalid("missing previous model output".into()))?;
            let (alpha_s1, sigma_s1) = alpha_sigma(self.sigmas[k - 1]);
            let h_0 = lambda_s0 - lambda(alpha_s1, sigma_s1);
            let r0 = h_0 / h;
            let d1 = ((&x0 - m1)? * (1.0 / r0) as f64)?;
            let coefficient = match opts.solver_type {
                SolverType::Midpoint => -0.5 * phi,
                SolverType::Heun => alpha_t * (((-h).exp() - 1.0) / h + 1.0),
            };
            (base + (d1 * coefficient as f64)?)?
        };
        if self.lower_order_nums < opts.solver_order {
            self.lower_order_nums += 1;
        }
        self.next_index += 1;
        Ok(prev)
    }

    fn add_noise(
        &self,
        original: &Tensor,
        noise: &Tensor,
        i: usize,
    ) -> Result<Tensor, SchedulerError> {
        check_index(i, self.timesteps.len())?;
        let (alpha, sigma) = alpha_sigma(self.sigmas[self.begin + i]);
        Ok(mix(original, noise, alpha, sigma)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linspace_integer_timesteps() {
        let mut s = DpmPp2MScheduler::new(&SchedulerConfig::sd15(), false).unwrap();
        s.set_timesteps(4, 1.0).unwrap();
        // np.linspace(0, 999, 5).round()[::-1][:-1]
        assert_eq!(s.timesteps(), &[999.0, 749.0, 500.0, 250.0]);
        assert_eq!(s.sigmas().len(), 5);
    }

    #[test]
    fn steps_must_run_in_order() {
        let mut s = DpmPp2MScheduler::new(&SchedulerConfig::sd15(), true).unwrap();
        s.set_timesteps(4, 1.0).unwrap();
        let x = Tensor::zeros(
            (1, 1, 2, 2),
            candle_core::DType::F32,
            &candle_core::Device::Cpu,
        )
        .unwrap();
        let mut g = crate::noise::TorchGenerator::new(0);
        assert!(s.step(&x, 1, &x, &mut g).is_err());
        assert!(s.step(&x, 0, &x, &mut g).is_ok());
    }
}
