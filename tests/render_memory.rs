//! Flat memory: the peak RSS of `rotoscope render` does not grow with the clip's length
//! (within 20 %), measured on the real binary (512² H.264 input with audio → MP4).
//!
//! * pipeline: 200 vs 2000 frames with the tiny random model at 64×64 and one txt2img step,
//!   so decoding, batching, blending and encoding dominate;
//! * temporal: 48 vs 96 frames with every temporal option of the SD renderer on (anchor,
//!   TemporalNet, cross-frame attention caches, flow init).
//!
//! Each pair uses equal batch sizes (48 sharing 10, resp. 8 sharing 2), which the planner
//! keeps for both lengths: the render stage holds one batch, so only growth with the clip's
//! length shows. (With the default 96 frames a 200-frame clip gets 73-frame batches: it
//! would hold fewer frames because it is short, not because memory grows with length.)

mod cli_common;
mod render_common;

use std::path::Path;
use std::process::Stdio;

use cli_common::media::{ffprobe_frame_count, make_test_clip};
use render_common::*;

/// Runs the real binary; its peak resident set size in KiB (wait4's rusage: the child's own
/// high-water mark, kept by the kernel, not sampled by polling).
// The child is waited for with wait4, which clippy does not see.
#[allow(clippy::zombie_processes)]
fn render_peak_rss_kib(input: &Path, preset: &Path, output: &Path) -> u64 {
    let log = output.with_extension("log");
    let child = render_command(input, preset, output, &["--quiet"])
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
    usage.ru_maxrss as u64
}

/// Renders a `short`- and a `long`-frame clip with `preset_yaml`; asserts the frame counts
/// and that the long render's peak RSS is within 20 % of the short one's.
fn assert_flat_memory(preset_yaml: &str, short: u32, long: u32) {
    let dir = tempfile::tempdir().unwrap();
    let preset = dir.path().join("memory.yaml");
    std::fs::write(&preset, preset_yaml).unwrap();
    let mut peaks = Vec::new();
    for frames in [short, long] {
        let input = dir.path().join(format!("in-{frames}.mp4"));
        let output = dir.path().join(format!("out-{frames}.mp4"));
        make_test_clip(&input, frames);
        peaks.push(render_peak_rss_kib(&input, &preset, &output));
        assert_eq!(ffprobe_frame_count(&output), frames as u64);
    }
    let ratio = peaks[1] as f64 / peaks[0] as f64;
    eprintln!(
        "peak RSS: {short} frames {:.1} MiB, {long} frames {:.1} MiB (ratio {ratio:.3})",
        peaks[0] as f64 / 1024.0,
        peaks[1] as f64 / 1024.0,
    );
    assert!(
        (0.8..=1.2).contains(&ratio),
        "peak RSS grew with length: {} KiB for {short} frames, {} KiB for {long} (ratio {ratio:.3})",
        peaks[0],
        peaks[1]
    );
}

#[test]
fn pipeline_peak_rss_does_not_grow_with_clip_length() {
    let preset = format!(
        "model: {{base: {}}}\nprompt: memory test\nsampler: {{steps: 1, cfg_scale: 1.0}}\n\
         resolution: {{width: 64, height: 64}}\nbatch: {{frames: 48, overlap: 10}}\n\
         output: {{encoder_preset: ultrafast}}\n",
        fixture_pipeline().display()
    );
    assert_flat_memory(&preset, 200, 2000);
}

#[test]
fn temporal_render_peak_rss_does_not_grow_with_clip_length() {
    let sections = format!("{ALL_TEMPORAL}batch: {{frames: 8, overlap: 2}}\n");
    assert_flat_memory(&tiny_preset(64, "", &sections), 48, 96);
}
