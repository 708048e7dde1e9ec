//! `rotoscope render` with `temporal.motion_module` (AnimateDiff), on the tiny random models
//! (tests/fixtures/pipeline) and the tiny MotionAdapter of tests/fixtures/motion (made for
//! that UNet: block channels [8, 16]):
//!
//! * the wiring: a one-batch render to a PNG sequence equals, within 1 level per channel,
//!   `sample_video` called directly on independently loaded models with the same inputs (the
//!   clip's frames, openpose maps from the same pose preprocessor, img2img strength, seed,
//!   context windows);
//! * a render interrupted with Ctrl-C (SIGINT) after its first batch and resumed is byte
//!   for byte the uninterrupted render;
//! * preset errors for bad `temporal.motion_module` fields and for the per-frame options
//!   that cannot run inside a jointly sampled batch.

mod render_common;

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use candle_core::Device;
use image::RgbImage;
use render_common::*;
use rotoscope::cancel::StopFlag;
use rotoscope::diffusion::image_pipeline::{GenerationSettings, StableDiffusion};
use rotoscope::diffusion::schedulers::SamplerOptions;
use rotoscope::diffusion::{sample_video, VideoControl, VideoInit, VideoRequest};
use rotoscope::loaders::model_stack::{load_controlnet, ModelStackSpec};
use rotoscope::loaders::source::HubOptions;
use rotoscope::models::motion::{MotionLoadOptions, MotionModuleFiles, MotionModules};
use rotoscope::pipeline::stages::PreparedFrame;
use rotoscope::preprocess::registry::{build_preprocessors, PreprocessorOptions};
use rotoscope::preset::motion::ContextOptions;
use rotoscope::preset::motion::ContextWeighting;
use rotoscope::preset::SchedulerKind;
use rotoscope::preset::{ControlKind, Preset, PresetError};
use rotoscope::video::{Frame, ReadOptions, VideoReader};

const SIZE: u32 = 64;
const STEPS: usize = 4;
const SEED: u64 = 5;
const STRENGTH: f64 = 0.7;
const CFG: f64 = 6.0;
const PROMPT: &str = "a dancer on a stage, motion test";
const NEGATIVE: &str = "blurry";
const CONTEXT_LENGTH: usize = 6;
const CONTEXT_OVERLAP: usize = 2;
const CONTROL_SCALE: f64 = 0.9;

fn sample() -> PathBuf {
    repo_path("samples/astronaut.mp4")
}

fn adapter() -> PathBuf {
    repo_path("tests/fixtures/motion/adapter_v2")
}

/// A motion preset on the tiny models; `controlnet` adds the openpose ControlNet.
fn motion_preset(batch: &str, controlnet: bool, extra: &str) -> String {
    motion_preset_with(&adapter().display().to_string(), batch, controlnet, extra)
}

fn motion_preset_with(motion_path: &str, batch: &str, controlnet: bool, extra: &str) -> String {
    let pipeline = fixture_pipeline();
    let controlnets = if controlnet {
        format!(
            "controlnets:\n  - {{type: openpose, model: {}, scale: {CONTROL_SCALE}, start: 0.0, end: 1.0}}\n",
            pipeline.join("controlnet_a").display()
        )
    } else {
        String::new()
    };
    format!(
        "name: motion-test\nmodel:\n  base: {}\nprompt: {PROMPT}\nnegative_prompt: {NEGATIVE}\n\
         sampler: {{scheduler: ddim, steps: {STEPS}, cfg_scale: {CFG}, seed: {SEED}, strength: {STRENGTH}}}\n\
         resolution: {{width: {SIZE}, height: {SIZE}}}\n{controlnets}batch: {batch}\n\
         output: {{encoder_preset: ultrafast}}\n\
         temporal:\n  motion_module: {{path: {}, context_length: {CONTEXT_LENGTH}, context_overlap: {CONTEXT_OVERLAP}, weighting: pyramid}}\n{extra}",
        pipeline.display(),
        motion_path
    )
}

