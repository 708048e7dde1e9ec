//! Our side of each benchmark case, run inside the `bench --child CASE` process.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use candle_core::Tensor;
use image::RgbImage;

use super::{peak_rss_bytes, BenchCase, BenchError, BenchOptions, Measurement, Result};
use crate::bench::unet::{random_sd15_unet, random_var_builder, SD15_UNET_CONFIG};
use crate::models::controlnet::{ControlNetConfig, ControlNetModel};
use crate::models::unet::deep_cache::{CacheBranch, DeepCacheCall};
use crate::models::unet::{UNet2DConditionModel, UNetExtras};
use crate::models::autoencoder_tiny::AutoencoderTinyConfig;
use crate::models::vae::{AnyVaeConfig, AutoencoderKL, Vae, VaeConfig};
use crate::nn::precision::{with_weight_precision, WeightPrecision};
use crate::preprocess::pose::{PoseEstimator, PoseSettings, PoseTracker, TrackingStats};
use crate::preprocess::softedge::Hed;
use crate::video::VideoReader;

/// diffusers' SD1.5 ControlNet config (`control_v11p_sd15_*`): the UNet's down path plus the
/// conditioning embedding for 512² control images.
const SD15_CONTROLNET_FIELDS: &str = r#"{
  "conditioning_channels": 3,
  "conditioning_embedding_out_channels": [16, 32, 96, 256],
  "controlnet_conditioning_channel_order": "rgb"
}"#;

/// Frames timed by the pose case per requested run (per-frame times are short and vary with
/// tracking: detections happen on some frames only).
const POSE_FRAMES_PER_RUN: usize = 8;

fn model_error<E: std::error::Error + Send + Sync + 'static>(
    case: BenchCase,
) -> impl FnOnce(E) -> BenchError {
    move |e| BenchError::Model {
        case: case.name(),
        source: Box::new(e),
    }
}

/// Times `step` `runs` times after one warm-up call.
fn time_runs<E>(
    runs: usize,
    mut step: impl FnMut() -> std::result::Result<(), E>,
) -> std::result::Result<Vec<f64>, E> {
    step()?;
    let mut seconds = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        step()?;
        seconds.push(start.elapsed().as_secs_f64());
    }
    Ok(seconds)
}

