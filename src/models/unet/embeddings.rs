//! Sinusoidal timestep features and the learned timestep embedding (diffusers `Timesteps` +
//! `TimestepEmbedding`).

use candle_core::{Device, Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::nn::layers::{linear, Linear};

/// diffusers `get_timestep_embedding` for one timestep repeated over the batch:
/// `[cos(t·f_i), sin(t·f_i)]` (or `[sin, cos]`) with `f_i = exp(-ln(10000)·i / (dim/2 - shift))`.
///
/// Computed on the host in f32, step by step as torch does it, because `t` reaches ~1000 and
/// the sine of such arguments amplifies any rounding difference in `f_i`.
pub(crate) fn timestep_features(
    timestep: f64,
    batch: usize,
    dim: usize,
    flip_sin_to_cos: bool,
    downscale_freq_shift: f64,
    device: &Device,
) -> Result<Tensor> {
    let half = dim / 2;
    let log_max_period = -(10000f64.ln()) as f32;
    let denominator = (half as f64 - downscale_freq_shift) as f32;
    let t = timestep as f32;
    let args: Vec<f32> = (0..half)
        .map(|i| t * ((log_max_period * i as f32) / denominator).exp())
        .collect();
    let sin = args.iter().map(|a| a.sin());
    let cos = args.iter().map(|a| a.cos());
    let mut row: Vec<f32> = if flip_sin_to_cos {
        cos.chain(sin).collect()
    } else {
        sin.chain(cos).collect()
    };
    if dim % 2 == 1 {
        row.push(0.0);
    }
    let row = Tensor::from_vec(row, (1, dim), device)?;
    row.repeat((batch, 1))
}

/// `TimestepEmbedding`: linear → SiLU → linear.
#[derive(Debug, Clone)]
pub(crate) struct TimestepEmbedding {
    linear_1: Linear,
    linear_2: Linear,
}

impl TimestepEmbedding {
    pub(crate) fn load(vb: VarBuilder, in_dim: usize, embed_dim: usize) -> Result<Self> {
        Ok(Self {
            linear_1: linear(vb.pp("linear_1"), in_dim, embed_dim, true)?,
            linear_2: linear(vb.pp("linear_2"), embed_dim, embed_dim, true)?,
        })
    }

    pub(crate) fn forward(&self, features: &Tensor) -> Result<Tensor> {
        let h = candle_nn::ops::silu(&self.linear_1.forward(features)?)?;
        self.linear_2.forward(&h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_follow_diffusers_layout() {
        let t = timestep_features(10.0, 2, 6, true, 0.0, &Device::Cpu).unwrap();
        assert_eq!(t.dims(), &[2, 6]);
        let row: Vec<f32> = t.get(1).unwrap().to_vec1().unwrap();
        // f = [1, 10000^(-1/3), 10000^(-2/3)], cos first.
        let f = [1.0f64, 10000f64.powf(-1.0 / 3.0), 10000f64.powf(-2.0 / 3.0)];
        for i in 0..3 {
            assert!((row[i] as f64 - (10.0 * f[i]).cos()).abs() < 1e-5);
            assert!((row[i + 3] as f64 - (10.0 * f[i]).sin()).abs() < 1e-5);
        }
        let odd = timestep_features(3.0, 1, 5, false, 1.0, &Device::Cpu).unwrap();
        let row: Vec<f32> = odd.get(0).unwrap().to_vec1().unwrap();
        assert_eq!(row[4], 0.0);
        // shift 1: f_i = exp(-ln(10000)·i/(2-1)); sin first.
        assert!((row[0] - 3f32.sin()).abs() < 1e-6 && (row[2] - 3f32.cos()).abs() < 1e-6);
    }
}
