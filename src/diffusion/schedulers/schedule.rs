//! Noise-schedule tables and the numpy/torch numerics diffusers builds them with.
//!
//! Timesteps are chosen by rounding interpolated values, so the tables are computed the way
//! torch/numpy compute them (float32 where torch uses float32, numpy's float64 formulas
//! elsewhere); that keeps timesteps identical to diffusers, not merely close.

use candle_core::Tensor;

use super::config::{BetaSchedule, SchedulerConfig};
use super::SchedulerError;

/// `betas` and `alphas_cumprod` of a training noise schedule (float32, as torch holds them).
#[derive(Clone, Debug)]
pub struct NoiseSchedule {
    pub betas: Vec<f32>,
    pub alphas_cumprod: Vec<f32>,
}

/// Class defaults for the beta keys (they differ between DDIM-family and LCM).
#[derive(Clone, Copy, Debug)]
pub struct BetaDefaults {
    pub beta_start: f64,
    pub beta_end: f64,
    pub beta_schedule: BetaSchedule,
}

/// DDPM/DDIM/Euler/DPM-Solver class defaults.
pub const DDPM_BETA_DEFAULTS: BetaDefaults = BetaDefaults {
    beta_start: 0.0001,
    beta_end: 0.02,
    beta_schedule: BetaSchedule::Linear,
};

impl NoiseSchedule {
    /// `original` noised to timestep `t` (DDPM's forward process, diffusers' `add_noise`):
    /// `sqrt(ᾱ_t) · x0 + sqrt(1 − ᾱ_t) · ε`.
    pub fn add_noise(
        &self,
        original: &Tensor,
        noise: &Tensor,
        t: usize,
    ) -> candle_core::Result<Tensor> {
        let alpha = self.alphas_cumprod[t];
        mix(original, noise, alpha.sqrt(), (1.0 - alpha).sqrt())
    }

    pub fn from_config(
        config: &SchedulerConfig,
        defaults: BetaDefaults,
    ) -> Result<Self, SchedulerError> {
        let n = config.num_train_timesteps.unwrap_or(1000);
        if n < 2 {
            return Err(SchedulerError::Invalid(format!(
                "num_train_timesteps must be at least 2, got {n}"
            )));
        }
        let mut betas = match &config.trained_betas {
            Some(trained) => {
                if trained.len() != n {
                    return Err(SchedulerError::Invalid(format!(
                        "trained_betas has {} values but num_train_timesteps is {n}",
                        trained.len()
                    )));
                }
                trained.iter().map(|&b| b as f32).collect()
            }
            None => {
                let start = config.beta_start.unwrap_or(defaults.beta_start);
                let end = config.beta_end.unwrap_or(defaults.beta_end);
                match config.beta_schedule_or(defaults.beta_schedule)? {
                    BetaSchedule::Linear => torch_linspace_f32(start as f32, end as f32, n),
                    BetaSchedule::ScaledLinear => {
                        torch_linspace_f32(start.sqrt() as f32, end.sqrt() as f32, n)
                            .into_iter()
                            .map(|b| b * b)
                            .collect()
                    }
                    BetaSchedule::SquaredCosCapV2 => squaredcos_cap_v2_betas(n),
                }
            }
        };
        if config.rescale_betas_zero_snr == Some(true) {
            betas = rescale_zero_terminal_snr(&betas);
        }
        let alphas_cumprod = cumprod_of_alphas(&betas);
        Ok(Self {
            betas,
            alphas_cumprod,
        })
    }

    pub fn num_train_timesteps(&self) -> usize {
        self.betas.len()
    }

    /// ᾱ "before" timestep 0, where the last DDIM-style step lands: 1 with the config's
    /// `set_alpha_to_one`, else ᾱ_0.
    pub fn final_alpha_cumprod(&self, set_alpha_to_one: bool) -> f32 {
        if set_alpha_to_one {
            1.0
        } else {
            self.alphas_cumprod[0]
        }
    }

    /// `((1 - alphas_cumprod) / alphas_cumprod) ** 0.5` in float32, index = training timestep.
    pub fn sigmas(&self) -> Vec<f32> {
        self.alphas_cumprod
            .iter()
            .map(|&a| ((1.0 - a) / a).sqrt())
            .collect()
    }
}

/// `torch.linspace(start, end, steps, dtype=torch.float32)`: torch's CPU kernel fills the first
/// half forwards from `start` and the second half backwards from `end`, one FMA per value.
/// `alpha · original + sigma · noise`, the noising every sampler's `add_noise` does.
pub fn mix(
    original: &Tensor,
    noise: &Tensor,
    alpha: f32,
    sigma: f32,
) -> candle_core::Result<Tensor> {
    (original * alpha as f64)? + (noise * sigma as f64)?
}

