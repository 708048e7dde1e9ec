//! `rotoscope render` round-trips clips through the real binary: same frame count, frame
//! rate and audio (within one frame). Renders use the tiny random models of
//! tests/fixtures/pipeline at 64×64, so no real model is needed.

mod cli_common;

use std::path::Path;

use cli_common::media::{
    audio_duration, ffmpeg_fps_filter_count, ffprobe_frame_count, ffprobe_value, make_vfr_clip,
};
use cli_common::*;

/// A preset on the tiny random test models that renders fast (no `sampler` section, so tests
/// can add one).
fn fast_preset() -> String {
    format!(
        "model: {{base: {}}}\nprompt: test\nresolution: {{width: 64, height: 64}}\n\
         output: {{encoder_preset: ultrafast}}\n",
        repo_path("tests/fixtures/pipeline").display()
    )
}

/// Audio of `output` lasts as long as that of `input`, within one frame at `fps`.
fn assert_audio_within_one_frame(input_secs: f64, output: &Path, fps: f64) {
    let got = audio_duration(output);
    assert!(
        (got - input_secs).abs() <= 1.0 / fps,
        "audio lasts {got:.4} s, expected {input_secs:.4} s ± one frame (1/{fps})"
    );
}

#[test]
fn sample_round_trips_with_frames_rate_and_audio() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("astronaut-anime.mp4");
    let preset = write_preset(dir.path(), "fast.yaml", &fast_preset());
    let result = rotoscope([
        "render".as_ref(),
        sample().as_os_str(),
        "-p".as_ref(),
        preset.as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
    ]);
    assert_ok(&result);
    // Without a terminal there are no bars, but the user is told what happened.
    let messages = stderr(&result);
    assert!(messages.contains("random weights"), "{messages}");
    assert!(
        messages.contains("wrote ") && messages.contains("audio copied"),
        "{messages}"
    );

    let source = sample();
    assert_eq!(ffprobe_frame_count(&out), ffprobe_frame_count(&source));
    assert_eq!(ffprobe_frame_count(&out), 72);
    assert_eq!(
        ffprobe_value(&out, "v:0", "r_frame_rate"),
        ffprobe_value(&source, "v:0", "r_frame_rate")
    );
    assert_eq!(ffprobe_value(&out, "v:0", "width").as_deref(), Some("64"));
    assert_audio_within_one_frame(audio_duration(&source), &out, 24.0);
    // Only the output is left in its directory: the temporary file was renamed.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["astronaut-anime.mp4", "fast.yaml"]);
}

#[test]
fn vfr_odd_size_clip_with_audio_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("vfr.mkv");
    make_vfr_clip(&input);
    let preset = write_preset(dir.path(), "fast.yaml", &fast_preset());
    let out = dir.path().join("vfr-out.mp4");

    let plan = rotoscope([
        "plan".as_ref(),
        input.as_os_str(),
        "-p".as_ref(),
        preset.as_os_str(),
        "--json".as_ref(),
    ]);
    let plan: serde_json::Value = serde_json::from_str(&assert_ok(&plan)).unwrap();
    let fps = plan["video"]["fps"].as_str().unwrap().to_string();
    // The reference frame count: ffmpeg's own fps filter at the rate rotoscope chose.
    let expected = ffmpeg_fps_filter_count(&input, &fps);
    assert_eq!(plan["video"]["frame_count"].as_u64(), Some(expected));

    let result = rotoscope([
        "render".as_ref(),
        input.as_os_str(),
        "-p".as_ref(),
        preset.as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
        "--quiet".as_ref(),
    ]);
    assert_ok(&result);
    assert_eq!(ffprobe_frame_count(&out), expected);
    // The odd 333×197 input is rendered at the preset's 64×64.
    assert_eq!(ffprobe_value(&out, "v:0", "width").as_deref(), Some("64"));
    assert_eq!(ffprobe_value(&out, "v:0", "height").as_deref(), Some("64"));
    let (num, den) = fps.split_once('/').unwrap_or((&fps, "1"));
    assert_eq!(
        ffprobe_value(&out, "v:0", "r_frame_rate"),
        Some(format!("{num}/{den}"))
    );
    let fps_value = num.parse::<f64>().unwrap() / den.parse::<f64>().unwrap();
    assert_audio_within_one_frame(audio_duration(&input), &out, fps_value);
}

