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

/// Conversion flags matching the reader's (bicubic, accurate rounding, full chroma).
pub const RGB_FLAGS: &str = "bicubic+accurate_rnd+full_chroma_int+full_chroma_inp";

/// All frames of `path` as tight RGB24, decoded by the ffmpeg CLI (which applies the
/// display rotation itself). `vf` is inserted before the RGB conversion.
pub fn ffmpeg_rgb_frames(path: &Path, vf: &str, width: u32, height: u32) -> Vec<Vec<u8>> {
    let mut filters = String::new();
    if !vf.is_empty() {
        filters.push_str(vf);
        filters.push(',');
    }
    filters.push_str(&format!("scale=flags={RGB_FLAGS},format=rgb24"));
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-v", "error", "-i"])
        .arg(path)
        .args(["-map", "0:v:0", "-vf", &filters, "-f", "rawvideo", "-"])
        .output()
        .expect("ffmpeg");
    assert!(
        out.status.success(),
        "ffmpeg decode failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let size = (width * height * 3) as usize;
    assert_eq!(out.stdout.len() % size, 0, "rawvideo size mismatch");
    out.stdout.chunks(size).map(|c| c.to_vec()).collect()
}

/// Mean and max absolute difference between two equally sized byte buffers.
pub fn diff_stats(a: &[u8], b: &[u8]) -> (f64, u8) {
    assert_eq!(a.len(), b.len());
    let mut sum = 0u64;
    let mut max = 0u8;
    for (x, y) in a.iter().zip(b) {
        let d = x.abs_diff(*y);
        sum += d as u64;
        max = max.max(d);
    }
    (sum as f64 / a.len() as f64, max)
}

/// Whether this FFmpeg build has an encoder (Debian's has all used here, but the tests
/// say so instead of failing obscurely on other builds).
pub fn has_encoder(name: &str) -> bool {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-encoders"])
        .output()
        .expect("ffmpeg");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some(name))
}

/// Frames ffmpeg's own `fps` filter makes from `path` at `fps` (the reference for CFR
/// mapping), counted from a framemd5 listing.
pub fn ffmpeg_fps_filter_count(path: &Path, fps: &str) -> u64 {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-v", "error", "-i"])
        .arg(path)
        .args([
            "-map",
            "0:v:0",
            "-vf",
            &format!("fps={fps}"),
            "-f",
            "framemd5",
            "-",
        ])
        .output()
        .expect("ffmpeg");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .count() as u64
}

/// Presentation timestamps (seconds) and durations of the first video stream's packets,
/// sorted by time, as ffprobe reports them.
pub fn video_packet_times(path: &Path) -> Vec<(f64, f64)> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-show_entries"])
        .args(["packet=pts_time,duration_time", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .expect("ffprobe");
    let mut times: Vec<(f64, f64)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut p = l.split(',');
            let pts = p.next()?.parse().ok()?;
            let dur = p.next().and_then(|d| d.parse().ok()).unwrap_or(0.0);
            Some((pts, dur))
        })
        .collect();
    times.sort_by(|a, b| a.0.total_cmp(&b.0));
    times
}

/// 333×197 yuv420p MPEG-4, VFR (frames dropped irregularly, jittered timestamps, a
/// half-second pause), with PCM audio, in Matroska. (`testsrc`, not `testsrc2`: the
/// latter rounds odd sizes down for YUV output.)
pub fn make_vfr_clip(path: &Path) {
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=333x197:rate=30:duration=3",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=44100:duration=3",
        "-vf",
        "select='not(eq(mod(n\\,5)\\,2))*not(between(n\\,40\\,55))',setpts='PTS+0.011*sin(N)/TB'",
        "-vsync",
        "vfr",
        "-c:v",
        "mpeg4",
        "-q:v",
        "4",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "pcm_s16le",
        path.to_str().unwrap(),
    ]);
}

/// A 512² H.264 clip of `frames` frames at 25 fps (`testsrc2`) with an AAC sine tone: the
/// input of the flat-memory tests.
pub fn make_test_clip(path: &Path, frames: u32) {
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

/// `dir/NAME`: a Matroska file whose video track has no frames left (1 s of video, 3 s of
/// audio, then everything before 2 s dropped by a stream copy).
pub fn make_frameless_clip(dir: &Path, name: &str) -> PathBuf {
    let av = dir.join(format!("{name}.full.mkv"));
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=64x48:rate=10:duration=1",
        "-f",
        "lavfi",
        "-i",
        "sine=duration=3",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-c:a",
        "pcm_s16le",
        av.to_str().unwrap(),
    ]);
    let empty = dir.join(name);
    ffmpeg(&[
        "-i",
        av.to_str().unwrap(),
        "-ss",
        "2",
        "-c",
        "copy",
        empty.to_str().unwrap(),
    ]);
    std::fs::remove_file(&av).unwrap();
    empty
}