pub fn torch_linspace_f32(start: f32, end: f32, steps: usize) -> Vec<f32> {
    if steps == 1 {
        return vec![start];
    }
    let step = (end - start) / (steps - 1) as f32;
    let halfway = steps / 2;
    (0..steps)
        .map(|i| {
            if i < halfway {
                step.mul_add(i as f32, start)
            } else {
                (-step).mul_add((steps - i - 1) as f32, end)
            }
        })
        .collect()
}

/// diffusers' `betas_for_alpha_bar` with the cosine transform (computed in double, stored float).
fn squaredcos_cap_v2_betas(n: usize) -> Vec<f32> {
    let alpha_bar = |t: f64| {
        ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0)
            .cos()
            .powi(2)
    };
    (0..n)
        .map(|i| {
            let t1 = i as f64 / n as f64;
            let t2 = (i + 1) as f64 / n as f64;
            (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999) as f32
        })
        .collect()
}

/// `torch.cumprod(1 - betas)`: float32 alphas, product accumulated in double (torch's CPU
/// accumulate type for float), each partial product stored as float.
pub fn cumprod_of_alphas(betas: &[f32]) -> Vec<f32> {
    let mut acc = 1.0f64;
    betas
        .iter()
        .map(|&b| {
            acc *= (1.0f32 - b) as f64;
            acc as f32
        })
        .collect()
}

/// diffusers' `rescale_zero_terminal_snr` (arXiv 2305.08891, Algorithm 1), in float32.
pub fn rescale_zero_terminal_snr(betas: &[f32]) -> Vec<f32> {
    let mut sqrt_bar: Vec<f32> = cumprod_of_alphas(betas).iter().map(|a| a.sqrt()).collect();
    let first = sqrt_bar[0];
    let last = sqrt_bar[sqrt_bar.len() - 1];
    let scale = first / (first - last);
    for v in &mut sqrt_bar {
        *v = (*v - last) * scale;
    }
    let bar: Vec<f32> = sqrt_bar.iter().map(|v| v * v).collect();
    let mut alphas = vec![bar[0]];
    alphas.extend(bar.windows(2).map(|w| w[1] / w[0]));
    alphas.iter().map(|a| 1.0 - a).collect()
}

/// `np.linspace(start, stop, num)` (endpoint included): `i * step + start`, last = `stop`.
pub fn np_linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    match num {
        0 => Vec::new(),
        1 => vec![start],
        _ => {
            let step = (stop - start) / (num - 1) as f64;
            let mut v: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
            v[num - 1] = stop;
            v
        }
    }
}

/// `np.arange(start, stop, step)` for floats: length `ceil((stop - start) / step)`, values
/// `start + i * delta` with `delta` re-derived from the first two values as numpy does.
pub fn np_arange(start: f64, stop: f64, step: f64) -> Vec<f64> {
    let len = ((stop - start) / step).ceil();
    if len.is_nan() || len <= 0.0 {
        return Vec::new();
    }
    let len = len as usize;
    let delta = (start + step) - start;
    (0..len)
        .map(|i| match i {
            0 => start,
            1 => start + step,
            _ => start + i as f64 * delta,
        })
        .collect()
}

/// `np.interp(x, np.arange(len(fp)), fp)`.
pub fn np_interp_index(x: f64, fp: &[f32]) -> f64 {
    let last = fp.len() - 1;
    if x <= 0.0 {
        return fp[0] as f64;
    }
    if x >= last as f64 {
        return fp[last] as f64;
    }
    let j = x.floor() as usize;
    if x == j as f64 {
        return fp[j] as f64;
    }
    let slope = (fp[j + 1] as f64 - fp[j] as f64) / 1.0;
    slope * (x - j as f64) + fp[j] as f64
}

/// diffusers' `_sigma_to_t`: fractional training timestep of `sigma` by linear interpolation
/// in log-sigma (`log_sigmas` is numpy's float32 `np.log(sigmas)`).
pub fn sigma_to_t(sigma: f64, log_sigmas: &[f32]) -> f64 {
    let log_sigma = sigma.max(1e-10).ln();
    // Last index whose log-sigma is <= log_sigma (argmax of the cumulative count), clipped.
    let count = log_sigmas
        .iter()
        .filter(|&&l| log_sigma - l as f64 >= 0.0)
        .count();
    let low_idx = count.saturating_sub(1).min(log_sigmas.len() - 2);
    let high_idx = low_idx + 1;
    let low = log_sigmas[low_idx] as f64;
    let high = log_sigmas[high_idx] as f64;
    let w = ((low - log_sigma) / (low - high)).clamp(0.0, 1.0);
    (1.0 - w) * low_idx as f64 + w * high_idx as f64
}

/// `np.log` of float32 sigmas, kept in float32.
pub fn log_sigmas(sigmas: &[f32]) -> Vec<f32> {
    sigmas.iter().map(|&s| numpy_log_f32(s)).collect()
}

