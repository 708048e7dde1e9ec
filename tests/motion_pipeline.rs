//! AnimateDiff video generation against diffusers (fixtures from scripts/fixtures/motion.py):
//! `AnimateDiffVideoToVideoControlNetPipeline` and `AnimateDiffControlNetPipeline` on the
//! tiny pipeline models with a tiny MotionAdapter, with one and two ControlNets. Cases with
//! context windows compare against the same diffusers pipeline whose UNet call is replaced by
//! the fixture's `WindowedUNet` (the real UNetMotionModel on each window, outputs averaged
//! per frame). Same latents after every step (relative error <= 1e-4) and the same frames
//! (max abs error <= 1e-3 on [0, 1]).

mod tensor_common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use image::RgbImage;
use rotoscope::diffusion::image_pipeline::{GenerationSettings, StableDiffusion};
use rotoscope::diffusion::schedulers::{self, SamplerOptions, TimestepSpacing};
use rotoscope::diffusion::{
    decode_video, generate_video_latents, VideoControl, VideoInit, VideoRequest,
};
use rotoscope::loaders::model_stack::{load_controlnet, ModelStackSpec};
use rotoscope::loaders::source::HubOptions;
use rotoscope::models::controlnet::ControlNetModel;
use rotoscope::models::motion::{MotionLoadOptions, MotionModuleFiles, MotionModules};
use rotoscope::preset::motion::ContextOptions;
use rotoscope::preset::motion::ContextWeighting;
use rotoscope::preset::SchedulerKind;

use tensor_common::{max_abs, max_abs_diff};

#[derive(serde::Deserialize)]
struct Cases {
    cases: Vec<Case>,
}

#[derive(serde::Deserialize)]
struct Case {
    name: String,
    pipeline: String,
    scheduler: String,
    frames: usize,
    steps: usize,
    strength: f64,
    guidance: f64,
    seed: u64,
    prompt: String,
    negative_prompt: String,
    width: usize,
    height: usize,
    context: Option<Context>,
    controls: Vec<Control>,
}

#[derive(serde::Deserialize)]
struct Context {
    length: usize,
    overlap: usize,
    weighting: ContextWeighting,
}

