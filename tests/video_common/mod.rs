//! Shared helpers for the video tests: making inputs with the ffmpeg CLI and measuring
//! outputs with ffprobe (independent of the code under test).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn sample_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/astronaut.mp4")
}

/// Runs `ffmpeg -y -v error <args>`; panics with its stderr on failure.
pub fn ffmpeg(args: &[&str]) {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-y", "-v", "error"])
        .args(args)
        .output()
        .expect("the ffmpeg CLI (Debian package `ffmpeg`) is needed by the video tests");
    assert!(
        out.status.success(),
        "ffmpeg {:?} failed: {}",
        args,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `ffprobe -show_entries <entries>` for one stream, as key=value lines.
pub fn ffprobe_stream(path: &Path, stream: &str, entries: &str) -> Vec<(String, String)> {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            stream,
            "-show_entries",
            entries,
        ])
        .args(["-of", "default=noprint_wrappers=1"])
        .arg(path)
        .output()
        .expect("ffprobe is needed by the video tests");
    assert!(out.status.success(), "ffprobe failed on {}", path.display());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn ffprobe_value(path: &Path, stream: &str, entry: &str) -> Option<String> {
    ffprobe_stream(path, stream, &format!("stream={entry}"))
        .into_iter()
        .find(|(k, _)| k == entry)
        .map(|(_, v)| v)
}

/// Number of video frames, counted by decoding with ffprobe.
pub fn ffprobe_frame_count(path: &Path) -> u64 {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
        .args(["-show_entries", "stream=nb_read_frames", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .expect("ffprobe");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("frame count")
}

/// Duration in seconds of the first audio stream: end of its last packet minus start of
/// its first, from the packet list (works for MP4, MKV and WebM alike).
pub fn audio_duration(path: &Path) -> f64 {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "a:0", "-show_entries"])
        .args(["packet=pts_time,duration_time", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .expect("ffprobe");
    let mut first = f64::MAX;
    let mut end = f64::MIN;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let mut parts = line.split(',');
        let pts: f64 = match parts.next().and_then(|v| v.parse().ok()) {
            Some(v) => v,
            None => continue,
        };
        let dur: f64 = parts.next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
        first = first.min(pts);
        end = end.max(pts + dur);
    }
    assert!(end > first, "no audio packets in {}", path.display());
    end - first.max(0.0)
}
