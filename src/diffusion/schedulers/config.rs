//! `scheduler/scheduler_config.json` as diffusers writes it.
//!
//! A model folder's scheduler config names one scheduler class (SD1.5 ships a PNDM config) but
//! users sample it with any other: diffusers' `XScheduler.from_config(config)` keeps the keys X
//! knows and takes X's own defaults for the rest. [`SchedulerConfig`] therefore keeps every key
//! optional; each scheduler resolves the missing ones with its class defaults.

use std::path::Path;

use candle_core::Tensor;
use serde::Deserialize;

use super::SchedulerError;

/// Every scheduler key rotoscope understands; `None` = absent or `null` in the file.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct SchedulerConfig {
    #[serde(rename = "_class_name")]
    pub class_name: Option<String>,
    pub num_train_timesteps: Option<usize>,
    pub beta_start: Option<f64>,
    pub beta_end: Option<f64>,
    pub beta_schedule: Option<String>,
    pub trained_betas: Option<Vec<f64>>,
    pub rescale_betas_zero_snr: Option<bool>,
    pub prediction_type: Option<String>,
    pub timestep_spacing: Option<String>,
    pub steps_offset: Option<usize>,
    pub set_alpha_to_one: Option<bool>,
    pub clip_sample: Option<bool>,
    pub clip_sample_range: Option<f64>,
    pub thresholding: Option<bool>,
    pub interpolation_type: Option<String>,
    pub timestep_type: Option<String>,
    pub use_karras_sigmas: Option<bool>,
    pub use_exponential_sigmas: Option<bool>,
    pub use_beta_sigmas: Option<bool>,
    pub use_lu_lambdas: Option<bool>,
    pub use_flow_sigmas: Option<bool>,
    pub sigma_min: Option<f64>,
    pub sigma_max: Option<f64>,
    pub final_sigmas_type: Option<String>,
    pub solver_order: Option<usize>,
    pub algorithm_type: Option<String>,
    pub solver_type: Option<String>,
    pub lower_order_final: Option<bool>,
    pub euler_at_final: Option<bool>,
    pub lambda_min_clipped: Option<f64>,
    pub variance_type: Option<String>,
    pub original_inference_steps: Option<usize>,
    pub timestep_scaling: Option<f64>,
}

impl SchedulerConfig {
    /// The scheduler config of `stable-diffusion-v1-5` (a PNDM config), used when a model
    /// comes without one (single-file checkpoints).
    pub fn sd15() -> Self {
        Self {
            class_name: Some("PNDMScheduler".into()),
            num_train_timesteps: Some(1000),
            beta_start: Some(0.00085),
            beta_end: Some(0.012),
            beta_schedule: Some("scaled_linear".into()),
            steps_offset: Some(1),
            set_alpha_to_one: Some(false),
            clip_sample: Some(false),
            ..Self::default()
        }
    }

    /// Parses a config file. Python's JSON writer emits `Infinity`/`NaN` for float fields such as
    /// `lambda_min_clipped: -inf`; those mean "no limit" and are read as absent.
    pub fn from_json_str(text: &str, origin: &str) -> Result<Self, SchedulerError> {
        serde_json::from_str(&non_finite_to_null(text)).map_err(|e| SchedulerError::Config {
            origin: origin.to_string(),
            message: e.to_string(),
        })
    }

    pub fn from_file(path: &Path) -> Result<Self, SchedulerError> {
        let text = std::fs::read_to_string(path).map_err(|e| SchedulerError::Config {
            origin: path.display().to_string(),
            message: e.to_string(),
        })?;
        Self::from_json_str(&text, &path.display().to_string())
    }
}

/// Replaces the bare tokens `-Infinity`, `Infinity` and `NaN` outside strings by `null`.
fn non_finite_to_null(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_string = false;
    let mut escaped = false;
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
        } else if let Some(token) = ["-Infinity", "Infinity", "NaN"]
            .into_iter()
            .find(|t| rest.starts_with(t))
        {
            out.push_str("null");
            rest = &rest[token.len()..];
            continue;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// `beta_schedule`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BetaSchedule {
    Linear,
    ScaledLinear,
    SquaredCosCapV2,
}

/// `prediction_type`: what the network predicts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PredictionType {
    Epsilon,
    VPrediction,
    Sample,
}

