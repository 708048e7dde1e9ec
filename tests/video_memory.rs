//! Memory stays flat: a 2000-frame 512² pass-through (decode → encode with audio) peaks
//! within 20 % of a 200-frame one. One test per binary, so the process is ours alone.

mod video_common;

use std::path::Path;

use rotoscope::video::{frames_to_seconds, Mp4Settings, Mp4Writer, ReadOptions, VideoReader};
use video_common::*;

/// Peak resident set size since the last reset, in KiB (Linux `VmHWM`).
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status")
}

/// Resets `VmHWM` to the current RSS (Linux: writing 5 to clear_refs).
fn reset_peak_rss() {
    std::fs::write("/proc/self/clear_refs", "5").expect("clear_refs");
}

fn pass_through(input: &Path, output: &Path, frames: u64) -> u64 {
    let options = ReadOptions {
        frames: Some(0..frames),
        ..Default::default()
    };
    let reader = VideoReader::open_with(input, options.clone()).unwrap();
    let info = reader.info().clone();
    let mut settings = Mp4Settings::new(info.width, info.height, info.fps);
    settings.preset = "ultrafast".into();
    settings.audio_source = Some(input.to_path_buf());
    settings.audio_range = Some(frames_to_seconds(&(0..frames), info.fps));
    let mut writer = Mp4Writer::create(output, settings).unwrap();
    for frame in reader {
        writer.write(&frame.unwrap()).unwrap();
    }
    writer.finish().unwrap().frames
}

#[test]
fn peak_memory_does_not_grow_with_length() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("long.mp4");
    make_test_clip(&input, 2000);

    // Warm-up so one-time allocations (codec tables, thread pools) are not counted.
    pass_through(&input, &dir.path().join("warm.mp4"), 10);

    reset_peak_rss();
    assert_eq!(
        pass_through(&input, &dir.path().join("short.mp4"), 200),
        200
    );
    let short = peak_rss_kib();

    reset_peak_rss();
    assert_eq!(
        pass_through(&input, &dir.path().join("long-out.mp4"), 2000),
        2000
    );
    let long = peak_rss_kib();

    eprintln!("peak RSS: 200 frames {short} KiB, 2000 frames {long} KiB");
    assert!(
        (long as f64) <= 1.2 * short as f64,
        "peak RSS grew from {short} KiB to {long} KiB"
    );
}