/// Runs one case in this process and measures it (the peak RSS is this process's).
pub fn run_case(case: BenchCase, options: &BenchOptions) -> Result<Measurement> {
    let runs = options.runs.max(1);
    let err = || model_error::<candle_core::Error>(case);
    let unet_err = || model_error::<crate::models::unet::UNetError>(case);
    let dev = crate::device::host();
    let mut per_frame_runs = Vec::new();
    let (seconds, reference) = match case {
        BenchCase::Unet32 | BenchCase::Unet64 | BenchCase::Unet64Bf16 => {
            let size = if case == BenchCase::Unet32 { 32 } else { 64 };
            let precision = if case == BenchCase::Unet64Bf16 {
                WeightPrecision::Bf16
            } else {
                WeightPrecision::F32
            };
            let unet = with_weight_precision(precision, random_sd15_unet).map_err(unet_err())?;
            let (sample, ehs) = unet_inputs(&unet, size).map_err(err())?;
            let seconds = time_runs(runs, || {
                unet.forward(&sample, 500.0, &ehs, &UNetExtras::default())
                    .map(drop)
            })
            .map_err(unet_err())?;
            let what = match precision {
                WeightPrecision::F32 => "rotoscope UNet2DConditionModel",
                WeightPrecision::Bf16 => "rotoscope UNet2DConditionModel, bf16 weights",
            };
            (seconds, what.to_string())
        }
        BenchCase::ControlNet64 => {
            let unet = random_sd15_unet().map_err(unet_err())?;
            let controlnet = random_sd15_controlnet().map_err(unet_err())?;
            let (sample, ehs) = unet_inputs(&unet, 64).map_err(err())?;
            let cond = Tensor::rand(0f32, 1.0, (2, 3, 512, 512), &dev).map_err(err())?;
            let seconds = time_runs(runs, || {
                let residuals = controlnet.forward(&sample, 500.0, &ehs, &cond, 1.0, false)?;
                let extras = UNetExtras {
                    down_residuals: Some(&residuals.down_residuals),
                    mid_residual: Some(&residuals.mid_residual),
                    ..Default::default()
                };
                unet.forward(&sample, 500.0, &ehs, &extras).map(drop)
            })
            .map_err(unet_err())?;
            (
                seconds,
                "rotoscope ControlNetModel + UNet2DConditionModel".to_string(),
            )
        }
        BenchCase::DeepCache64 => {
            let unet = random_sd15_unet().map_err(unet_err())?;
            let controlnet = random_sd15_controlnet().map_err(unet_err())?;
            let (sample, ehs) = unet_inputs(&unet, 64).map_err(err())?;
            let cond = Tensor::rand(0f32, 1.0, (2, 3, 512, 512), &dev).map_err(err())?;
            let branch = CacheBranch::from_id(0);
            // The refresh step that keeps the features (not timed).
            let residuals = controlnet
                .forward(&sample, 500.0, &ehs, &cond, 1.0, false)
                .map_err(unet_err())?;
            let extras = UNetExtras {
                down_residuals: Some(&residuals.down_residuals),
                mid_residual: Some(&residuals.mid_residual),
                ..Default::default()
            };
            let (_, features) = unet
                .forward_cached(
                    &sample,
                    500.0,
                    &ehs,
                    &extras,
                    Some(DeepCacheCall::Refresh(branch)),
                )
                .map_err(unet_err())?;
            let features = features.ok_or_else(|| BenchError::Model {
                case: case.name(),
                source: "the refresh step kept no features".into(),
            })?;
            let count = unet.shallow_skip_count(branch).map_err(unet_err())?;
            let seconds = time_runs(runs, || {
                let down =
                    controlnet.forward_shallow(&sample, 499.0, &ehs, &cond, 1.0, false, count)?;
                let extras = UNetExtras {
                    down_residuals: Some(&down),
                    ..Default::default()
                };
                let call = DeepCacheCall::Reuse {
                    branch,
                    features: &features,
                };
                unet.forward_cached(&sample, 499.0, &ehs, &extras, Some(call))
                    .map(drop)
            })
            .map_err(unet_err())?;
            (
                seconds,
                "rotoscope ControlNetModel (shallow) + UNet2DConditionModel (DeepCache)"
                    .to_string(),
            )
        }
        BenchCase::VaeEncode | BenchCase::VaeDecode => {
            let vae = AutoencoderKL::load(random_var_builder(), &VaeConfig::sd15())
                .map_err(model_error::<crate::models::vae::VaeError>(case))?;
            let seconds = if case == BenchCase::VaeEncode {
                let image = Tensor::rand(-1f32, 1.0, (1, 3, 512, 512), &dev).map_err(err())?;
                time_runs(runs, || vae.encode(&image).map(drop))
            } else {
                let latents = Tensor::randn(0f32, 1.0, (1, 4, 64, 64), &dev).map_err(err())?;
                time_runs(runs, || vae.decode(&latents).map(drop))
            }
            .map_err(err())?;
            (seconds, "rotoscope AutoencoderKL".to_string())
        }
        BenchCase::TaesdEncode | BenchCase::TaesdDecode => {
            // Through `Vae`, as the render runs it.
            let vae = Vae::load(
                random_var_builder(),
                &AnyVaeConfig::Tiny(AutoencoderTinyConfig::taesd()),
            )
            .map_err(model_error::<crate::models::vae::VaeError>(case))?;
            let seconds = if case == BenchCase::TaesdEncode {
                let image = Tensor::rand(-1f32, 1.0, (1, 3, 512, 512), &dev).map_err(err())?;
                time_runs(runs, || vae.encode(&image).map(drop))
            } else {
                let latents = Tensor::randn(0f32, 1.0, (1, 4, 64, 64), &dev).map_err(err())?;
                time_runs(runs, || vae.decode(&latents).map(drop))
            }
            .map_err(err())?;
            (seconds, "rotoscope AutoencoderTiny (TAESD)".to_string())
        }
        BenchCase::Hed => {
            let path = options.models_dir.join("hed").join("hed.safetensors");
            if !path.is_file() {
                return Err(BenchError::MissingModel {
                    case: case.name(),
                    path,
                });
            }
            let hed = Hed::load(&path).map_err(model_error(case))?;
            let frame = clip_frames(case, &options.clip, 1)?.0.remove(0);
            let (w, h) = frame.dimensions();
            let seconds = time_runs(runs, || {
                hed.edges(w as usize, h as usize, frame.as_raw()).map(drop)
            })
            .map_err(model_error(case))?;
            (seconds, "rotoscope HED (VGG16, candle)".to_string())
        }
        BenchCase::Pose => {
            let dir = options
                .models_dir
                .join(crate::preprocess::pose::stage::MEDIAPIPE_DIR);
            let settings = PoseSettings::default();
            let estimator = PoseEstimator::new(&dir, &settings).map_err(|e| match e {
                crate::preprocess::pose::PoseError::MissingModels { .. } => {
                    BenchError::MissingModel {
                        case: case.name(),
                        path: dir.clone(),
                    }
                }
                other => model_error(case)(other),
            })?;
            let wanted = 1 + (runs * POSE_FRAMES_PER_RUN);
            let (frames, fps) = clip_frames(case, &options.clip, wanted)?;
            let mut tracker = PoseTracker::new(Arc::new(estimator), fps);
            // The first frame detects everything from scratch: the warm-up.
            tracker.next(&frames[0]).map_err(model_error(case))?;
            let before = tracker.stats();
            let mut seconds = Vec::with_capacity(frames.len() - 1);
            for frame in &frames[1..] {
                let start = Instant::now();
                tracker.next(frame).map_err(model_error(case))?;
                seconds.push(start.elapsed().as_secs_f64());
            }
            per_frame_runs = runs_per_frame(&before, &tracker.stats());
            (
                seconds,
                "rotoscope MediaPipe (tflite in candle) with tracking".to_string(),
            )
        }
        // Minutes per frame for anime: no separate warm-up (the untimed first frame is one).
        BenchCase::FrameAnime | BenchCase::FrameFast => {
            super::frame::run_frames(case, options, runs)?
        }
    };
    Ok(Measurement {
        case: case.name().to_string(),
        seconds,
        peak_rss_bytes: peak_rss_bytes().unwrap_or(0),
        reference,
        per_frame_runs,
        ..Default::default()
    })
}

