//! Decode → encode round trips: frame count, rate and audio duration survive.
//! Inputs are generated with the ffmpeg CLI; outputs are measured with ffprobe.

mod video_common;

use std::path::Path;

use rotoscope::preset::rational::Rational;
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
    // A name with a colon, spaces and non-ASCII: never taken for a protocol or mangled.
    let out = dir.path().join("out: clip ü.mp4");
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
    assert!(!dir.path().join("out: clip ü.tmp.mp4").exists());
}

fn assert_audio_close(source: &Path, output: &Path, seconds: f64, fps: f64) {
    let (a, b) = (audio_duration(source).min(seconds), audio_duration(output));
    eprintln!("audio: source {a:.4} s, output {b:.4} s");
    assert!((a - b).abs() <= 1.0 / fps, "audio {a} vs {b}");
}

#[test]
fn vfr_odd_size_clip_with_pcm_audio_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("vfr.mkv");
    make_vfr_clip(&input);
    let info = VideoReader::open(&input).unwrap().info().clone();
    assert_eq!((info.width, info.height), (333, 197));
    // Expected count from ffmpeg's own fps filter at the same rate.
    let expected = ffmpeg_fps_filter_count(&input, &info.fps.to_string());
    assert_eq!(info.frame_count, expected);

    let out = dir.path().join("out.mp4");
    let (frames, audio) = pass_through(&input, &out, ReadOptions::default());
    assert_eq!(frames, expected);
    assert_eq!(
        audio,
        AudioHandling::Reencoded {
            from: "pcm_s16le".into()
        }
    );
    assert_eq!(ffprobe_frame_count(&out), expected);
    // yuv420p needs even sizes: one repeated column and row.
    assert_eq!(ffprobe_value(&out, "v:0", "width").as_deref(), Some("334"));
    assert_eq!(ffprobe_value(&out, "v:0", "height").as_deref(), Some("198"));
    assert_eq!(
        ffprobe_value(&out, "a:0", "codec_name").as_deref(),
        Some("aac")
    );
    assert_eq!(
        ffprobe_value(&out, "v:0", "r_frame_rate"),
        Some(format!("{}/{}", info.fps.num, info.fps.den))
    );
    assert_audio_close(&input, &out, f64::MAX, info.fps.as_f64());
}

#[test]
fn opus_audio_is_copied_from_webm() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("clip.webm");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=160x120:rate=30:duration=2",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=330:sample_rate=48000:duration=2",
        "-c:v",
        "libvpx-vp9",
        "-deadline",
        "realtime",
        "-cpu-used",
        "8",
        "-c:a",
        "libopus",
        "-b:a",
        "48k",
        input.to_str().unwrap(),
    ]);
    let out = dir.path().join("out.mp4");
    let (frames, audio) = pass_through(&input, &out, ReadOptions::default());
    assert_eq!(frames, 60);
    assert_eq!(
        audio,
        AudioHandling::Copied {
            codec: "opus".into()
        }
    );
    assert_eq!(ffprobe_frame_count(&out), 60);
    assert_eq!(
        ffprobe_value(&out, "a:0", "codec_name").as_deref(),
        Some("opus")
    );
    assert_audio_close(&input, &out, f64::MAX, 30.0);
}

#[test]
fn frame_range_trims_the_audio_to_match() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("part.mp4");
    let options = ReadOptions {
        frames: Some(24..60),
        ..Default::default()
    };
    let (frames, _) = pass_through(&sample_path(), &out, options);
    assert_eq!(frames, 36);
    assert_eq!(ffprobe_frame_count(&out), 36);
    let b = audio_duration(&out);
    eprintln!("audio of frames 24..60: {b:.4} s");
    assert!(
        (b - 1.5).abs() <= 1.0 / 24.0,
        "audio {b} s for 1.5 s of frames"
    );
    // The audio starts with the first rendered frame.
    let start: f64 = ffprobe_value(&out, "a:0", "start_time")
        .unwrap()
        .parse()
        .unwrap();
    assert!(start.abs() <= 1.0 / 24.0, "audio starts at {start}");
}

#[test]
fn pcm_range_is_cut_to_the_sample() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("vfr.mkv");
    make_vfr_clip(&input);
    let out = dir.path().join("part.mp4");
    let options = ReadOptions {
        fps: Some(Rational::integer(24).unwrap()),
        frames: Some(12..60),
        ..Default::default()
    };
    let (frames, audio) = pass_through(&input, &out, options);
    assert_eq!(frames, 48);
    assert!(matches!(audio, AudioHandling::Reencoded { .. }));
    let b = audio_duration(&out);
    eprintln!("audio of frames 12..60 at 24 fps: {b:.4} s");
    assert!(
        (b - 2.0).abs() <= 1.0 / 24.0,
        "audio {b} s for 2 s of frames"
    );
}

#[test]
fn video_without_audio_gives_silent_output() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("silent.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=64x48:rate=10:duration=1",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv420p",
        input.to_str().unwrap(),
    ]);
    let out = dir.path().join("out.mp4");
    let (frames, audio) = pass_through(&input, &out, ReadOptions::default());
    assert_eq!(frames, 10);
    assert_eq!(audio, AudioHandling::None);
    assert_eq!(ffprobe_value(&out, "a:0", "codec_name"), None);
}

#[test]
fn round_trip_pixels_stay_close() {
    // Encoding at CRF 0 (lossless H.264) leaves only the RGB↔YUV rounding.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("lossless.mp4");
    let source: Vec<_> = VideoReader::open(sample_path())
        .unwrap()
        .map(|f| f.unwrap())
        .take(5)
        .collect();
    let mut settings = Mp4Settings::new(512, 512, Rational::integer(24).unwrap());
    settings.crf = 0.0;
    settings.preset = "ultrafast".into();
    let mut writer = Mp4Writer::create(&out, settings).unwrap();
    for f in &source {
        writer.write(f).unwrap();
    }
    writer.finish().unwrap();
    let back: Vec<_> = VideoReader::open(&out)
        .unwrap()
        .map(|f| f.unwrap())
        .collect();
    assert_eq!(back.len(), 5);
    for (a, b) in source.iter().zip(&back) {
        let (mean, max) = diff_stats(&a.data, &b.data);
        assert!(
            mean < 1.5 && max <= 40,
            "frame {}: mean {mean:.3} max {max}",
            a.index
        );
    }
}

#[test]
fn mpeg_ts_with_offset_timestamps_and_adts_audio() {
    // MPEG-TS starts its clock at 1.4 s and carries AAC with ADTS headers, which MP4
    // needs converted (FFmpeg's muxer inserts aac_adtstoasc itself).
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("clip.ts");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=96x64:rate=25:duration=2",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=500:sample_rate=48000:duration=2",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        input.to_str().unwrap(),
    ]);
    let out = dir.path().join("out.mp4");
    let (frames, audio) = pass_through(&input, &out, ReadOptions::default());
    assert_eq!(frames, 50);
    assert_eq!(
        audio,
        AudioHandling::Copied {
            codec: "aac".into()
        }
    );
    assert_eq!(ffprobe_frame_count(&out), 50);
    assert_audio_close(&input, &out, f64::MAX, 25.0);
    let start: f64 = ffprobe_value(&out, "a:0", "start_time")
        .unwrap()
        .parse()
        .unwrap();
    assert!(start.abs() <= 1.0 / 25.0, "audio starts at {start}");
}