fn write_preset(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// As the renderer resizes frames and maps to the render size.
fn fit(frame: &Frame) -> RgbImage {
    let image = RgbImage::from_raw(frame.width, frame.height, frame.data.clone()).unwrap();
    image::imageops::resize(&image, SIZE, SIZE, image::imageops::FilterType::Triangle)
}

/// The tiny SD pipeline, openpose ControlNet and motion adapter, loaded without the
/// renderer's code (the parity tests' way).
fn direct_models() -> (
    StableDiffusion,
    rotoscope::models::controlnet::ControlNetModel,
    MotionModules,
) {
    let device = Device::Cpu;
    let dir = fixture_pipeline();
    let hub = HubOptions::from_env(false);
    let sd =
        StableDiffusion::load(&ModelStackSpec::new(dir.to_string_lossy()), &hub, &device).unwrap();
    let source = dir.join("controlnet_a").to_string_lossy().into_owned();
    let net = load_controlnet(&source, None, None, &hub, &device).unwrap();
    let motion = MotionModules::load_files(
        &MotionModuleFiles {
            weights: adapter().join("diffusion_pytorch_model.fp16.safetensors"),
            config: Some(adapter().join("config.json")),
        },
        sd.unet.config(),
        &device,
        &MotionLoadOptions::default(),
    )
    .unwrap();
    (sd, net, motion)
}

#[test]
fn motion_render_equals_sample_video_on_the_same_inputs() {
    const FRAMES: u64 = 10;
    let dir = tempfile::tempdir().unwrap();
    // One batch holding the whole clip: no overlap blend, so the output is one sample_video
    // run (with two context windows of 6 frames sharing 2).
    let preset_path = write_preset(
        dir.path(),
        "motion.yaml",
        &motion_preset("{frames: 10, overlap: 2}", true, ""),
    );
    let out = dir.path().join("out/");
    let run = render(
        &sample(),
        &preset_path,
        &out,
        &["--frames", &format!("..{FRAMES}"), "--quiet"],
    );
    assert_success(&run);
    let rendered = decoded_pngs(&out);
    assert_eq!(rendered.len(), FRAMES as usize);

    // The same inputs by hand: the clip's frames, the pose preprocessor over them in order
    // (as the pipeline runs it), resized to the render size.
    let preset = Preset::load(&preset_path).unwrap();
    let inputs = input_frames(&sample(), 0..FRAMES);
    let mut preprocessors = build_preprocessors(
        &[ControlKind::Openpose],
        &PreprocessorOptions {
            models_dir: models_dir(),
            pose: preset.preprocess.pose.clone(),
            softedge: preset.preprocess.softedge.clone(),
            fps: VideoReader::open_with(&sample(), ReadOptions::default())
                .unwrap()
                .info()
                .fps
                .as_f64(),
            pose_json: None,
            needed: None,
            stop: StopFlag::new(),
            detail: Default::default(),
        },
    )
    .unwrap();
    let mut sources = Vec::new();
    let mut poses = Vec::new();
    for frame in inputs {
        let mut prepared = PreparedFrame::new(frame);
        for p in preprocessors.iter_mut() {
            p.process(&mut prepared).unwrap();
        }
        sources.push(fit(&prepared.source));
        poses.push(fit(prepared.control(ControlKind::Openpose).unwrap()));
    }
    let (sd, net, motion) = direct_models();
    let settings = GenerationSettings {
        prompt: PROMPT.into(),
        negative_prompt: NEGATIVE.into(),
        width: SIZE as usize,
        height: SIZE as usize,
        steps: STEPS,
        guidance_scale: CFG,
        scheduler: SchedulerKind::Ddim,
        options: SamplerOptions::default(),
        seed: SEED,
        deep_cache: None,
    };
    let controls = [VideoControl {
        model: &net,
        frames: &poses,
        scale: CONTROL_SCALE,
        start: 0.0,
        end: 1.0,
        guess_mode: false,
    }];
    let request = VideoRequest {
        settings: &settings,
        frames: FRAMES as usize,
        init: VideoInit::Video {
            frames: &sources,
            strength: STRENGTH,
        },
        controls: &controls,
        context: ContextOptions {
            length: CONTEXT_LENGTH,
            overlap: CONTEXT_OVERLAP,
            weighting: ContextWeighting::Pyramid,
        },
        text: None,
        stop: None,
    };
    let expected = sample_video(&sd, &motion, &request, &mut |_| {}).unwrap();
    let mut worst = 0u8;
    for (f, (a, b)) in rendered.iter().zip(&expected).enumerate() {
        assert_eq!(a.dimensions(), b.dimensions(), "frame {f}");
        let diff = a
            .as_raw()
            .iter()
            .zip(b.as_raw())
            .map(|(x, y)| x.abs_diff(*y))
            .max()
            .unwrap();
        worst = worst.max(diff);
        assert!(diff <= 1, "frame {f}: differs by {diff} levels");
    }
    // The frames are not all alike (the module renders a clip, not one image 10 times).
    assert!(rendered.windows(2).any(|w| w[0] != w[1]));
    eprintln!("render vs sample_video: max difference {worst} level(s)");
}

fn spawn_render(preset: &Path, output: &Path, work: &Path, frames: &str) -> std::process::Child {
    let work = work.display().to_string();
    render_command(
        &sample(),
        preset,
        output,
        &["--frames", frames, "--work-dir", &work],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .expect("start rotoscope")
}

fn wait_with_stderr(child: std::process::Child) -> (ExitStatus, String) {
    let out = child.wait_with_output().unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn interrupted_motion_render_resumes_byte_identical() {
    // 30 frames in batches of 8 sharing 2: 5 batches, each sampled jointly.
    const FRAMES: &str = "..30";
    const BATCHES: usize = 5;
    let dir = tempfile::tempdir().unwrap();
    // The motion module path is relative to the preset's folder, like the other models.
    let local = dir.path().join("mm");
    std::fs::create_dir(&local).unwrap();
    for file in ["config.json", "diffusion_pytorch_model.fp16.safetensors"] {
        std::fs::copy(adapter().join(file), local.join(file)).unwrap();
    }
    let preset = write_preset(
        dir.path(),
        "motion.yaml",
        &motion_preset_with("mm", "{frames: 8, overlap: 2}", false, ""),
    );

    let whole = dir.path().join("whole/");
    let (status, stderr) = wait_with_stderr(spawn_render(
        &preset,
        &whole,
        &dir.path().join("whole.work"),
        FRAMES,
    ));
    assert!(status.success(), "{stderr}");

    let resumed = dir.path().join("resumed/");
    let work = dir.path().join("resumed.work");
    let child = spawn_render(&preset, &resumed, &work, FRAMES);
    let started = Instant::now();
    let mut child = child;
    loop {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the render ended before its first batch was seen"
        );
        if finished_batches(&work) >= 1 {
            // SAFETY: signalling our own child process, which has not been waited for.
            assert_eq!(
                unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) },
                0
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "render too slow"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let (status, stderr) = wait_with_stderr(child);
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted:"), "{stderr}");
    let kept = finished_batches(&work);
    assert!((1..BATCHES).contains(&kept), "{kept} batches kept");

    let (status, stderr) = wait_with_stderr(spawn_render(&preset, &resumed, &work, FRAMES));
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("resuming: {kept} finished batch(es)")),
        "{stderr}"
    );
    let (a, b) = (png_frames(&whole), png_frames(&resumed));
    assert_eq!(a.len(), 30);
    assert_eq!(a.len(), b.len());
    for ((name_a, bytes_a), (name_b, bytes_b)) in a.iter().zip(&b) {
        assert_eq!(name_a, name_b);
        assert!(bytes_a == bytes_b, "{name_a} differs after resuming");
    }
}

fn preset_error(text: &str) -> String {
    let err: PresetError = Preset::from_yaml(text, "p.yaml")
        .and_then(|p| p.validate("p.yaml").map(|()| p))
        .expect_err("the preset must be refused");
    err.to_string()
}

#[test]
fn bad_motion_module_fields_are_preset_errors() {
    let with = |motion: &str| {
        format!("model: {{base: m}}\nprompt: p\ntemporal:\n  motion_module: {motion}\n")
    };
    let cases = [
        (
            "{path: mm.ckpt, context_length: 8, context_overlap: 8}",
            "context_overlap (8) must be smaller than context_length (8)",
        ),
        (
            "{path: mm.ckpt, context_length: 1, context_overlap: 0}",
            "context_length (1) must be at least 2",
        ),
        ("{path: mm.ckpt, weighting: gaussian}", "unknown variant"),
        ("{path: mm.ckpt, stride: 2}", "unknown field `stride`"),
        ("{context_length: 16}", "missing field `path`"),
        ("{path: ' '}", "path: must not be empty"),
    ];
    for (motion, expected) in cases {
        let err = preset_error(&with(motion));
        assert!(err.contains(expected), "{motion}: {err}");
        // Located in the file, under the field's path.
        assert!(
            err.starts_with("p.yaml:4:") && err.contains("temporal.motion_module"),
            "{motion}: {err}"
        );
    }
}

#[test]
fn per_frame_options_are_refused_next_to_a_motion_module() {
    let base = |sampler: &str, controlnets: &str, temporal: &str| {
        format!(
            "model: {{base: m}}\nprompt: p\n{sampler}{controlnets}temporal:\n  motion_module: {{path: mm.ckpt}}\n{temporal}"
        )
    };
    let cases = [
        (
            base("", "", "  temporalnet: {enabled: true}\n"),
            "temporal.temporalnet.enabled",
        ),
        (
            base("", "", "  flow_init: {enabled: true}\n"),
            "temporal.flow_init.enabled",
        ),
        (
            base("", "", "  cross_frame_attention: {enabled: true}\n"),
            "temporal.cross_frame_attention.enabled",
        ),
        (
            base(
                "",
                "controlnets:\n  - {type: openpose, model: a}\n  - {type: temporalnet, model: t}\n",
                "",
            ),
            "controlnets[1].type",
        ),
        (
            base("sampler: {seed_per_frame: increment}\n", "", ""),
            "sampler.seed_per_frame",
        ),
    ];
    for (text, field) in cases {
        let err = preset_error(&text);
        assert!(
            err.contains(&format!(
                "p.yaml: {field}: cannot be combined with temporal.motion_module"
            )),
            "{field}: {err}"
        );
    }
    // Each option alone, or the motion module with ControlNets of preprocessor maps, is fine.
    let ok = base("", "controlnets:\n  - {type: openpose, model: a}\n", "");
    Preset::from_yaml(&ok, "ok.yaml")
        .unwrap()
        .validate("ok.yaml")
        .unwrap();
    let no_motion = "model: {base: m}\nprompt: p\ntemporal:\n  flow_init: {enabled: true}\n";
    Preset::from_yaml(no_motion, "ok.yaml")
        .unwrap()
        .validate("ok.yaml")
        .unwrap();
}

#[test]
fn render_refuses_a_combination_before_loading_anything() {
    let dir = tempfile::tempdir().unwrap();
    let preset = write_preset(
        dir.path(),
        "bad.yaml",
        &motion_preset(
            "{frames: 8, overlap: 2}",
            false,
            "  flow_init: {enabled: true, strength: 0.5}\n",
        ),
    );
    let out = render(
        &sample(),
        &preset,
        &dir.path().join("out/"),
        &["--frames", "..4"],
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr
            .contains("temporal.flow_init.enabled: cannot be combined with temporal.motion_module"),
        "{stderr}"
    );
}

#[test]
fn a_missing_motion_module_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let preset = write_preset(
        dir.path(),
        "missing.yaml",
        &motion_preset_with(
            "no_such_mm.safetensors",
            "{frames: 8, overlap: 2}",
            false,
            "",
        ),
    );
    let out = render(
        &sample(),
        &preset,
        &dir.path().join("out/"),
        &["--frames", "..4"],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("temporal.motion_module") && stderr.contains("no_such_mm.safetensors"),
        "{stderr}"
    );
}
