//! `rotoscope render` end to end with the tiny random models on the sample clip: frame count,
//! frame rate and audio survive; the preprocessors' real models make the openpose and
//! softedge maps for three ControlNets at once; OpenPose JSON can stand in for pose
//! estimation; the anchor frame may lie anywhere in the clip; missing models are listed
//! together. Needs the preprocessor weights (scripts/fetch-models.sh or $ROTOSCOPE_MODELS).

mod cli_common;
mod render_common;

use std::path::Path;

use cli_common::media::{audio_duration, ffprobe_frame_count, ffprobe_value};
use cli_common::{assert_error, json_lines, stderr};
use render_common::*;
use rotoscope::preprocess::openpose::json::to_json_string;
use rotoscope::preprocess::openpose::keypoints::BODY_POINTS;
use rotoscope::preprocess::openpose::{Body, Keypoint, Person, PoseFrame};

fn sample() -> std::path::PathBuf {
    repo_path("samples/astronaut.mp4")
}

fn only_entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn smoke_preset_renders_the_sample_with_frames_rate_and_audio() {
    models_dir();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("smoke.mp4");
    let result = render(&sample(), &repo_path("presets/smoke.yaml"), &out, &[]);
    assert_success(&result);
    let messages = stderr(&result);
    assert!(
        messages.contains("tiny test model with random weights"),
        "the output says its images come from random weights: {messages}"
    );
    assert!(messages.contains("audio copied"), "{messages}");

    assert_eq!(ffprobe_frame_count(&out), 72);
    assert_eq!(
        ffprobe_value(&out, "v:0", "r_frame_rate"),
        ffprobe_value(&sample(), "v:0", "r_frame_rate")
    );
    assert_eq!(ffprobe_value(&out, "v:0", "width").as_deref(), Some("128"));
    let (source_audio, audio) = (audio_duration(&sample()), audio_duration(&out));
    assert!(
        (audio - source_audio).abs() <= 1.0 / 24.0,
        "audio {audio} s vs source {source_audio} s"
    );
    // The work directory is gone once the output is complete.
    assert_eq!(only_entries(dir.path()), ["smoke.mp4"]);
}

#[test]
fn openpose_softedge_and_temporalnet_from_real_preprocessors() {
    models_dir();
    let dir = tempfile::tempdir().unwrap();
    let pipeline = fixture_pipeline();
    let controls = format!(
        "controlnets:\n  - {{type: openpose, model: {a}}}\n  - {{type: softedge, model: {b}, scale: 0.6, end: 0.8}}\n{ALL_TEMPORAL}",
        a = pipeline.join("controlnet_a").display(),
        b = pipeline.join("controlnet_b").display(),
    );
    let preset = dir.path().join("three.yaml");
    std::fs::write(&preset, tiny_preset(64, "", &controls)).unwrap();
    let out = dir.path().join("frames/");
    let result = render(&sample(), &preset, &out, &["--frames", "..3", "--json"]);
    assert_success(&result);
    let events = json_lines(&result);
    assert_eq!(events[0]["renderer"], "sd15");
    assert_eq!(events[0]["width"], 64);
    assert_eq!(events.last().unwrap()["frames"], 3);
    let frames = decoded_pngs(&out);
    assert_eq!(frames.len(), 3);
    assert!(frames.iter().all(|f| f.dimensions() == (64, 64)));
}

/// One person whose right arm swings with `t`.
fn pose(t: f32) -> PoseFrame {
    let mut frame = PoseFrame::empty(512, 512);
    let mut points = [Keypoint::MISSING; BODY_POINTS];
    points[0] = Keypoint::new(256.0, 120.0, 1.0); // nose
    points[1] = Keypoint::new(256.0, 180.0, 1.0); // neck
    points[2] = Keypoint::new(210.0, 185.0, 1.0); // right shoulder
    points[3] = Keypoint::new(190.0, 250.0 - 10.0 * t, 1.0); // right elbow
    points[4] = Keypoint::new(180.0 + 8.0 * t, 310.0 - 20.0 * t, 1.0); // right wrist
    frame.people.push(Person {
        body: Some(Body { points }),
        ..Person::default()
    });
    frame
}

