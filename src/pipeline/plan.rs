//! Batch planning: split a clip into batches of at most `batch.frames` frames where
//! neighbouring batches share `batch.overlap` frames (rendered twice, then blended), and a
//! rough memory / time estimate for `rotoscope plan`.
//!
//! Pure functions, no I/O.

use std::ops::Range;

use serde::Serialize;

use crate::diffusion::context_windows::plan_windows;
use crate::pipeline::cost::{
    deep_cache_factor, denoise_steps, detail_region_secs, guidance_factor, names_taesd,
    precision_factor, preprocess_secs_at_512, vae_secs_at_512, DetailCosts,
    DETAIL_FACES_PER_FRAME, DETAIL_HANDS_PER_FRAME,
};
use crate::preset::{ControlKind, Preset, MAX_BATCH_FRAMES};
use crate::render::temporal::cross_frame::{
    sd15_extra_attention_fraction, sd15_reference_bytes_per_step,
};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("batch.frames must be at least 1")]
    ZeroBatchFrames,
    #[error("batch.frames must be at most {max}, got {frames}", max = MAX_BATCH_FRAMES)]
    BatchTooLarge { frames: usize },
    #[error("batch.overlap ({overlap}) must be smaller than batch.frames ({frames})")]
    OverlapTooLarge { overlap: usize, frames: usize },
}

/// One batch: a contiguous range of frames (indices relative to the first rendered frame).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Batch {
    pub index: usize,
    /// First frame of the batch.
    pub start: usize,
    /// One past the last frame.
    pub end: usize,
    /// Frames at the start of this batch that the previous batch also renders.
    pub overlap_with_previous: usize,
    /// Frames at the end of this batch that the next batch also renders.
    pub overlap_with_next: usize,
}

impl Batch {
    pub fn frames(&self) -> Range<usize> {
        self.start..self.end
    }

