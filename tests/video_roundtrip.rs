//! Decode → encode round trips: frame count, rate and audio duration survive.
//! Inputs are generated with the ffmpeg CLI; outputs are measured with ffprobe.

mod video_common;

use std::path::Path;

use rotoscope::video::{
    frames_to_seconds, AudioHandling, Mp4Settings, Mp4Writer, ReadOptions, VideoReader,
};
use video_common::*;

/// Copies every frame of `input` into `output` with its audio; returns the frame count.
fn pass_through(input: &Path, output: &Path, options: ReadOptions) -> (u64, AudioHandling) {
    let reader = VideoReader::open_with(input, options.clone()).unwrap();
    let info = reader.info().clone();
    let mut settings = Mp4Settings::new(info.width, info.height, info.fps);
    settings.preset = "ultrafast".into();
    settings.audio_source = Some(input.to_path_buf());
    settings.audio_range = options
        .frames
        .as_ref()
        .map(|r| frames_to_seconds(r, info.fps));
    let mut writer = Mp4Writer::create(output, settings).unwrap();
    for frame in reader {
        writer.write(&frame.unwrap()).unwrap();
    }
    let summary = writer.finish().unwrap();
    assert_eq!(summary.frames, info.frame_count);
    (summary.frames, summary.audio)
}

#[test]
fn sample_round_trip_keeps_frames_rate_and_audio() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.mp4");
    let (frames, audio) = pass_through(&sample_path(), &out, ReadOptions::default());
    assert_eq!(frames, 72);
    assert_eq!(
        audio,
        AudioHandling::Copied {
            codec: "aac".into()
        }
    );
    assert_eq!(ffprobe_frame_count(&out), 72);
    assert_eq!(
        ffprobe_value(&out, "v:0", "r_frame_rate").as_deref(),
        Some("24/1")
    );
    assert_eq!(
        ffprobe_value(&out, "v:0", "pix_fmt").as_deref(),
        Some("yuv420p")
    );
    let (a, b) = (audio_duration(&sample_path()), audio_duration(&out));
    eprintln!("audio: source {a:.4} s, output {b:.4} s");
    assert!((a - b).abs() <= 1.0 / 24.0, "audio {a} vs {b}");
    assert!(!dir.path().join("out.tmp.mp4").exists());
}