/// A random batch-2 latent at `size`² and 77 random text tokens.
fn unet_inputs(unet: &UNet2DConditionModel, size: usize) -> candle_core::Result<(Tensor, Tensor)> {
    let dev = crate::device::host();
    let sample = Tensor::randn(0f32, 1.0, (2, unet.config().in_channels, size, size), &dev)?;
    let ehs = Tensor::randn(0f32, 1.0, (2, 77, 768), &dev)?;
    Ok((sample, ehs))
}

/// The SD1.5 ControlNet with random detached weights.
pub fn random_sd15_controlnet() -> crate::models::unet::Result<ControlNetModel> {
    let parse = |text: &str| {
        serde_json::from_str::<serde_json::Value>(text).map_err(|source| {
            crate::models::unet::UNetError::ConfigParse {
                path: "<built-in SD1.5 ControlNet config>".into(),
                source,
            }
        })
    };
    let mut config = parse(SD15_UNET_CONFIG)?;
    if let (Some(all), serde_json::Value::Object(extra)) =
        (config.as_object_mut(), parse(SD15_CONTROLNET_FIELDS)?)
    {
        all.extend(extra);
    }
    let config = ControlNetConfig::from_json(&config)?;
    ControlNetModel::load(random_var_builder(), &config)
}

/// The first `count` frames of `clip` (fewer if it is shorter) and its frame rate.
fn clip_frames(case: BenchCase, clip: &Path, count: usize) -> Result<(Vec<RgbImage>, f64)> {
    let reader = VideoReader::open(clip).map_err(model_error(case))?;
    let fps = reader.info().fps.as_f64();
    let mut frames = Vec::with_capacity(count);
    for frame in reader.take(count) {
        let frame = frame.map_err(model_error(case))?;
        if let Some(image) = frame.into_rgb_image() {
            frames.push(image);
        }
    }
    if frames.len() < 2.min(count) {
        return Err(BenchError::NoFrames {
            case: case.name(),
            path: clip.to_path_buf(),
        });
    }
    Ok((frames, fps))
}

/// Model invocations per frame between two snapshots of the tracker's counters, by the
/// `.tflite` file each count belongs to.
pub fn runs_per_frame(before: &TrackingStats, after: &TrackingStats) -> Vec<(String, f64)> {
    use crate::preprocess::pose::detector::DetectorKind;
    use crate::preprocess::pose::{body, face, hands};
    let frames = after.frames.saturating_sub(before.frames).max(1) as f64;
    let rate = |a: u64, b: u64| a.saturating_sub(b) as f64 / frames;
    vec![
        (
            DetectorKind::Person.file_name().into(),
            rate(after.person_detections, before.person_detections),
        ),
        (
            body::MODEL_FILE.into(),
            rate(after.body_landmark_runs, before.body_landmark_runs),
        ),
        (
            DetectorKind::Palm.file_name().into(),
            rate(after.palm_detections, before.palm_detections),
        ),
        (
            hands::MODEL_FILE.into(),
            rate(after.hand_landmark_runs, before.hand_landmark_runs),
        ),
        (
            DetectorKind::Face.file_name().into(),
            rate(after.face_detections, before.face_detections),
        ),
        (
            face::MODEL_FILE.into(),
            rate(after.face_landmark_runs, before.face_landmark_runs),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_per_frame_divides_the_difference_by_frames() {
        let before = TrackingStats {
            frames: 1,
            person_detections: 1,
            body_landmark_runs: 1,
            hand_landmark_runs: 2,
            ..Default::default()
        };
        let after = TrackingStats {
            frames: 5,
            person_detections: 1,
            palm_detections: 2,
            body_landmark_runs: 5,
            hand_landmark_runs: 10,
            face_landmark_runs: 4,
            ..Default::default()
        };
        let rates = runs_per_frame(&before, &after);
        let get = |name: &str| rates.iter().find(|(n, _)| n == name).unwrap().1;
        assert_eq!(get("pose_detection.tflite"), 0.0);
        assert_eq!(get("pose_landmark_full.tflite"), 1.0);
        assert_eq!(get("palm_detection_full.tflite"), 0.5);
        assert_eq!(get("hand_landmark_full.tflite"), 2.0);
        assert_eq!(get("face_landmark.tflite"), 1.0);
    }
}