    pub fn len(&self) -> usize {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BatchPlan {
    pub total_frames: usize,
    pub batch_frames: usize,
    pub overlap: usize,
    pub batches: Vec<Batch>,
}

impl BatchPlan {
    /// Frames the renderer runs, overlaps counted twice.
    pub fn rendered_frames(&self) -> usize {
        self.batches.iter().map(Batch::len).sum()
    }

    /// The longest batch: what the renderer holds in memory at once.
    pub fn longest_batch(&self) -> usize {
        self.batches.iter().map(Batch::len).max().unwrap_or(0)
    }
}

/// Split `total_frames` frames into batches of at most `batch_frames` frames, neighbours
/// sharing exactly `overlap` frames.
///
/// Uses the fewest batches possible and spreads the frames evenly over them (lengths differ
/// by at most one), so no batch is a short tail that is mostly overlap. A clip that fits in
/// one batch is one batch without overlap; zero frames give an empty plan.
pub fn plan_batches(
    total_frames: usize,
    batch_frames: usize,
    overlap: usize,
) -> Result<BatchPlan, PlanError> {
    if batch_frames == 0 {
        return Err(PlanError::ZeroBatchFrames);
    }
    if batch_frames > MAX_BATCH_FRAMES as usize {
        return Err(PlanError::BatchTooLarge {
            frames: batch_frames,
        });
    }
    if overlap >= batch_frames {
        return Err(PlanError::OverlapTooLarge {
            overlap,
            frames: batch_frames,
        });
    }
    let mut plan = BatchPlan {
        total_frames,
        batch_frames,
        overlap,
        batches: Vec::new(),
    };
    if total_frames == 0 {
        return Ok(plan);
    }
    // n batches cover total + (n-1)·overlap frame slots; each batch adds at most
    // batch_frames - overlap new frames after the first.
    let count = if total_frames <= batch_frames {
        1
    } else {
        (total_frames - overlap).div_ceil(batch_frames - overlap)
    };
    let slots = total_frames + (count - 1) * overlap;
    let (base, longer) = (slots / count, slots % count);
    let mut start = 0;
    for index in 0..count {
        let len = base + usize::from(index < longer);
        let is_last = index + 1 == count;
        plan.batches.push(Batch {
            index,
            start,
            end: start + len,
            overlap_with_previous: if index == 0 { 0 } else { overlap },
            overlap_with_next: if is_last { 0 } else { overlap },
        });
        start += len - if is_last { 0 } else { overlap };
    }
    debug_assert_eq!(plan.batches.last().map(|b| b.end), Some(total_frames));
    Ok(plan)
}

/// Plan with the preset's batch settings.
pub fn plan_for_preset(total_frames: usize, preset: &Preset) -> Result<BatchPlan, PlanError> {
    plan_batches(
        total_frames,
        preset.batch.frames as usize,
        preset.batch.overlap as usize,
    )
}

// ---- estimate ----

/// Parameter counts of the SD1.5 networks (diffusers checkpoints), weights held in fp32.
const UNET_PARAMS: f64 = 859.52e6;
const CONTROLNET_PARAMS: f64 = 361.28e6;
const VAE_PARAMS: f64 = 83.65e6;
const TEXT_ENCODER_PARAMS: f64 = 123.06e6;
const BYTES_PER_PARAM: f64 = 4.0;
/// Working memory of one UNet + ControlNet step and a VAE decode at 512², with attention
/// computed in slices (never the full N×N matrix); scales with the pixel count.
const ACTIVATIONS_AT_512: f64 = 1.5e9;
/// TAESD (`AutoencoderTiny`): 1.22M encoder + 1.22M decoder parameters.
const TAESD_PARAMS: f64 = 2.45e6;
/// Reference timings (docs/ARCHITECTURE.md, "Performance") on a 2-core AVX-512 machine, which the renderer targets:
/// one batch-2 (prompt + negative) UNet step on 64×64 latents (torch CPU fp32). The VAE's
/// and the other terms' are in [`crate::pipeline::cost`].
pub const UNET_STEP_SECS_AT_512: f64 = 7.4;
/// A ControlNet is the UNet's encoder and middle block: about 45 % of a UNet step.
const CONTROLNET_STEP_FRACTION: f64 = 0.45;
/// Self-attention's share of a UNet step at 512² (torch: ~0.43 s of 7.4 s), the part that
/// cross-frame attention makes longer.
const SELF_ATTENTION_STEP_FRACTION: f64 = 0.06;
/// One dense optical flow between two 512² frames (`cargo bench --bench flow`: median
/// 76 ms). A warped TemporalNet needs the flow to the previous frame; `flow_init` also the
/// reverse one, for its occlusion check.
const FLOW_SECS_AT_512: f64 = 0.08;
/// AnimateDiff v2's motion modules for SD1.5 (`mm_sd_v15_v2`: 1.82 GB in fp32).
const MOTION_MODULE_PARAMS: f64 = 453.2e6;
/// The motion modules' share on top of a UNet step: their attention runs across frames at
/// every latent pixel of the down/up levels.
const MOTION_STEP_FRACTION: f64 = 0.10;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Estimate {
    pub width: u32,
    pub height: u32,
    pub rendered_frames: usize,
    /// Model weights in memory.
    pub weights_bytes: u64,
    /// Frames, control maps and latents of the longest batch.
    pub batch_buffers_bytes: u64,
    /// Peak working memory of one denoising step / VAE decode.
    pub activations_bytes: u64,
    /// Cross-frame attention's cached keys/values (anchor and previous frame, every step).
    pub attention_cache_bytes: u64,
    pub peak_memory_bytes: u64,
    /// One frame without detailing: preprocessing, flow, the denoising steps with their
    /// ControlNets, the VAE (what `rotoscope bench`'s whole-frame cases measure).
    pub frame_seconds: f64,
    /// The face / hand detail pass per frame ([`DETAIL_FACES_PER_FRAME`] faces and
    /// [`DETAIL_HANDS_PER_FRAME`] hands where enabled).
    pub detail_seconds_per_frame: f64,
    /// `frame_seconds + detail_seconds_per_frame`.
    pub seconds_per_frame: f64,
    pub total_seconds: f64,
}

/// One ControlNet as the renderer runs it: the preset's `controlnets` and, when enabled,
/// `temporal.temporalnet` (which takes the previous output as its control image).
struct NetUse<'a> {
    model: &'a str,
    /// Fraction of the denoising steps it runs in (`end - start`).
    span: f64,
}

fn controlnets_of(preset: &Preset) -> Vec<NetUse<'_>> {
    let mut nets: Vec<NetUse> = preset
        .controlnets
        .iter()
        .map(|c| NetUse {
            model: &c.model,
            span: (c.end - c.start) as f64,
        })
        .collect();
    let t = &preset.temporal.temporalnet;
    if t.enabled {
        nets.push(NetUse {
            model: &t.model,
            span: (t.end - t.start) as f64,
        });
    }
    nets
}

