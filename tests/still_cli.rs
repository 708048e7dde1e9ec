//! `rotoscope still` against diffusers' StableDiffusionControlNetPipeline: the tiny models of
//! tests/fixtures/pipeline with the presets in tests/fixtures/presets reproduce the reference
//! runs of scripts/fixtures/pipeline.py (float image <= 1e-3 through the library call, PNG
//! within one level of diffusers' quantised image through the binary).

mod cli_common;
mod tensor_common;

use std::path::{Path, PathBuf};
use std::process::Output;

use candle_core::{Device, Tensor};
use image::RgbImage;
use rotoscope::app::still::{render_poses, Pose};
use rotoscope::preset::Preset;

use cli_common::{assert_error, assert_success, capture, command, offline_hub, rotoscope_in};
use tensor_common::max_abs;

fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(name: &str) -> PathBuf {
    manifest().join("tests/fixtures/pipeline").join(name)
}

fn preset_path(name: &str) -> PathBuf {
    manifest().join("tests/fixtures/presets").join(name)
}

fn still(args: &[&str]) -> Output {
    rotoscope_in(&manifest(), ["still"].iter().chain(args))
}

/// Largest per-channel difference between two 8-bit images, and how many values differ.
fn compare_png(ours: &Path, reference: &Path) -> (u8, usize) {
    let a = image::open(ours).unwrap().to_rgb8();
    let b = image::open(reference).unwrap().to_rgb8();
    assert_eq!(a.dimensions(), b.dimensions(), "{}", ours.display());
    let diffs: Vec<u8> = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| x.abs_diff(*y))
        .collect();
    (
        diffs.iter().copied().max().unwrap_or(0),
        diffs.iter().filter(|&&d| d > 0).count(),
    )
}

fn assert_png_matches(ours: &Path, reference: &str) {
    let (max, count) = compare_png(ours, &fixture(reference));
    assert!(
        max <= 1,
        "{} vs {reference}: {count} values differ, by up to {max} levels",
        ours.display()
    );
}

fn reference_image(case: &str) -> Tensor {
    let reference =
        candle_core::safetensors::load(fixture("reference.safetensors"), &Device::Cpu).unwrap();
    reference[&format!("{case}.image")]
        .permute((0, 3, 1, 2))
        .unwrap()
}

fn pose(name: &str) -> Pose {
    Pose {
        label: name.to_string(),
        image: image::open(fixture(name)).unwrap().to_rgb8(),
    }
}

#[test]
fn library_render_matches_diffusers_float_image() {
    let path = preset_path("still_euler.yaml");
    let mut preset = Preset::load(&path).unwrap();
    preset.sampler.seed = 1;
    let poses = [pose("still_pose_a.png"), pose("still_pose_b.png")];
    let mut steps = 0;
    let images = render_poses(&preset, path.parent(), &poses, (64, 64), &mut |_| {
        steps += 1
    })
    .unwrap();
    assert_eq!(steps, 2 * 5);
    for (image, case) in images.iter().zip(["txt2img_euler", "txt2img_euler_pose_b"]) {
        let err = max_abs(&(image - reference_image(case)).unwrap());
        assert!(err <= 1e-3, "{case}: max abs error {err}");
    }
}

#[test]
fn still_ddim_png_matches_diffusers() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sheet.png");
    let run = still(&[
        "--pose",
        "tests/fixtures/pipeline/still_pose_a.png",
        "-p",
        "tests/fixtures/presets/still_ddim.yaml",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_success(&run);
    assert_png_matches(&out, "txt2img_ddim.png");
    // Written under a temporary name and renamed: nothing else is left behind.
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(names.len(), 1);
}

#[test]
fn still_several_poses_numbered_and_grid() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("poses.png");
    let poses = [
        "tests/fixtures/pipeline/still_pose_a.png",
        "tests/fixtures/pipeline/still_pose_b.png",
    ];
    let preset = "tests/fixtures/presets/still_euler.yaml";
    let out_arg = out.to_str().unwrap();
    // The preset's seed is 12345; --seed 1 selects the reference runs' seed.
    let run = still(&[
        "--pose", poses[0], poses[1], "-p", preset, "-o", out_arg, "--seed", "1",
    ]);
    assert_success(&run);
    assert!(
        !out.exists(),
        "several poses without --grid write numbered files"
    );
    assert_png_matches(&dir.path().join("poses-0.png"), "txt2img_euler.png");
    assert_png_matches(&dir.path().join("poses-1.png"), "txt2img_euler_pose_b.png");

    let run = still(&[
        "--pose", poses[0], "--pose", poses[1], "-p", preset, "-o", out_arg, "--seed", "1",
        "--grid",
    ]);
    assert_success(&run);
    let grid = image::open(&out).unwrap().to_rgb8();
    assert_eq!(grid.dimensions(), (128, 64));
    let left = image::imageops::crop_imm(&grid, 0, 0, 64, 64).to_image();
    let right = image::imageops::crop_imm(&grid, 64, 0, 64, 64).to_image();
    for (cell, reference) in [
        (left, "txt2img_euler.png"),
        (right, "txt2img_euler_pose_b.png"),
    ] {
        let path = dir.path().join(format!("cell-{reference}"));
        cell.save(&path).unwrap();
        assert_png_matches(&path, reference);
    }

    // Without --seed the preset's seed renders something else.
    let other = dir.path().join("other.png");
    let run = still(&[
        "--pose",
        poses[0],
        "-p",
        preset,
        "-o",
        other.to_str().unwrap(),
    ]);
    assert_success(&run);
    let (max, _) = compare_png(&other, &fixture("txt2img_euler.png"));
    assert!(max > 1, "a different seed must change the image");
}

