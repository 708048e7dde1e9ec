//! Flat memory with the Stable Diffusion renderer: the peak RSS of rendering a clip twice as
//! long stays within 20 % (tiny random models, every temporal option on, 512² input frames,
//! MP4 output with audio). Both clips are planned into batches of at most 8 frames, so the
//! render stage holds the same amount either way: only growth with the clip's length shows.

mod cli_common;
mod render_common;

use std::path::Path;
use std::process::Stdio;

use cli_common::media::{ffmpeg, ffprobe_frame_count};
use render_common::*;

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

/// Runs the real binary; its peak resident set size in KiB (wait4's rusage: the child's own
/// high-water mark, kept by the kernel).
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

#[test]
fn peak_memory_does_not_grow_with_clip_length() {
    let dir = tempfile::tempdir().unwrap();
    let preset = dir.path().join("tiny.yaml");
    let sections = format!("{ALL_TEMPORAL}batch: {{frames: 8, overlap: 2}}\n");
    std::fs::write(&preset, tiny_preset(64, "", &sections)).unwrap();
    let short = dir.path().join("short.mp4");
    let long = dir.path().join("long.mp4");
    make_clip(&short, 48);
    make_clip(&long, 96);

    let short_out = dir.path().join("short-out.mp4");
    let long_out = dir.path().join("long-out.mp4");
    let short_rss = render_peak_rss_kib(&short, &preset, &short_out);
    let long_rss = render_peak_rss_kib(&long, &preset, &long_out);
    assert_eq!(ffprobe_frame_count(&short_out), 48);
    assert_eq!(ffprobe_frame_count(&long_out), 96);
    eprintln!(
        "peak RSS: 48 frames {:.1} MiB, 96 frames {:.1} MiB ({:+.1} %)",
        short_rss as f64 / 1024.0,
        long_rss as f64 / 1024.0,
        (long_rss as f64 / short_rss as f64 - 1.0) * 100.0
    );
    assert!(
        (long_rss as f64) <= 1.2 * short_rss as f64,
        "peak RSS grew from {short_rss} KiB to {long_rss} KiB for a clip twice as long"
    );
}
