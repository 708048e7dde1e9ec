//! The cost terms of `rotoscope plan`'s time estimate ([`crate::pipeline::plan::estimate`])
//! for what a preset switches on: how many steps run, DeepCache's shallow steps, guidance,
//! the weights' precision, which VAE, the preprocessors and the face / hand detail pass.
//!
//! Calibrated like the rest of the estimate: seconds at the reference's speed on the 2-core
//! AVX-512 machine (torch CPU fp32 for the networks, TFLite for pose), and factors measured
//! with `rotoscope bench` as ratios within one command. Pure functions, no I/O.

use crate::diffusion::schedulers::strength_begin_index;
use crate::models::unet::deep_cache::is_refresh_step;
use crate::preset::deep_cache::DeepCacheSpec;
use crate::preset::detail::RegionSettings;
use crate::preset::{Compute, ControlKind};

/// A bf16 network step's time over the f32 step's: `unet-64-bf16` / `unet-64` (ours) in one
/// `rotoscope bench --only unet-64,unet-64-bf16 --runs 3`, 2026-12-07, this 2-core machine:
/// 1.00 while the layers still compute bf16 weights in f32 (the bf16 kernels of `nn/` have
/// not landed). Re-measure and update when they do.
pub const BF16_STEP_FACTOR: f64 = 1.0;

/// A DeepCache shallow step (branch 0: the ControlNet cut to the residuals it needs and the
/// UNet's outermost blocks) over a full ControlNet + UNet step: `deepcache-64` /
/// `controlnet-64` (ours), 0.94 s / 11.17 s in one `rotoscope bench --runs 3` (README,
/// "Performance", 2026-12-07).
pub const DEEP_CACHE_SHALLOW_FRACTION_BRANCH_0: f64 = 0.084;

/// TAESD decode of a 64² latent / encode of a 512² image at the reference's speed
/// (`taesd-decode`, `taesd-encode` torch column of `rotoscope bench`).
pub const TAESD_DECODE_SECS_AT_512: f64 = 1.3;
pub const TAESD_ENCODE_SECS_AT_512: f64 = 1.1;

/// The KL VAE at the reference's speed (torch `vae-decode` ~10.5 s, `vae-encode` ~4.9 s):
/// the values the estimate has always used.
pub const VAE_DECODE_SECS_AT_512: f64 = 11.0;
pub const VAE_ENCODE_SECS_AT_512: f64 = 5.5;

/// Per 512² frame at the reference's speed (README bench: torch HED 0.77 s, TFLite pose +
/// hands + face 16 ms). The preprocessors share the two cores with the render, so their
/// time adds to the frame's even though they run on their own thread.
pub const HED_SECS_AT_512: f64 = 0.77;
pub const POSE_SECS_AT_512: f64 = 0.016;

/// Detail regions repainted per frame when a part is enabled: one dancer (one face, two
/// hands), all visible.
pub const DETAIL_FACES_PER_FRAME: f64 = 1.0;
pub const DETAIL_HANDS_PER_FRAME: f64 = 2.0;

/// Steps an img2img pass runs: diffusers' `int(steps × strength)` (at least none), as the
/// schedulers start ([`strength_begin_index`]).
pub fn denoise_steps(steps: usize, strength: f64) -> usize {
    strength_begin_index(steps, strength).map_or(0, |begin| steps - begin)
}

/// The batch of one step relative to a guided one: classifier-free guidance (cfg > 1) runs
/// the prompt and the negative prompt (batch 2), otherwise the conditional half only.
pub fn guidance_factor(cfg_scale: f64) -> f64 {
    if crate::diffusion::guidance::uses_cfg(cfg_scale) {
        1.0
    } else {
        0.5
    }
}

/// A network's time in the preset's precision over its f32 time.
pub fn precision_factor(compute: Compute) -> f64 {
    match compute {
        Compute::F32 => 1.0,
        Compute::Bf16 => BF16_STEP_FACTOR,
    }
}