#[test]
fn still_rejects_bad_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o.png");
    let out_arg = out.to_str().unwrap();
    let preset = "tests/fixtures/presets/still_ddim.yaml";
    let pose = "tests/fixtures/pipeline/still_pose_a.png";

    let run = still(&["--pose", "missing.png", "-p", preset, "-o", out_arg]);
    assert_error(&run, 2, &["--pose missing.png", "no such file"]);

    let run = still(&["--pose", "Cargo.toml", "-p", preset, "-o", out_arg]);
    assert_error(&run, 2, &["--pose Cargo.toml", "not a readable image"]);

    let json = dir.path().join("pose.json");
    std::fs::write(&json, "not json").unwrap();
    let run = still(&[
        "--pose",
        json.to_str().unwrap(),
        "-p",
        preset,
        "-o",
        out_arg,
    ]);
    assert_error(&run, 2, &["--pose", "pose.json", "not OpenPose JSON"]);

    let run = still(&["--pose", pose, "-p", preset, "-o", "o.jpg"]);
    assert_error(&run, 2, &["-o o.jpg", ".png"]);

    let nowhere = dir.path().join("no/such/dir/o.png");
    let run = still(&[
        "--pose",
        pose,
        "-p",
        preset,
        "-o",
        nowhere.to_str().unwrap(),
    ]);
    assert_error(&run, 2, &["cannot write output", "does not exist"]);

    // A softedge ControlNet has no control image in `still`.
    let text = std::fs::read_to_string(preset_path("still_ddim.yaml"))
        .unwrap()
        .replace("type: openpose", "type: softedge")
        .replace("../pipeline", &fixture("").display().to_string());
    let softedge = dir.path().join("softedge.yaml");
    std::fs::write(&softedge, text).unwrap();
    let run = still(&[
        "--pose",
        pose,
        "-p",
        softedge.to_str().unwrap(),
        "-o",
        out_arg,
    ]);
    assert_error(&run, 2, &["controlnets[0]", "softedge", "openpose"]);

    // Without any ControlNet the poses would be ignored.
    let text = std::fs::read_to_string(preset_path("still_ddim.yaml")).unwrap();
    let cut = text.find("controlnets:").unwrap();
    let plain = dir.path().join("plain.yaml");
    std::fs::write(
        &plain,
        text[..cut].replace("../pipeline", &fixture("").display().to_string()),
    )
    .unwrap();
    let run = still(&["--pose", pose, "-p", plain.to_str().unwrap(), "-o", out_arg]);
    assert_error(&run, 2, &["no ControlNet", "openpose"]);

    assert!(!out.exists());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3);
}