#[test]
fn frames_and_seed_flags_override_with_json_progress() {
    let dir = tempfile::tempdir().unwrap();
    let preset = write_preset(
        dir.path(),
        "fast.yaml",
        &format!(
            "{}sampler: {{seed: 5}}\nbatch: {{frames: 12, overlap: 3}}\n",
            fast_preset()
        ),
    );
    let out = dir.path().join("part.mp4");
    let result = rotoscope([
        "render".as_ref(),
        sample().as_os_str(),
        "-p".as_ref(),
        preset.as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
        "--frames".as_ref(),
        "10..40".as_ref(),
        "--seed".as_ref(),
        "7".as_ref(),
        "--json".as_ref(),
    ]);
    assert_ok(&result);
    let events = json_lines(&result);
    let start = &events[0];
    assert_eq!(start["event"], "start");
    assert_eq!(start["seed"], 7, "--seed replaces sampler.seed 5");
    assert_eq!(start["frames"], 30);
    assert_eq!(start["start_frame"], 10);
    assert_eq!(start["renderer"], "sd15");
    // 30 frames in batches of at most 12 sharing 3: 3 batches.
    assert_eq!(start["batches"], 3);

    let done = events.last().unwrap();
    assert_eq!(done["event"], "done");
    assert_eq!(done["frames"], 30);

    // Every stage reports every frame, counting up to the total, with a clock.
    for stage in ["decode", "preprocess", "render", "encode"] {
        let progress: Vec<&serde_json::Value> = events
            .iter()
            .filter(|e| e["event"] == "progress" && e["stage"] == stage)
            .collect();
        let frames: Vec<u64> = progress
            .iter()
            .map(|e| e["frame"].as_u64().unwrap())
            .collect();
        assert_eq!(frames, (1..=30).collect::<Vec<_>>(), "{stage}");
        assert!(progress
            .iter()
            .all(|e| e["total"] == 30 && e["elapsed"].as_f64().unwrap() >= 0.0));
    }
    assert_eq!(events.len(), 2 + 4 * 30, "start, 120 progress lines, done");

    assert_eq!(ffprobe_frame_count(&out), 30);
    // Only the audio under frames 10..40 is kept: 30 frames at 24 fps.
    assert_audio_within_one_frame(30.0 / 24.0, &out, 24.0);
}

#[test]
fn png_sequence_output_has_one_png_per_frame() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("frames/");
    let preset = write_preset(dir.path(), "fast.yaml", &fast_preset());
    let result = rotoscope([
        "render".as_ref(),
        sample().as_os_str(),
        "-p".as_ref(),
        preset.as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
        "--frames".as_ref(),
        "..6".as_ref(),
        "-q".as_ref(),
    ]);
    assert_ok(&result);
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let expected: Vec<String> = (0..6).map(|i| format!("frame_{i:06}.png")).collect();
    assert_eq!(names, expected);
    for name in &names {
        let png = image::open(out.join(name)).unwrap().to_rgb8();
        assert_eq!(png.dimensions(), (64, 64));
    }
}

#[test]
fn quiet_prints_nothing_and_force_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let preset = write_preset(dir.path(), "fast.yaml", &fast_preset());
    let out = dir.path().join("q.mp4");
    std::fs::write(&out, b"old").unwrap();
    let result = rotoscope([
        "render".as_ref(),
        sample().as_os_str(),
        "-p".as_ref(),
        preset.as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
        "--frames".as_ref(),
        "..8".as_ref(),
        "--quiet".as_ref(),
        "--force".as_ref(),
    ]);
    assert_ok(&result);
    assert_eq!(stdout(&result), "");
    assert_eq!(stderr(&result), "");
    assert_eq!(ffprobe_frame_count(&out), 8);
}