/// The mean cost of a step over `steps` steps relative to a full step: with DeepCache every
/// `interval`-th step (the first included) is full and the others shallow. Only branch 0's
/// shallow step is measured; a deeper branch is counted as a full step (an upper bound).
pub fn deep_cache_factor(steps: usize, deep_cache: Option<&DeepCacheSpec>) -> f64 {
    let Some(spec) = deep_cache.filter(|_| steps > 0) else {
        return 1.0;
    };
    let shallow = if spec.branch == 0 {
        DEEP_CACHE_SHALLOW_FRACTION_BRANCH_0
    } else {
        1.0
    };
    let total: f64 = (0..steps)
        .map(|i| {
            if is_refresh_step(i, spec.interval as usize) {
                1.0
            } else {
                shallow
            }
        })
        .sum();
    total / steps as f64
}

/// Whether a `model.vae` source names TAESD (`madebyollin/taesd`, a `taesd` folder or
/// `taesd_decoder.safetensors`). Without its files this is all that can be told; a render
/// recognises the tiny VAE from its config or keys.
pub fn names_taesd(vae: Option<&str>) -> bool {
    vae.and_then(|v| v.trim_end_matches('/').rsplit('/').next())
        .is_some_and(|last| last.to_ascii_lowercase().starts_with("taesd"))
}

/// Seconds of one VAE decode and one encode at 512², f32, at the reference's speed.
pub fn vae_secs_at_512(tiny: bool) -> (f64, f64) {
    if tiny {
        (TAESD_DECODE_SECS_AT_512, TAESD_ENCODE_SECS_AT_512)
    } else {
        (VAE_DECODE_SECS_AT_512, VAE_ENCODE_SECS_AT_512)
    }
}

/// Seconds the preprocessors making `maps` take per 512² frame.
pub fn preprocess_secs_at_512(maps: &[ControlKind]) -> f64 {
    maps.iter()
        .map(|kind| match kind {
            ControlKind::Openpose => POSE_SECS_AT_512,
            ControlKind::Softedge => HED_SECS_AT_512,
            _ => 0.0,
        })
        .sum()
}

/// What one detail pass costs, everything in seconds at 512² and the reference's speed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DetailCosts {
    /// A guided (batch 2) f32 UNet step.
    pub unet_step: f64,
    /// A ControlNet step as a fraction of the UNet step.
    pub controlnet_fraction: f64,
    pub vae_decode: f64,
    pub vae_encode: f64,
    /// The networks' time in the preset's precision over f32 ([`precision_factor`]).
    pub precision: f64,
}