#[test]
fn openpose_json_stands_in_for_pose_estimation() {
    let dir = tempfile::tempdir().unwrap();
    let poses = dir.path().join("poses");
    std::fs::create_dir(&poses).unwrap();
    for i in 0..4u64 {
        let name = format!("pose_{i:06}_keypoints.json");
        std::fs::write(poses.join(name), to_json_string(&pose(i as f32))).unwrap();
    }
    let preset = dir.path().join("pose.yaml");
    let net = fixture_pipeline().join("controlnet_a");
    let controls = format!(
        "controlnets:\n  - {{type: openpose, model: {}}}\n",
        net.display()
    );
    std::fs::write(&preset, tiny_preset(64, "", &controls)).unwrap();
    let poses_arg = poses.display().to_string();

    let out = dir.path().join("out/");
    let result = render(
        &sample(),
        &preset,
        &out,
        &["--frames", "..4", "--pose-json", &poses_arg, "-q"],
    );
    assert_success(&result);
    assert_eq!(decoded_pngs(&out).len(), 4);

    // Frame 4 has no JSON file: the error names it, and nothing is left behind.
    let out = dir.path().join("more/");
    let result = render(
        &sample(),
        &preset,
        &out,
        &["--frames", "..6", "--pose-json", &poses_arg, "-q"],
    );
    assert_error(&result, 1, &["no OpenPose JSON file for frame 4"]);
    assert!(!dir.path().join("more.work").exists());
}

#[test]
fn anchor_may_be_any_frame_of_the_clip() {
    let dir = tempfile::tempdir().unwrap();
    let anchored = |anchor: u64| {
        let preset = dir.path().join(format!("anchor{anchor}.yaml"));
        let temporal =
            ALL_TEMPORAL.replace("temporal:\n", &format!("temporal:\n  anchor: {anchor}\n"));
        std::fs::write(&preset, tiny_preset(64, "", &temporal)).unwrap();
        preset
    };
    // Frame 40 lies outside the rendered frames 0..4.
    let out = dir.path().join("a40/");
    let result = render(&sample(), &anchored(40), &out, &["--frames", "..4"]);
    assert_success(&result);
    assert!(
        stderr(&result).contains("anchor frame 40"),
        "{}",
        stderr(&result)
    );
    assert_eq!(decoded_pngs(&out).len(), 4);

    let result = render(&sample(), &anchored(500), &dir.path().join("a500/"), &[]);
    assert_error(&result, 2, &["temporal.anchor", "frame 500", "72 frames"]);
}

#[test]
fn missing_models_are_listed_together() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("not-a-model");
    std::fs::create_dir(&empty).unwrap();
    let preset = dir.path().join("missing.yaml");
    std::fs::write(
        &preset,
        format!(
            "model: {{base: {e}}}\nprompt: x\nresolution: {{width: 64, height: 64}}\n\
             temporal:\n  temporalnet: {{enabled: true, model: {e}}}\n",
            e = empty.display()
        ),
    )
    .unwrap();
    let out = dir.path().join("o.mp4");
    let result = render(&sample(), &preset, &out, &["--frames", "..2"]);
    assert_error(&result, 2, &["model file(s) missing"]);
    let messages = stderr(&result);
    // The base model's files and the TemporalNet's, in one report.
    for needed in [
        "unet/config.json",
        "vae/config.json",
        "tokenizer/",
        "\n  - config.json",
    ] {
        assert!(
            messages.contains(needed),
            "{needed:?} not listed: {messages}"
        );
    }
    assert_eq!(messages.matches("missing for").count(), 2, "{messages}");
    assert_eq!(only_entries(dir.path()), ["missing.yaml", "not-a-model"]);
}

#[test]
fn faces_and_hands_are_detailed_on_the_rendered_frames() {
    let dir = tempfile::tempdir().unwrap();
    // The detail fixture's person (face and both hands on a 128² canvas) in every frame.
    let poses = dir.path().join("poses");
    std::fs::create_dir(&poses).unwrap();
    let person = repo_path("tests/fixtures/detail/person_keypoints.json");
    for i in 0..3u64 {
        std::fs::copy(&person, poses.join(format!("pose_{i:06}_keypoints.json"))).unwrap();
    }
    let net = fixture_pipeline().join("controlnet_a");
    let controls = format!(
        "controlnets:\n  - {{type: openpose, model: {}}}\n",
        net.display()
    );
    let detail = "detail:\n  face: {enabled: true, steps: 4, resolution: 64}\n  \
                  hands: {enabled: true, steps: 4, resolution: 64}\n";
    let render_with = |name: &str, sections: &str| {
        let preset = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&preset, tiny_preset(128, "", sections)).unwrap();
        let out = dir.path().join(format!("{name}/"));
        let poses = poses.display().to_string();
        let result = render(
            &sample(),
            &preset,
            &out,
            &["--frames", "..3", "--pose-json", &poses],
        );
        assert_success(&result);
        decoded_pngs(&out)
    };
    let plain = render_with("plain", &controls);
    let detailed = render_with("detailed", &format!("{controls}{detail}"));
    assert_eq!(plain.len(), 3);
    for (k, (p, d)) in plain.iter().zip(&detailed).enumerate() {
        let changed = p.pixels().zip(d.pixels()).filter(|(a, b)| a != b).count();
        let total = (p.width() * p.height()) as usize;
        // Only the face and hand regions are repainted.
        assert!(
            changed > 0 && changed < total / 2,
            "frame {k}: {changed} of {total} pixels changed"
        );
    }
}