#[derive(serde::Deserialize)]
struct Control {
    model: String,
    frames: String,
    scale: f64,
    start: f64,
    end: f64,
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn frames(prefix: &str, n: usize) -> Vec<RgbImage> {
    (0..n)
        .map(|i| {
            image::open(fixtures().join(format!("motion/{prefix}_{i:02}.png")))
                .unwrap()
                .to_rgb8()
        })
        .collect()
}

struct Models {
    sd: StableDiffusion,
    controlnets: HashMap<String, ControlNetModel>,
    motion: MotionModules,
}

fn load_models() -> Models {
    let device = Device::Cpu;
    let dir = fixtures().join("pipeline");
    let hub = HubOptions::from_env(false);
    let sd =
        StableDiffusion::load(&ModelStackSpec::new(dir.to_string_lossy()), &hub, &device).unwrap();
    let mut controlnets = HashMap::new();
    for name in ["controlnet_a", "controlnet_b"] {
        let source = dir.join(name).to_string_lossy().into_owned();
        let model = load_controlnet(&source, None, None, &hub, &device).unwrap();
        controlnets.insert(name.to_string(), model);
    }
    let adapter = fixtures().join("motion/adapter_v2");
    let motion_files = MotionModuleFiles {
        weights: adapter.join("diffusion_pytorch_model.fp16.safetensors"),
        config: Some(adapter.join("config.json")),
    };
    let motion = MotionModules::load_files(
        &motion_files,
        sd.unet.config(),
        &device,
        &MotionLoadOptions::default(),
    )
    .unwrap();
    Models {
        sd,
        controlnets,
        motion,
    }
}

/// Final latents, the latents after every step, and the decoded frames `(F, H, W, 3)`.
fn run(models: &Models, case: &Case, context: ContextOptions) -> (Vec<Tensor>, Tensor) {
    let (steps, _, frames) = run_with(models, case, context, SamplerOptions::default());
    (steps, frames)
}

/// [`run`] with the preset's sampler `options`; also the timestep of every step.
fn run_with(
    models: &Models,
    case: &Case,
    context: ContextOptions,
    options: SamplerOptions,
) -> (Vec<Tensor>, Vec<f64>, Tensor) {
    let settings = GenerationSettings {
        prompt: case.prompt.clone(),
        negative_prompt: case.negative_prompt.clone(),
        width: case.width,
        height: case.height,
        steps: case.steps,
        guidance_scale: case.guidance,
        scheduler: SchedulerKind::from_name(&case.scheduler).unwrap(),
        options,
        seed: case.seed,
        deep_cache: None,
    };
    let control_frames: Vec<Vec<RgbImage>> = case
        .controls
        .iter()
        .map(|c| frames(&c.frames, case.frames))
        .collect();
    let controls: Vec<VideoControl> = case
        .controls
        .iter()
        .zip(&control_frames)
        .map(|(c, images)| VideoControl {
            model: &models.controlnets[&c.model],
            frames: images,
            scale: c.scale,
            start: c.start,
            end: c.end,
            guess_mode: false,
        })
        .collect();
    let video = frames("video", case.frames);
    let init = match case.pipeline.as_str() {
        "video2video" => VideoInit::Video {
            frames: &video,
            strength: case.strength,
        },
        "text2video" => VideoInit::Noise,
        other => panic!("unknown pipeline {other}"),
    };
    let request = VideoRequest {
        settings: &settings,
        frames: case.frames,
        init,
        controls: &controls,
        context,
        text: None,
        stop: None,
    };
    let mut steps = Vec::new();
    let mut timesteps = Vec::new();
    let latents = generate_video_latents(&models.sd, &models.motion, &request, &mut |p| {
        steps.push(p.latents.clone());
        timesteps.push(p.timestep);
    })
    .unwrap_or_else(|e| panic!("{}: {e}", case.name));
    let mut images = Vec::new();
    decode_video(&models.sd, &latents, &mut |_, image| {
        images.push(image.permute((0, 2, 3, 1)).unwrap());
        Ok(())
    })
    .unwrap();
    (steps, timesteps, Tensor::cat(&images, 0).unwrap())
}

#[test]
fn animatediff_pipelines_match_diffusers() {
    let device = Device::Cpu;
    let root = fixtures().join("motion");
    let cases: Cases =
        serde_json::from_str(&std::fs::read_to_string(root.join("cases.json")).unwrap()).unwrap();
    let reference =
        candle_core::safetensors::load(root.join("reference.safetensors"), &device).unwrap();
    let models = load_models();
    assert!(cases.cases.len() >= 4);
    let mut report = Vec::new();
    for case in &cases.cases {
        let context = match &case.context {
            Some(c) => ContextOptions {
                length: c.length,
                overlap: c.overlap,
                weighting: c.weighting,
            },
            // diffusers without windows: the whole batch is one window.
            None => ContextOptions::default(),
        };
        assert!(case.context.is_some() || case.frames <= context.length);
        let (steps, frames) = run(&models, case, context);
        let mut worst_latent = 0f32;
        for (i, ours) in steps.iter().enumerate() {
            let expected = &reference[&format!("{}.latents.{i}", case.name)];
            let err = max_abs_diff(ours, expected) / max_abs(expected).max(1.0);
            worst_latent = worst_latent.max(err);
            assert!(
                err <= 1e-4,
                "{}: latents after step {i}: relative error {err}",
                case.name
            );
        }
        assert!(
            !reference.contains_key(&format!("{}.latents.{}", case.name, steps.len())),
            "{}: diffusers ran more steps than rotoscope ({})",
            case.name,
            steps.len()
        );
        let expected = &reference[&format!("{}.frames", case.name)];
        let frame_err = max_abs_diff(&frames, expected);
        assert!(
            frame_err <= 1e-3,
            "{}: frames max abs error {frame_err}",
            case.name
        );
        report.push(format!(
            "{}: {} frames, {} steps, latents rel err {worst_latent:.1e}, frames max abs err {frame_err:.1e}",
            case.name,
            case.frames,
            steps.len()
        ));
    }
    eprintln!("{}", report.join("\n"));
}

/// Windowing proves itself apart from diffusers too: a single window covering the batch is
/// exactly the plain run, and windows change the result (so the windowed cases above test
/// the averaging, not a no-op).
#[test]
fn one_window_is_the_plain_run_and_windows_change_it() {
    let root = fixtures().join("motion");
    let cases: Cases =
        serde_json::from_str(&std::fs::read_to_string(root.join("cases.json")).unwrap()).unwrap();
    let case = cases
        .cases
        .iter()
        .find(|c| c.name == "v2v_ddim_flat")
        .unwrap();
    let models = load_models();
    let whole = ContextOptions {
        length: case.frames,
        overlap: 0,
        weighting: ContextWeighting::Pyramid,
    };
    let longer = ContextOptions {
        length: 32,
        overlap: 4,
        weighting: ContextWeighting::Flat,
    };
    let (_, a) = run(&models, case, whole);
    let (_, b) = run(&models, case, longer);
    assert_eq!(max_abs_diff(&a, &b), 0.0);
    let windowed = ContextOptions {
        length: 4,
        overlap: 1,
        weighting: ContextWeighting::Flat,
    };
    let (_, c) = run(&models, case, windowed);
    assert!(max_abs_diff(&a, &c) > 1e-3);
}

/// The preset's `sampler.eta` and `sampler.timestep_spacing` reach AnimateDiff batches: the
/// steps run at the timesteps of the scheduler built with them (trailing, not the model's
/// leading), and eta changes the result (DDIM draws noise at eta > 0).
#[test]
fn sampler_options_reach_the_video_pipeline() {
    let root = fixtures().join("motion");
    let cases: Cases =
        serde_json::from_str(&std::fs::read_to_string(root.join("cases.json")).unwrap()).unwrap();
    let case = cases
        .cases
        .iter()
        .find(|c| c.name == "v2v_ddim_flat")
        .unwrap();
    assert_eq!(case.scheduler, "ddim");
    let models = load_models();
    let context = ContextOptions::default();
    let timesteps_of = |options: &SamplerOptions| {
        let mut scheduler =
            schedulers::build_with(SchedulerKind::Ddim, &models.sd.scheduler_config, options)
                .unwrap();
        scheduler.set_timesteps(case.steps, case.strength).unwrap();
        scheduler.timesteps().to_vec()
    };
    let trailing = SamplerOptions {
        eta: Some(0.0),
        timestep_spacing: Some(TimestepSpacing::Trailing),
    };
    let (_, plain_steps, plain) = run_with(&models, case, context, SamplerOptions::default());
    let (_, trailing_steps, trailing_frames) = run_with(&models, case, context, trailing);
    assert_eq!(plain_steps, timesteps_of(&SamplerOptions::default()));
    assert_eq!(trailing_steps, timesteps_of(&trailing));
    assert_ne!(trailing_steps, plain_steps);
    assert!(max_abs_diff(&plain, &trailing_frames) > 1e-3);
    let noisy = SamplerOptions {
        eta: Some(1.0),
        ..trailing
    };
    let (_, noisy_steps, noisy_frames) = run_with(&models, case, context, noisy);
    assert_eq!(noisy_steps, trailing_steps);
    assert!(max_abs_diff(&noisy_frames, &trailing_frames) > 1e-3);
}