/// Seconds one region takes to repaint: masked img2img of its crop at `region.resolution`²
/// (VAE encode, `int(steps × denoise)` steps with its guidance, the openpose ControlNet when
/// `with_controlnet`, DeepCache as the preset sets it, VAE decode).
pub fn detail_region_secs(
    region: &RegionSettings,
    with_controlnet: bool,
    deep_cache: Option<&DeepCacheSpec>,
    costs: &DetailCosts,
) -> f64 {
    let pixels = (region.resolution as f64 / 512.0).powi(2);
    let steps = denoise_steps(region.steps as usize, region.denoise as f64);
    let net = if with_controlnet {
        1.0 + costs.controlnet_fraction
    } else {
        1.0
    };
    let step = costs.unet_step * guidance_factor(region.cfg_scale as f64) * net;
    let denoise = steps as f64 * step * deep_cache_factor(steps, deep_cache);
    pixels * costs.precision * (denoise + costs.vae_encode + costs.vae_decode)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(interval: u32, branch: u32) -> DeepCacheSpec {
        DeepCacheSpec { interval, branch }
    }

    #[test]
    fn img2img_runs_diffusers_int_of_steps_times_strength() {
        assert_eq!(denoise_steps(20, 1.0), 20);
        assert_eq!(denoise_steps(20, 0.5), 10);
        // The preset's f32 0.7 is 0.69999998: int(6 × 0.7) = 4, int(20 × 0.7) = 13.
        assert_eq!(denoise_steps(6, 0.7f32 as f64), 4);
        assert_eq!(denoise_steps(20, 0.7f32 as f64), 13);
        assert_eq!(denoise_steps(4, 0.2), 0);
    }

    #[test]
    fn guidance_doubles_the_batch_only_above_one() {
        assert_eq!(guidance_factor(7.0), 1.0);
        assert_eq!(guidance_factor(1.5), 1.0);
        assert_eq!(guidance_factor(1.0), 0.5);
        assert_eq!(guidance_factor(0.0), 0.5);
    }

    #[test]
    fn bf16_costs_the_measured_factor() {
        assert_eq!(precision_factor(Compute::F32), 1.0);
        assert_eq!(precision_factor(Compute::Bf16), BF16_STEP_FACTOR);
    }

    #[test]
    fn deep_cache_makes_the_off_schedule_steps_shallow() {
        let f = DEEP_CACHE_SHALLOW_FRACTION_BRANCH_0;
        assert_eq!(deep_cache_factor(6, None), 1.0);
        // interval 2 over 4 steps: full, shallow, full, shallow.
        assert!((deep_cache_factor(4, Some(&spec(2, 0))) - (2.0 + 2.0 * f) / 4.0).abs() < 1e-12);
        // interval 3 over 5 steps: steps 0 and 3 full.
        assert!((deep_cache_factor(5, Some(&spec(3, 0))) - (2.0 + 3.0 * f) / 5.0).abs() < 1e-12);
        // A single step is always a full one; interval 1 is off.
        assert_eq!(deep_cache_factor(1, Some(&spec(2, 0))), 1.0);
        assert_eq!(deep_cache_factor(6, Some(&spec(1, 0))), 1.0);
        // Unmeasured deeper branches: no saving counted.
        assert_eq!(deep_cache_factor(6, Some(&spec(2, 3))), 1.0);
        assert_eq!(deep_cache_factor(0, Some(&spec(2, 0))), 1.0);
    }

    #[test]
    fn taesd_is_told_by_its_names_and_is_cheaper() {
        assert!(names_taesd(Some("madebyollin/taesd")));
        assert!(names_taesd(Some("/models/taesd/")));
        assert!(names_taesd(Some("vae/taesd_decoder.safetensors")));
        assert!(!names_taesd(Some("stabilityai/sd-vae-ft-mse")));
        assert!(!names_taesd(None));
        assert_eq!(vae_secs_at_512(false), (11.0, 5.5));
        let (decode, encode) = vae_secs_at_512(true);
        assert_eq!((decode, encode), (TAESD_DECODE_SECS_AT_512, TAESD_ENCODE_SECS_AT_512));
        assert!(decode < 11.0 / 5.0 && encode < 5.5 / 2.0);
    }

    #[test]
    fn preprocessing_counts_each_map_once() {
        assert_eq!(preprocess_secs_at_512(&[]), 0.0);
        assert_eq!(
            preprocess_secs_at_512(&[ControlKind::Openpose, ControlKind::Softedge]),
            POSE_SECS_AT_512 + HED_SECS_AT_512
        );
        assert_eq!(preprocess_secs_at_512(&[ControlKind::Temporalnet]), 0.0);
    }

    #[test]
    fn a_detail_region_is_a_short_img2img_at_its_resolution() {
        let costs = DetailCosts {
            unet_step: 8.0,
            controlnet_fraction: 0.5,
            vae_decode: 2.0,
            vae_encode: 1.0,
            precision: 1.0,
        };
        let mut hands = RegionSettings::hands();
        hands.steps = 4;
        hands.denoise = 0.5;
        hands.cfg_scale = 7.0;
        hands.resolution = 512;
        // int(4 × 0.5) = 2 guided steps with the ControlNet, then encode + decode.
        assert_eq!(detail_region_secs(&hands, true, None, &costs), 2.0 * 12.0 + 3.0);
        assert_eq!(detail_region_secs(&hands, false, None, &costs), 2.0 * 8.0 + 3.0);
        // Half the side: a quarter of the pixels; cfg 1: half the batch.
        hands.resolution = 256;
        hands.cfg_scale = 1.0;
        assert_eq!(detail_region_secs(&hands, false, None, &costs), (2.0 * 4.0 + 3.0) / 4.0);
        // DeepCache over the 2 steps: one full, one shallow; bf16 scales it all.
        hands.resolution = 512;
        let f = DEEP_CACHE_SHALLOW_FRACTION_BRANCH_0;
        let cached = detail_region_secs(&hands, false, Some(&spec(2, 0)), &costs);
        assert!((cached - ((1.0 + f) * 4.0 + 3.0)).abs() < 1e-12);
        let half = DetailCosts {
            precision: 0.5,
            ..costs
        };
        assert_eq!(detail_region_secs(&hands, false, None, &half), (2.0 * 4.0 + 3.0) / 2.0);
    }
}