impl PredictionType {
    /// The clean sample and the noise the network's output stands for, at a timestep with
    /// `sqrt_a = sqrt(ᾱ_t)` and `sqrt_b = sqrt(1 − ᾱ_t)` (diffusers' DDIM / TCD `step`).
    pub fn x0_and_epsilon(
        self,
        model_output: &Tensor,
        sample: &Tensor,
        sqrt_a: f64,
        sqrt_b: f64,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        Ok(match self {
            PredictionType::Epsilon => (
                ((sample - (model_output * sqrt_b)?)? / sqrt_a)?,
                model_output.clone(),
            ),
            PredictionType::Sample => (
                model_output.clone(),
                ((sample - (model_output * sqrt_a)?)? / sqrt_b)?,
            ),
            PredictionType::VPrediction => (
                ((sample * sqrt_a)? - (model_output * sqrt_b)?)?,
                ((model_output * sqrt_a)? + (sample * sqrt_b)?)?,
            ),
        })
    }
}

/// `timestep_spacing`: the preset's enum is the one enum (its values are the config's names).
pub use crate::preset::TimestepSpacing;

pub(crate) fn parse_enum<T: Copy>(
    field: &str,
    value: Option<&str>,
    default: T,
    choices: &[(&str, T)],
) -> Result<T, SchedulerError> {
    let Some(value) = value else {
        return Ok(default);
    };
    choices
        .iter()
        .find(|(name, _)| *name == value)
        .map(|(_, v)| *v)
        .ok_or_else(|| SchedulerError::Unsupported {
            field: field.to_string(),
            value: value.to_string(),
            supported: choices
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", "),
        })
}

impl SchedulerConfig {
    pub(crate) fn beta_schedule_or(
        &self,
        default: BetaSchedule,
    ) -> Result<BetaSchedule, SchedulerError> {
        parse_enum(
            "beta_schedule",
            self.beta_schedule.as_deref(),
            default,
            &[
                ("linear", BetaSchedule::Linear),
                ("scaled_linear", BetaSchedule::ScaledLinear),
                ("squaredcos_cap_v2", BetaSchedule::SquaredCosCapV2),
            ],
        )
    }

    pub(crate) fn prediction_type(&self) -> Result<PredictionType, SchedulerError> {
        parse_enum(
            "prediction_type",
            self.prediction_type.as_deref(),
            PredictionType::Epsilon,
            &[
                ("epsilon", PredictionType::Epsilon),
                ("v_prediction", PredictionType::VPrediction),
                ("sample", PredictionType::Sample),
            ],
        )
    }

    pub(crate) fn timestep_spacing_or(
        &self,
        default: TimestepSpacing,
    ) -> Result<TimestepSpacing, SchedulerError> {
        parse_enum(
            "timestep_spacing",
            self.timestep_spacing.as_deref(),
            default,
            &[
                TimestepSpacing::Leading,
                TimestepSpacing::Trailing,
                TimestepSpacing::Linspace,
            ]
            .map(|s| (s.as_str(), s)),
        )
    }

    /// Rejects options that change the maths in ways rotoscope does not implement, instead of
    /// silently sampling differently from diffusers.
    pub(crate) fn reject_unsupported(&self, keys: &[&str]) -> Result<(), SchedulerError> {
        for key in keys {
            let set = match *key {
                "thresholding" => self.thresholding == Some(true),
                "use_exponential_sigmas" => self.use_exponential_sigmas == Some(true),
                "use_beta_sigmas" => self.use_beta_sigmas == Some(true),
                "use_lu_lambdas" => self.use_lu_lambdas == Some(true),
                "use_flow_sigmas" => self.use_flow_sigmas == Some(true),
                _ => false,
            };
            if set {
                return Err(SchedulerError::Unsupported {
                    field: key.to_string(),
                    value: "true".into(),
                    supported: "false".into(),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_python_infinity_as_absent() {
        let cfg = SchedulerConfig::from_json_str(
            r#"{"_class_name": "DPMSolverMultistepScheduler", "lambda_min_clipped": -Infinity,
                "variance_type": null, "prediction_type": "epsilon", "note": "-Infinity stays"}"#,
            "test",
        )
        .unwrap();
        assert_eq!(cfg.lambda_min_clipped, None);
        assert_eq!(cfg.prediction_type.as_deref(), Some("epsilon"));
        assert_eq!(
            cfg.class_name.as_deref(),
            Some("DPMSolverMultistepScheduler")
        );
    }

    #[test]
    fn unknown_enum_value_names_the_field() {
        let cfg = SchedulerConfig {
            timestep_spacing: Some("sideways".into()),
            ..Default::default()
        };
        let err = cfg
            .timestep_spacing_or(TimestepSpacing::Leading)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("timestep_spacing") && err.contains("sideways"),
            "{err}"
        );
    }
}