/// Rough peak memory and render time of `plan` at `width`×`height` with `preset`, including
/// the temporal options: TemporalNet runs as one more ControlNet, cross-frame attention
/// caches keys/values and attends to more keys, `flow_init` starts frames after the first
/// from the warped previous output at its own strength, and both need the input's flow.
pub fn estimate(plan: &BatchPlan, preset: &Preset, width: u32, height: u32) -> Estimate {
    let pixel_ratio = (width as f64 * height as f64) / (512.0 * 512.0);
    let nets = controlnets_of(preset);
    let mut distinct_models: Vec<&str> = nets.iter().map(|n| n.model).collect();
    distinct_models.sort_unstable();
    distinct_models.dedup();

    let tiny_vae = names_taesd(preset.model.vae.as_deref());
    let weights = BYTES_PER_PARAM
        * (UNET_PARAMS
            + if tiny_vae { TAESD_PARAMS } else { VAE_PARAMS }
            + TEXT_ENCODER_PARAMS
            + distinct_models.len() as f64 * CONTROLNET_PARAMS);
    let frame_bytes = width as f64 * height as f64 * 3.0;
    let latent_bytes = (width as f64 / 8.0) * (height as f64 / 8.0) * 4.0 * 4.0;
    // Per batch frame: the source, one map per ControlNet, the output, and its latent.
    let per_frame = frame_bytes * (2.0 + nets.len() as f64) + latent_bytes;
    let batch_buffers = per_frame * plan.longest_batch() as f64;
    let activations = ACTIVATIONS_AT_512 * pixel_ratio;

    let sampler = &preset.sampler;
    let temporal = &preset.temporal;
    let guided = crate::diffusion::guidance::uses_cfg(sampler.cfg_scale as f64);
    // Frames after the first start from the warped previous output with flow_init.
    let strength = if temporal.flow_init.enabled {
        temporal.flow_init.strength
    } else {
        sampler.strength
    } as f64;
    let steps_run = denoise_steps(sampler.steps as usize, strength);
    let denoise_steps = steps_run as f64;
    let precision = precision_factor(preset.compute);
    let unet_step =
        UNET_STEP_SECS_AT_512 * pixel_ratio * guidance_factor(sampler.cfg_scale as f64) * precision;
    let deep_cache = deep_cache_factor(steps_run, preset.deep_cache.as_ref());
    let controlnet_steps: f64 = nets.iter().map(|n| (n.span * denoise_steps).round()).sum();

    let (latent_h, latent_w) = (height as usize / 8, width as usize / 8);
    let cross = &temporal.cross_frame_attention;
    let references = if cross.enabled {
        usize::from(cross.anchor) + usize::from(cross.previous)
    } else {
        0
    };
    let max_tokens = cross.max_reference_tokens.max(1) as usize;
    let attention_extra = SELF_ATTENTION_STEP_FRACTION
        * sd15_extra_attention_fraction(latent_h, latent_w, references, max_tokens);
    // Every step of the full schedule may be cached (the anchor runs all of them).
    let attention_cache = references
        * sampler.steps as usize
        * sd15_reference_bytes_per_step(latent_h, latent_w, if guided { 2 } else { 1 }, max_tokens);

    // AnimateDiff denoises a batch in overlapping context windows: frames in overlaps run
    // through the UNet once per window, and a window holds `context_length` frames at once.
    let (unet_passes, motion_weights, window_frames) = match &temporal.motion_module {
        Some(motion) => {
            let longest = plan.longest_batch().max(1);
            let windows = plan_windows(longest, &motion.context()).unwrap_or_default();
            let passes: usize = windows.iter().map(|w| w.len()).sum();
            (
                (passes as f64 / longest as f64) * (1.0 + MOTION_STEP_FRACTION),
                MOTION_MODULE_PARAMS * BYTES_PER_PARAM,
                motion.context_length.min(longest) as f64,
            )
        }
        None => (1.0, 0.0, 1.0),
    };
    let activations = activations * window_frames;

    let (vae_decode, vae_encode) = vae_secs_at_512(tiny_vae);
    let mut seconds_per_frame = deep_cache
        * (denoise_steps * unet_step * (1.0 + attention_extra) * unet_passes
            + controlnet_steps * unet_step * CONTROLNET_STEP_FRACTION * unet_passes)
        + vae_decode * pixel_ratio * precision;
    if strength < 1.0 {
        seconds_per_frame += vae_encode * pixel_ratio * precision;
    }
    seconds_per_frame += preprocess_secs_at_512(&preprocessed_maps(preset)) * pixel_ratio;
    let warped_temporalnet = temporal.temporalnet.enabled && temporal.temporalnet.warp;
    let flows = if temporal.flow_init.enabled {
        2.0
    } else if warped_temporalnet {
        1.0
    } else {
        0.0
    };
    seconds_per_frame += flows * FLOW_SECS_AT_512 * pixel_ratio;
    let detail_seconds_per_frame = detail_secs_per_frame(preset, tiny_vae, precision);
    let rendered_frames = plan.rendered_frames();
    let (weights_bytes, batch_buffers_bytes, activations_bytes, attention_cache_bytes) = (
        (weights + motion_weights) as u64,
        batch_buffers as u64,
        activations as u64,
        attention_cache as u64,
    );
    Estimate {
        width,
        height,
        rendered_frames,
        weights_bytes,
        batch_buffers_bytes,
        activations_bytes,
        attention_cache_bytes,
        peak_memory_bytes: weights_bytes
            + batch_buffers_bytes
            + activations_bytes
            + attention_cache_bytes,
        frame_seconds: seconds_per_frame,
        detail_seconds_per_frame,
        seconds_per_frame: seconds_per_frame + detail_seconds_per_frame,
        total_seconds: (seconds_per_frame + detail_seconds_per_frame) * rendered_frames as f64,
    }
}