/// numpy's float32 `np.log` on x86-64 (its AVX2/AVX-512 kernel in
/// `loops_exponent_log.dispatch.c.src`): mantissa/exponent split, a P5/Q5 rational
/// approximation of log(1 + y) with FMAs, plus exponent * ln 2. It differs from the C library's
/// `logf` in the last bit for about a fifth of inputs, which moves Karras timesteps by an ulp.
/// Inputs here are positive, finite and normal (sigmas).
pub fn numpy_log_f32(x: f32) -> f32 {
    const P: [f32; 6] = [
        0.0,
        9.999999999999998702752e-01,
        2.112677543073053063722e+00,
        1.480000633576506585156e+00,
        3.808837741388407920751e-01,
        2.589979117907922693523e-02,
    ];
    const Q: [f32; 6] = [
        1.0,
        2.612677543073109236779e+00,
        2.453006071784736363091e+00,
        9.864942958519418960339e-01,
        1.546476374983906719538e-01,
        5.875095403124574342950e-03,
    ];
    const SQRT1_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
    const LN_2: f32 = std::f32::consts::LN_2;
    if !(x.is_finite() && x >= f32::MIN_POSITIVE) {
        return x.ln();
    }
    let bits = x.to_bits();
    let mut exponent = ((bits >> 23) as i32 - 126) as f32;
    let mut m = f32::from_bits((bits & 0x007f_ffff) | 0x3f00_0000);
    if m <= SQRT1_2 {
        m += m;
        exponent -= 1.0;
    }
    let y = m - 1.0;
    let num = P[..5].iter().rev().fold(P[5], |acc, &p| acc.mul_add(y, p));
    let den = Q[..5].iter().rev().fold(Q[5], |acc, &q| acc.mul_add(y, q));
    exponent.mul_add(LN_2, num / den)
}

/// Karras et al. (2022) sigmas, rho = 7, from `sigma_max` down to `sigma_min`.
pub fn karras_sigmas(sigma_min: f64, sigma_max: f64, steps: usize) -> Vec<f64> {
    const RHO: f64 = 7.0;
    let min_inv_rho = sigma_min.powf(1.0 / RHO);
    let max_inv_rho = sigma_max.powf(1.0 / RHO);
    np_linspace(0.0, 1.0, steps)
        .into_iter()
        .map(|ramp| (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)).powf(RHO))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linspace_ends_are_exact() {
        let v = torch_linspace_f32(0.1, 0.7, 11);
        assert_eq!(v[0], 0.1);
        assert_eq!(v[10], 0.7);
        let n = np_linspace(0.0, 999.0, 7);
        assert_eq!(n[6], 999.0);
        assert_eq!(n[3], 499.5);
    }

    #[test]
    fn arange_length_follows_numpy_ceil() {
        // 1000 / (1000 / 3) rounds above 3 in floating point: numpy returns 4 values.
        let v = np_arange(1000.0, 0.0, -1000.0 / 3.0);
        assert_eq!(
            v.len(),
            ((0.0 - 1000.0) / (-1000.0f64 / 3.0)).ceil() as usize
        );
        assert_eq!(v[0], 1000.0);
        assert_eq!(
            np_arange(1000.0, 0.0, -250.0),
            vec![1000.0, 750.0, 500.0, 250.0]
        );
    }

    #[test]
    fn interp_between_and_outside() {
        let fp = [1.0f32, 3.0, 7.0];
        assert_eq!(np_interp_index(0.5, &fp), 2.0);
        assert_eq!(np_interp_index(1.25, &fp), 4.0);
        assert_eq!(np_interp_index(5.0, &fp), 7.0);
        assert_eq!(np_interp_index(-1.0, &fp), 1.0);
    }

    #[test]
    fn sigma_to_t_inverts_the_table() {
        let sigmas = [0.1f32, 0.2, 0.4, 0.8];
        let logs = log_sigmas(&sigmas);
        assert!((sigma_to_t(0.4, &logs) - 2.0).abs() < 1e-6);
        let mid = ((0.2f64.ln() + 0.4f64.ln()) / 2.0).exp();
        assert!((sigma_to_t(mid, &logs) - 1.5).abs() < 1e-6);
        assert_eq!(sigma_to_t(10.0, &logs), 3.0);
        assert_eq!(sigma_to_t(0.01, &logs), 0.0);
    }

    #[test]
    fn karras_spans_the_range() {
        let s = karras_sigmas(0.03, 14.6, 5);
        assert!((s[0] - 14.6).abs() < 1e-9 && (s[4] - 0.03).abs() < 1e-9);
        assert!(s.windows(2).all(|w| w[0] > w[1]));
    }

    #[test]
    fn zero_snr_rescale_ends_at_zero_alpha() {
        let betas = torch_linspace_f32(0.00085f64.sqrt() as f32, 0.012f64.sqrt() as f32, 1000)
            .into_iter()
            .map(|b| b * b)
            .collect::<Vec<_>>();
        let rescaled = rescale_zero_terminal_snr(&betas);
        let ac = cumprod_of_alphas(&rescaled);
        assert!(ac[999].abs() < 1e-6);
        assert!((ac[0] - cumprod_of_alphas(&betas)[0]).abs() < 1e-6);
    }
}
