//! Flat memory: the peak RSS of a 2000-frame render of 512² input (decode → batches with
//! overlap blending → encode, with audio) is within 20 % of a 200-frame one. The renderer is
//! the tiny random test model at 64×64 with one txt2img step, so decoding, batching and
//! encoding dominate.
//!
//! Both renders use batches of at most 48 frames sharing 10, which the planner spreads
//! into batches of 48 frames for the short clip and of 47–48 for the long one: the render
//! stage holds one batch, so comparing equal batch sizes isolates growth with clip length.
//! (With the default 96 frames the 200-frame clip gets 73-frame batches, i.e. it holds
//! fewer frames because it is short, not because memory grows with length.)

mod cli_common;

use std::path::Path;
use std::process::{Command, Stdio};

use cli_common::media::{ffmpeg, ffprobe_frame_count};
use cli_common::*;

fn preset_yaml() -> String {
    format!(
        "model: {{base: {}}}\nprompt: memory test\nsampler: {{steps: 1, cfg_scale: 1.0}}\n\
         resolution: {{width: 64, height: 64}}\nbatch: {{frames: 48, overlap: 10}}\n\
         output: {{encoder_preset: ultrafast}}\n",
        repo_path("tests/fixtures/pipeline").display()
    )
}

fn make_clip(path: &Path, frames: u32) {
    let seconds = format!("{}", frames as f64 / 25.0);
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=512x512:rate=25",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=300:sample_rate=44100",
        "-t",
        &seconds,
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        path.to_str().unwrap(),
    ]);
}

/// Runs the real binary and returns its peak resident set size in KiB (from wait4's
/// rusage: the child's own high-water mark, sampled by the kernel, not by polling).
fn render_peak_rss_kib(input: &Path, preset: &Path, output: &Path) -> u64 {
    let log = output.with_extension("log");
    let child = Command::new(bin())
        .arg("render")
        .arg(input)
        .arg("-p")
        .arg(preset)
        .arg("-o")
        .arg(output)
        .arg("--quiet")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start rotoscope");
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waiting for our own child, with valid pointers; the Child is not waited on
    // again afterwards.
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as libc::pid_t, "wait4 failed");
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "render of {} failed: {}",
        input.display(),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    usage.ru_maxrss as u64 // KiB on Linux
}

#[test]
fn peak_rss_does_not_grow_with_clip_length() {
    let dir = tempfile::tempdir().unwrap();
    let preset = write_preset(dir.path(), "memory.yaml", &preset_yaml());
    let short = dir.path().join("short.mp4");
    let long = dir.path().join("long.mp4");
    make_clip(&short, 200);
    make_clip(&long, 2000);

    let short_peak = render_peak_rss_kib(&short, &preset, &dir.path().join("short-out.mp4"));
    let long_peak = render_peak_rss_kib(&long, &preset, &dir.path().join("long-out.mp4"));
    assert_eq!(ffprobe_frame_count(&dir.path().join("short-out.mp4")), 200);
    assert_eq!(ffprobe_frame_count(&dir.path().join("long-out.mp4")), 2000);

    let ratio = long_peak as f64 / short_peak as f64;
    eprintln!(
        "peak RSS: 200 frames {short_peak} KiB, 2000 frames {long_peak} KiB, ratio {ratio:.3}"
    );
    assert!(
        (0.8..=1.2).contains(&ratio),
        "peak RSS grew with length: {short_peak} KiB for 200 frames, {long_peak} KiB for 2000 (ratio {ratio:.3})"
    );
}