/// The maps the preprocessors make for `preset`: its ControlNets' maps, and the pose when
/// detailing needs the keypoints.
fn preprocessed_maps(preset: &Preset) -> Vec<ControlKind> {
    let mut maps: Vec<ControlKind> = preset.controlnets.iter().map(|c| c.kind).collect();
    if preset.detail.any_enabled() {
        maps.push(ControlKind::Openpose);
    }
    maps.sort_by_key(|k| k.as_str());
    maps.dedup();
    maps
}

/// The detail pass per frame: each enabled part's regions, hands with the openpose
/// ControlNet when the preset has one and `hands.controlnet` asks for it.
fn detail_secs_per_frame(preset: &Preset, tiny_vae: bool, precision: f64) -> f64 {
    let (vae_decode, vae_encode) = vae_secs_at_512(tiny_vae);
    let costs = DetailCosts {
        unet_step: UNET_STEP_SECS_AT_512,
        controlnet_fraction: CONTROLNET_STEP_FRACTION,
        vae_decode,
        vae_encode,
        precision,
    };
    let detail = &preset.detail;
    let has_openpose = preset
        .controlnets
        .iter()
        .any(|c| c.kind == ControlKind::Openpose);
    let deep_cache = preset.deep_cache.as_ref();
    let mut seconds = 0.0;
    if detail.face.enabled {
        seconds += DETAIL_FACES_PER_FRAME * detail_region_secs(&detail.face, false, deep_cache, &costs);
    }
    if detail.hands.enabled {
        let with_net = detail.hands.controlnet && has_openpose;
        seconds +=
            DETAIL_HANDS_PER_FRAME * detail_region_secs(&detail.hands, with_net, deep_cache, &costs);
    }
    seconds
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(plan: &BatchPlan) -> Vec<(usize, usize)> {
        plan.batches.iter().map(|b| (b.start, b.end)).collect()
    }

    /// Every frame covered, in order, neighbours sharing exactly `overlap` frames, no batch
    /// over the limit.
    fn assert_well_formed(total: usize, frames: usize, overlap: usize) {
        let plan = plan_batches(total, frames, overlap).unwrap();
        if total == 0 {
            assert!(plan.batches.is_empty());
            return;
        }
        let b = &plan.batches;
        assert_eq!(b[0].start, 0);
        assert_eq!(b.last().unwrap().end, total);
        for (i, batch) in b.iter().enumerate() {
            assert_eq!(batch.index, i);
            assert!(
                batch.len() <= frames,
                "{total}/{frames}/{overlap}: {batch:?}"
            );
            assert!(
                batch.len() > batch.overlap_with_previous,
                "batch adds no new frame"
            );
        }
        for pair in b.windows(2) {
            assert_eq!(pair[0].end - pair[1].start, overlap);
            assert_eq!(pair[0].overlap_with_next, overlap);
            assert_eq!(pair[1].overlap_with_previous, overlap);
        }
        let lens: Vec<_> = b.iter().map(Batch::len).collect();
        assert!(
            lens.iter().max().unwrap() - lens.iter().min().unwrap() <= 1,
            "{lens:?}"
        );
        // Fewest batches: one fewer could not cover the clip.
        if b.len() > 1 {
            assert!(frames + (b.len() - 2) * (frames - overlap) < total);
        }
    }

    #[test]
    fn zero_frames_give_an_empty_plan() {
        let plan = plan_batches(0, 96, 10).unwrap();
        assert!(plan.batches.is_empty());
        assert_eq!(plan.rendered_frames(), 0);
        assert_eq!(plan.longest_batch(), 0);
    }

    #[test]
    fn clip_shorter_than_a_batch_is_one_batch_without_overlap() {
        let plan = plan_batches(5, 96, 10).unwrap();
        assert_eq!(ranges(&plan), vec![(0, 5)]);
        assert_eq!(plan.batches[0].overlap_with_previous, 0);
        assert_eq!(plan.batches[0].overlap_with_next, 0);
        // Shorter than the overlap itself, and exactly one batch long.
        assert_eq!(ranges(&plan_batches(3, 96, 10).unwrap()), vec![(0, 3)]);
        assert_eq!(ranges(&plan_batches(96, 96, 10).unwrap()), vec![(0, 96)]);
    }

    #[test]
    fn one_frame_over_a_batch_splits_evenly() {
        // 97 frames, 10 shared: 107 slots over 2 batches.
        assert_eq!(
            ranges(&plan_batches(97, 96, 10).unwrap()),
            vec![(0, 54), (44, 97)]
        );
    }

    #[test]
    fn long_clip_uses_the_fewest_even_batches() {
        let plan = plan_batches(1000, 96, 10).unwrap();
        // ceil(990 / 86) = 12 batches.
        assert_eq!(plan.batches.len(), 12);
        assert_eq!(plan.rendered_frames(), 1000 + 11 * 10);
        assert_eq!(plan.longest_batch(), 93);
    }

    #[test]
    fn overlap_must_be_smaller_than_the_batch() {
        assert_eq!(
            plan_batches(100, 10, 10),
            Err(PlanError::OverlapTooLarge {
                overlap: 10,
                frames: 10
            })
        );
        assert_eq!(
            plan_batches(100, 10, 25),
            Err(PlanError::OverlapTooLarge {
                overlap: 25,
                frames: 10
            })
        );
    }

    #[test]
    fn batch_size_limits() {
        assert_eq!(plan_batches(100, 0, 0), Err(PlanError::ZeroBatchFrames));
        assert_eq!(
            plan_batches(100, 200, 10),
            Err(PlanError::BatchTooLarge { frames: 200 })
        );
        assert!(plan_batches(400, 199, 10).is_ok());
    }

    #[test]
    fn no_overlap_and_largest_overlap() {
        assert_eq!(
            ranges(&plan_batches(10, 4, 0).unwrap()),
            vec![(0, 4), (4, 7), (7, 10)]
        );
        // overlap = frames - 1: every batch adds exactly one new frame.
        let plan = plan_batches(6, 3, 2).unwrap();
        assert_eq!(ranges(&plan), vec![(0, 3), (1, 4), (2, 5), (3, 6)]);
    }

    #[test]
    fn plans_are_well_formed_across_sizes() {
        for total in 0..260 {
            for (frames, overlap) in [(1, 0), (2, 1), (7, 3), (16, 4), (96, 10), (199, 198)] {
                assert_well_formed(total, frames, overlap);
            }
        }
    }

    #[test]
    fn estimate_counts_overlaps_and_controlnets() {
        let preset = Preset::from_yaml(
            "model: {base: m}\nprompt: p\nsampler: {steps: 20, cfg_scale: 7, strength: 1.0}\n\
             controlnets:\n  - {type: openpose, model: a}\n  - {type: softedge, model: b, end: 0.5}\n",
            "t",
        )
        .unwrap();
        let plan = plan_batches(200, 96, 10).unwrap();
        let e = estimate(&plan, &preset, 512, 512);
        assert_eq!(e.rendered_frames, 220);
        // 20 UNet steps + 20 + 10 ControlNet steps + one VAE decode + pose and HED.
        let expected = 20.0 * 7.4 + 30.0 * 7.4 * 0.45 + 11.0 + 0.016 + 0.77;
        assert!((e.seconds_per_frame - expected).abs() < 1e-9);
        assert!((e.total_seconds - expected * 220.0).abs() < 1e-6);
        let weights = 4.0 * (859.52e6 + 83.65e6 + 123.06e6 + 2.0 * 361.28e6);
        assert_eq!(e.weights_bytes, weights as u64);
        assert_eq!(e.attention_cache_bytes, 0);
        assert_eq!(
            e.peak_memory_bytes,
            e.weights_bytes + e.batch_buffers_bytes + e.activations_bytes
        );
        // Twice the pixels: twice the time per step.
        let wide = estimate(&plan, &preset, 1024, 512);
        assert!((wide.seconds_per_frame - 2.0 * expected).abs() < 1e-9);
    }

    #[test]
    fn estimate_includes_the_temporal_options() {
        let base =
            "model: {base: m}\nprompt: p\nsampler: {steps: 20, cfg_scale: 7, strength: 1.0}\n\
                    controlnets:\n  - {type: openpose, model: a}\n";
        let plain = Preset::from_yaml(base, "t").unwrap();
        let temporal = Preset::from_yaml(
            &format!(
                "{base}temporal:\n  temporalnet: {{enabled: true, model: tn, warp: true}}\n  \
                 cross_frame_attention: {{enabled: true}}\n  flow_init: {{enabled: true, strength: 0.5}}\n"
            ),
            "t",
        )
        .unwrap();
        let plan = plan_batches(100, 96, 10).unwrap();
        let p = estimate(&plan, &plain, 512, 512);
        let t = estimate(&plan, &temporal, 512, 512);
        // TemporalNet is one more ControlNet model in memory.
        assert_eq!(t.weights_bytes - p.weights_bytes, (4.0 * 361.28e6) as u64);
        // Anchor + previous, 20 steps, 53 MB per step each (see cross_frame).
        let per_step = sd15_reference_bytes_per_step(64, 64, 2, 1024) as u64;
        assert_eq!(t.attention_cache_bytes, 2 * 20 * per_step);
        assert!(t.attention_cache_bytes > 2_000_000_000);
        // flow_init at 0.5: 10 steps (+ VAE encode, flow both ways), each with two ControlNets and
        // longer attention; cheaper than 20 plain steps.
        let unet = 7.4;
        let extra = 0.06 * sd15_extra_attention_fraction(64, 64, 2, 1024);
        let expected =
            10.0 * unet * (1.0 + extra) + 20.0 * unet * 0.45 + 11.0 + 5.5 + 2.0 * 0.08 + 0.016;
        assert!(
            (t.seconds_per_frame - expected).abs() < 1e-9,
            "{}",
            t.seconds_per_frame
        );
        assert!(t.seconds_per_frame < p.seconds_per_frame);
    }

    /// The bundled fast preset: few img2img steps, DeepCache, cfg 1.5, TAESD, bf16, detail.
    #[test]
    fn estimate_of_the_fast_preset_counts_each_fast_path_term() {
        use crate::pipeline::cost::*;
        let preset = Preset::resolve(std::path::Path::new("anime-fast")).unwrap();
        let plan = plan_batches(72, 96, 10).unwrap();
        let e = estimate(&plan, &preset, 512, 512);
        // flow_init 0.7 of 6 LCM steps: int(4.2) = 4 steps, full / shallow alternating.
        let steps = 4.0;
        let cache = deep_cache_factor(4, preset.deep_cache.as_ref());
        assert!(cache < 0.6);
        let unet = 7.4 * BF16_STEP_FACTOR;
        // openpose on all 4 steps, softedge (end 0.8) on round(3.2) = 3.
        let denoise = cache * (steps * unet + 7.0 * unet * 0.45);
        let vae = (TAESD_DECODE_SECS_AT_512 + TAESD_ENCODE_SECS_AT_512) * BF16_STEP_FACTOR;
        let expected = denoise + vae + POSE_SECS_AT_512 + HED_SECS_AT_512 + 2.0 * 0.08;
        assert!((e.frame_seconds - expected).abs() < 1e-9, "{} vs {expected}", e.frame_seconds);
        // Detail: one face (int(4 × 0.4) = 1 step), two hands (2 steps with the openpose net),
        // each with a TAESD encode + decode; faces and hands at cfg 7 (their default).
        let face = 1.0 * unet * 1.0 + vae;
        let hand_cache = deep_cache_factor(2, preset.deep_cache.as_ref());
        let hand = 2.0 * unet * 1.45 * hand_cache + vae;
        assert!((e.detail_seconds_per_frame - (face + 2.0 * hand)).abs() < 1e-9);
        assert!((e.seconds_per_frame - (e.frame_seconds + e.detail_seconds_per_frame)).abs() < 1e-12);
        // TAESD in memory instead of the KL VAE.
        let weights = 4.0 * (859.52e6 + 2.45e6 + 123.06e6 + 2.0 * 361.28e6);
        assert_eq!(e.weights_bytes, weights as u64);
    }

    #[test]
    fn estimate_without_guidance_halves_the_step() {
        let yaml = |cfg: f32| {
            format!("model: {{base: m}}\nprompt: p\nsampler: {{steps: 4, cfg_scale: {cfg}, strength: 1.0}}\n")
        };
        let plan = plan_batches(10, 96, 10).unwrap();
        let guided = estimate(&plan, &Preset::from_yaml(&yaml(2.0), "t").unwrap(), 512, 512);
        let plain = estimate(&plan, &Preset::from_yaml(&yaml(1.0), "t").unwrap(), 512, 512);
        assert!((guided.frame_seconds - (4.0 * 7.4 + 11.0)).abs() < 1e-9);
        assert!((plain.frame_seconds - (4.0 * 3.7 + 11.0)).abs() < 1e-9);
        assert_eq!(plain.detail_seconds_per_frame, 0.0);
    }

    #[test]
    fn estimate_includes_animatediff_windows() {
        let base =
            "model: {base: m}\nprompt: p\nsampler: {steps: 20, cfg_scale: 7, strength: 1.0}\n\
                    batch: {frames: 28, overlap: 4}\n";
        let plain = Preset::from_yaml(base, "t").unwrap();
        let motion = Preset::from_yaml(
            &format!("{base}temporal:\n  motion_module: {{path: mm}}\n"),
            "t",
        )
        .unwrap();
        let plan = plan_batches(28, 28, 4).unwrap();
        let p = estimate(&plan, &plain, 512, 512);
        let m = estimate(&plan, &motion, 512, 512);
        // 28 frames in windows of 16 sharing 4: 0..16 and 12..28, 32 frame passes.
        let unet = 20.0 * 7.4;
        let expected = unet * (32.0 / 28.0) * 1.1 + 11.0;
        assert!(
            (m.seconds_per_frame - expected).abs() < 1e-9,
            "{}",
            m.seconds_per_frame
        );
        assert!((p.seconds_per_frame - (unet + 11.0)).abs() < 1e-9);
        assert_eq!(m.weights_bytes - p.weights_bytes, (4.0 * 453.2e6) as u64);
        // A window of 16 frames is in the UNet at once.
        assert_eq!(m.activations_bytes, 16 * p.activations_bytes);
    }
}