#[test]
fn pose_maps_of_another_size_are_resized() {
    // A 32x32 pose map still renders at the preset's 64x64.
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small.png");
    let img: RgbImage = image::imageops::resize(
        &image::open(fixture("still_pose_a.png")).unwrap().to_rgb8(),
        32,
        32,
        image::imageops::FilterType::Triangle,
    );
    img.save(&small).unwrap();
    let out = dir.path().join("o.png");
    let run = still(&[
        "--pose",
        small.to_str().unwrap(),
        "-p",
        "tests/fixtures/presets/still_ddim.yaml",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_success(&run);
    assert_eq!(image::open(&out).unwrap().to_rgb8().dimensions(), (64, 64));
}

/// A preset like the bundled ones (openpose + softedge + a TemporalNet entry, and
/// `temporal:` switched on) on the tiny models: the softedge and TemporalNet models do not
/// exist, so the still only works because they are skipped and not loaded.
fn preset_with_video_controlnets(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(preset_path("still_ddim.yaml"))
        .unwrap()
        .replace("../pipeline", &fixture("").display().to_string());
    let text = format!(
        "{text}\n  - type: softedge\n    model: no/such-softedge-model\n    scale: 0.6\n  \
         - type: temporalnet\n    model: no-such-temporalnet.safetensors\n    scale: 0.5\n\
         temporal:\n  temporalnet: {{ enabled: true, model: no/such-temporalnet, scale: 0.6 }}\n  \
         flow_init: {{ enabled: true, strength: 0.7 }}\n"
    );
    let path = dir.join("video.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn controlnets_without_a_control_image_are_skipped_with_a_note() {
    let dir = tempfile::tempdir().unwrap();
    let preset = preset_with_video_controlnets(dir.path());
    let out = dir.path().join("still.png");
    let run = still(&[
        "--pose",
        "tests/fixtures/pipeline/still_pose_a.png",
        "-p",
        preset.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_success(&run);
    let stderr = String::from_utf8_lossy(&run.stderr);
    let notes: Vec<_> = stderr.lines().filter(|l| l.starts_with("note:")).collect();
    assert_eq!(notes.len(), 1, "{stderr}");
    for name in [
        "controlnets[1] (softedge)",
        "controlnets[2] (temporalnet)",
        "temporal.temporalnet",
        "temporal.flow_init",
    ] {
        assert!(notes[0].contains(name), "{name} not in {}", notes[0]);
    }
    // What is left is the openpose-only preset, diffusers' reference run.
    assert_png_matches(&out, "txt2img_ddim.png");
}

/// `rotoscope still` on the fixture pose with `preset`, offline with an empty hub cache in
/// `hf_home`.
fn still_offline(preset: &Path, out: &Path, hf_home: &Path) -> std::process::Output {
    let mut still = command([
        "still",
        "--pose",
        "tests/fixtures/pipeline/still_pose_a.png",
        "-p",
    ]);
    still.arg(preset).arg("-o").arg(out).current_dir(manifest());
    capture(offline_hub(&mut still, hf_home))
}

#[test]
fn missing_models_of_a_still_are_listed_together() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(preset_path("still_ddim.yaml"))
        .unwrap()
        .replace("base: ../pipeline", "base: no-such-dir/base-model")
        .replace("../pipeline/controlnet_a", "no-such-dir/openpose-model");
    let preset = dir.path().join("missing.yaml");
    std::fs::write(&preset, text).unwrap();
    let out = dir.path().join("o.png");
    let run = still_offline(&preset, &out, &dir.path().join("hf"));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    for needle in ["base-model", "openpose-model", "rotoscope models fetch"] {
        assert!(stderr.contains(needle), "{needle} not in {stderr}");
    }
    assert!(!out.exists());
}

#[test]
fn a_hub_lora_missing_offline_is_listed_as_a_missing_model_file() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = fixture("");
    let pipeline = pipeline.to_str().unwrap().trim_end_matches('/');
    let text = std::fs::read_to_string(preset_path("still_ddim.yaml"))
        .unwrap()
        .replace("../pipeline", pipeline)
        + "loras:\n  - { path: latent-consistency/lcm-lora-sdv1-5, weight: 1.0 }\n";
    let preset = dir.path().join("hub-lora.yaml");
    std::fs::write(&preset, text).unwrap();
    let out = dir.path().join("o.png");
    let run = still_offline(&preset, &out, &dir.path().join("hf"));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    // The base model and its ControlNet are there: the LoRA is all that is missing.
    for needle in [
        "loras[0]: 1 model file(s) missing for latent-consistency/lcm-lora-sdv1-5:",
        "  - pytorch_lora_weights.safetensors\n",
        "HF_HUB_OFFLINE",
        "huggingface-cli download latent-consistency/lcm-lora-sdv1-5 pytorch_lora_weights.safetensors",
        "rotoscope models fetch",
    ] {
        assert!(stderr.contains(needle), "{needle:?} not in {stderr}");
    }
    assert!(!stderr.contains("controlnet_a"), "{stderr}");
    assert!(!out.exists());
}
