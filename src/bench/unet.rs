//! Timing a UNet step at real SD shapes with random weights (no model files needed), for
//! the `rotoscope bench` cases and tests that need a full-size UNet.

use std::time::Instant;

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::{Init, VarBuilder};

use crate::models::unet::{Result, UNet2DConditionModel, UNetConfig, UNetExtras};

/// diffusers' `stable-diffusion-v1-5/unet/config.json`.
pub const SD15_UNET_CONFIG: &str = r#"{
  "_class_name": "UNet2DConditionModel",
  "act_fn": "silu",
  "attention_head_dim": 8,
  "block_out_channels": [320, 640, 1280, 1280],
  "center_input_sample": false,
  "cross_attention_dim": 768,
  "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
  "downsample_padding": 1,
  "flip_sin_to_cos": true,
  "freq_shift": 0,
  "in_channels": 4,
  "layers_per_block": 2,
  "mid_block_scale_factor": 1,
  "norm_eps": 1e-05,
  "norm_num_groups": 32,
  "out_channels": 4,
  "sample_size": 64,
  "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]
}"#;

/// A `VarBuilder` backend that makes up plain (detached) random tensors of whatever shape is
/// asked for: 1-D `weight`s are ones (norm scales), other 1-D tensors small, matrices and conv
/// kernels `N(0, 1/fan_in)` so activations stay in a realistic range. Each tensor's values
/// follow from its name alone, so two models built from it (in f32 and in bf16, say) hold the
/// same weights.
struct RandomWeights;

/// `len` values `N(0, std²)` determined by `name` (splitmix64 streams per chunk, Box–Muller),
/// generated in parallel.
fn seeded_normal(name: &str, len: usize, std: f32) -> Vec<f32> {
    use rayon::prelude::*;
    const CHUNK: usize = 1 << 16;
    // FNV-1a of the name.
    let seed = name
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
    let mut out = vec![0f32; len];
    out.par_chunks_mut(CHUNK).enumerate().for_each(|(i, chunk)| {
        let mut state = seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let mut next = || {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            // A uniform in (0, 1].
            ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64 + f64::EPSILON
        };
        for pair in chunk.chunks_mut(2) {
            let (u, v) = (next(), next());
            let r = (-2.0 * u.ln()).sqrt() * std as f64;
            let t = std::f64::consts::TAU * v;
            pair[0] = (r * t.cos()) as f32;
            if let Some(second) = pair.get_mut(1) {
                *second = (r * t.sin()) as f32;
            }
        }
    });
    out
}

impl candle_nn::var_builder::SimpleBackend for RandomWeights {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        _: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let dims = shape.dims();
        let t = if dims.len() == 1 && name.ends_with("weight") {
            Tensor::ones(shape, DType::F32, dev)?
        } else {
            let std = if dims.len() == 1 {
                0.02
            } else {
                let fan_in: usize = dims[1..].iter().product();
                (1.0 / fan_in as f64).sqrt() as f32
            };
            Tensor::from_vec(seeded_normal(name, shape.elem_count(), std), shape, dev)?
        };
        t.to_dtype(dtype)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("random weights need a shape for {name}")
    }

    fn contains_tensor(&self, _: &str) -> bool {
        true
    }
}

/// A `VarBuilder` whose every tensor is random but fixed by its name (f32, in host memory:
/// the benchmarks time the CPU kernels).
pub fn random_var_builder() -> VarBuilder<'static> {
    VarBuilder::from_backend(Box::new(RandomWeights), DType::F32, crate::device::host())
}

/// Result of [`time_unet_step`].
#[derive(Debug, Clone)]
pub struct StepTiming {
    pub batch: usize,
    pub latent_size: usize,
    /// Seconds per step, one entry per timed run.
    pub seconds: Vec<f64>,
    /// Peak resident set size of the process so far, in bytes (Linux `VmHWM`).
    pub peak_rss_bytes: Option<u64>,
}

impl StepTiming {
    pub fn median_seconds(&self) -> f64 {
        let mut s = self.seconds.clone();
        s.sort_by(f64::total_cmp);
        s.get(s.len() / 2).copied().unwrap_or(f64::NAN)
    }
}

/// Peak resident set size of this process (Linux), in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Builds the SD1.5 UNet with random weights.
pub fn random_sd15_unet() -> Result<UNet2DConditionModel> {
    let config: UNetConfig = serde_json::from_str(SD15_UNET_CONFIG).map_err(|source| {
        crate::models::unet::UNetError::ConfigParse {
            path: "<built-in SD1.5 config>".into(),
            source,
        }
    })?;
    config.validate()?;
    UNet2DConditionModel::load(random_var_builder(), &config)
}

/// Seconds for one UNet step at `batch` × in_channels × `latent_size`² with 77 random text
/// tokens (inputs are made before the clock starts).
pub fn time_one_step(unet: &UNet2DConditionModel, batch: usize, latent_size: usize) -> Result<f64> {
    let dev = crate::device::host();
    let config = unet.config();
    let sample = Tensor::randn(
        0f32,
        1.0,
        (batch, config.in_channels, latent_size, latent_size),
        &dev,
    )?;
    let cross_dim = config
        .cross_attention_dim
        .resolve(config.block_out_channels.len(), "cross_attention_dim")?[0];
    let ehs = Tensor::randn(0f32, 1.0, (batch, 77, cross_dim), &dev)?;
    let start = Instant::now();
    let out = unet.forward(&sample, 500.0, &ehs, &UNetExtras::default())?;
    let seconds = start.elapsed().as_secs_f64();
    drop(out);
    Ok(seconds)
}

/// Times `runs` UNet steps (after one warm-up step).
pub fn time_unet_step(
    unet: &UNet2DConditionModel,
    batch: usize,
    latent_size: usize,
    runs: usize,
) -> Result<StepTiming> {
    time_one_step(unet, batch, latent_size)?;
    let seconds = (0..runs)
        .map(|_| time_one_step(unet, batch, latent_size))
        .collect::<Result<Vec<_>>>()?;
    Ok(StepTiming {
        batch,
        latent_size,
        seconds,
        peak_rss_bytes: peak_rss_bytes(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_weights_follow_the_name() {
        let a = seeded_normal("down.0.weight", 200_001, 0.5);
        assert_eq!(a, seeded_normal("down.0.weight", 200_001, 0.5));
        assert_ne!(a[..8], seeded_normal("down.1.weight", 8, 0.5)[..]);
        let n = a.len() as f64;
        let mean = a.iter().map(|&v| v as f64).sum::<f64>() / n;
        let std = (a.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n).sqrt();
        assert!(mean.abs() < 0.01 && (std - 0.5).abs() < 0.01, "{mean} {std}");
    }
}
