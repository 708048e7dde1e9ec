//! Bad inputs and outputs give their specific error, naming the file (and frame), and
//! never panic.

mod video_common;

use std::fs;
use std::path::{Path, PathBuf};

use rotoscope::preset::rational::Rational;
use rotoscope::video::{
    probe, Frame, Mp4Settings, Mp4Writer, PngSequenceWriter, ReadOptions, VideoError, VideoReader,
};
use video_common::*;

fn open_err(path: &Path) -> VideoError {
    let from_probe = probe(path).unwrap_err();
    let from_reader = VideoReader::open(path).unwrap_err();
    assert_eq!(
        format!("{from_probe}"),
        format!("{from_reader}"),
        "probe and reader agree"
    );
    assert!(
        from_probe
            .to_string()
            .contains(&*path.file_name().unwrap().to_string_lossy()),
        "message names the file: {from_probe}"
    );
    from_probe
}

fn cut_in_half(src: &Path, dst: &Path) {
    let bytes = fs::read(src).unwrap();
    fs::write(dst, &bytes[..bytes.len() / 2]).unwrap();
}

#[test]
fn missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let err = open_err(&dir.path().join("nope.mp4"));
    assert!(matches!(err, VideoError::NotFound { .. }), "{err}");
}

#[test]
fn text_file_named_mp4() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.mp4");
    fs::write(&path, "These are my notes, not a video.\n".repeat(50)).unwrap();
    let err = open_err(&path);
    assert!(matches!(err, VideoError::NotAVideo { .. }), "{err}");
}

#[test]
fn empty_file_and_directory() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.mp4");
    fs::write(&empty, b"").unwrap();
    assert!(matches!(open_err(&empty), VideoError::NotAVideo { .. }));
    let sub = dir.path().join("folder.mp4");
    fs::create_dir(&sub).unwrap();
    assert!(matches!(open_err(&sub), VideoError::NotAVideo { .. }));
}

#[test]
fn audio_only_files_have_no_video_stream() {
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("tone.wav");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "sine=duration=0.5",
        wav.to_str().unwrap(),
    ]);
    let err = open_err(&wav);
    assert!(matches!(err, VideoError::NoVideoStream { .. }), "{err}");
    assert!(err.to_string().contains("audio pcm_s16le"), "{err}");

    // Cover art is a video stream in FFmpeg's eyes, but not a video.
    let cover = dir.path().join("cover.png");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=64x64",
        "-frames:v",
        "1",
        cover.to_str().unwrap(),
    ]);
    let mp3 = dir.path().join("song.mp3");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "sine=duration=0.5",
        "-i",
        cover.to_str().unwrap(),
        "-map",
        "0",
        "-map",
        "1",
        "-c:a",
        "libmp3lame",
        "-c:v",
        "png",
        "-disposition:v",
        "attached_pic",
        mp3.to_str().unwrap(),
    ]);
    let err = open_err(&mp3);
    assert!(matches!(err, VideoError::NoVideoStream { .. }), "{err}");
}

#[test]
fn video_stream_without_frames() {
    let dir = tempfile::tempdir().unwrap();
    let zero = make_frameless_clip(dir.path(), "zero.mkv");
    let err = open_err(&zero);
    assert!(matches!(err, VideoError::ZeroFrames { .. }), "{err}");
}

/// An MP4 as ffmpeg writes it by default, with the index at the end.
fn plain_mp4(dir: &Path) -> PathBuf {
    let path = dir.join("plain.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=128x96:rate=24:duration=2",
        "-f",
        "lavfi",
        "-i",
        "sine=duration=2",
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
    path
}

#[test]
fn truncated_mp4_without_index() {
    let dir = tempfile::tempdir().unwrap();
    let cut = dir.path().join("cut.mp4");
    cut_in_half(&plain_mp4(dir.path()), &cut);
    let err = open_err(&cut);
    match &err {
        VideoError::Truncated {
            frame: None,
            detail,
            ..
        } => {
            assert!(detail.contains("moov"), "{err}")
        }
        other => panic!("expected Truncated, got {other}"),
    }
}

#[test]
fn truncated_mp4_with_index_in_front() {
    // The sample has its index first (+faststart): the index promises 72 frames.
    let dir = tempfile::tempdir().unwrap();
    let cut = dir.path().join("cut.mp4");
    cut_in_half(&sample_path(), &cut);
    let err = open_err(&cut);
    let VideoError::Truncated {
        frame: Some(at), ..
    } = err
    else {
        panic!("expected Truncated with a frame, got {err}");
    };
    assert!(at > 0 && at < 72, "damage at frame {at}: {err}");
    assert!(
        err.to_string().contains(&format!("from frame {at}")),
        "{err}"
    );

    // What is there can still be read on request: exactly `at` frames.
    let options = ReadOptions {
        allow_truncated: true,
        ..Default::default()
    };
    let reader = VideoReader::open_with(&cut, options).unwrap();
    assert_eq!(reader.info().frame_count, at);
    let frames: Vec<_> = reader.collect();
    for f in &frames {
        if let Err(e) = f {
            eprintln!("error: {e}");
        }
    }
    assert_eq!(frames.len() as u64, at);
    assert!(frames.iter().all(|f| f.is_ok()));
}

#[test]
fn truncated_matroska() {
    let dir = tempfile::tempdir().unwrap();
    let mkv = dir.path().join("clip.mkv");
    ffmpeg(&[
        "-i",
        sample_path().to_str().unwrap(),
        "-c",
        "copy",
        mkv.to_str().unwrap(),
    ]);
    let cut = dir.path().join("cut.mkv");
    cut_in_half(&mkv, &cut);
    let err = open_err(&cut);
    let VideoError::Truncated {
        frame: Some(at), ..
    } = err
    else {
        panic!("expected Truncated with a frame, got {err}");
    };
    assert!(at > 0 && at < 72, "damage at frame {at}: {err}");
    let options = ReadOptions {
        allow_truncated: true,
        ..Default::default()
    };
    let reader = VideoReader::open_with(&cut, options).unwrap();
    let fps = reader.info().fps;

    // The readable part renders with its audio, which stops where the data does.
    let out = dir.path().join("salvaged.mp4");
    let mut settings = Mp4Settings::new(512, 512, fps);
    settings.preset = "ultrafast".into();
    settings.audio_source = Some(cut.clone());
    let mut writer = Mp4Writer::create(&out, settings).unwrap();
    let mut n = 0;
    for frame in reader {
        writer.write(&frame.unwrap()).unwrap();
        n += 1;
    }
    assert_eq!(n, at);
    writer.finish().unwrap();
    assert_eq!(ffprobe_frame_count(&out), at);
    let audio = audio_duration(&out);
    let video = at as f64 / fps.as_f64();
    assert!(
        audio <= video + 0.5 && audio > video - 0.5,
        "audio {audio} s for {video} s of video"
    );
}

#[test]
fn damaged_bytes_never_panic() {
    // Overwrite stretches of the sample with garbage at several places: whatever FFmpeg
    // makes of it, the reader yields at most the promised frames or a clear error.
    let dir = tempfile::tempdir().unwrap();
    let original = fs::read(sample_path()).unwrap();
    let mut seed = 0x2545F4914F6CDD1Du64;
    let mut skipped = 0;
    for case in 0..6 {
        let mut bytes = original.clone();
        let at = bytes.len() * (case + 1) / 8;
        for b in &mut bytes[at..at + 4096] {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            *b = seed as u8;
        }
        let path = dir.path().join(format!("damaged{case}.mp4"));
        fs::write(&path, &bytes).unwrap();
        match VideoReader::open(&path) {
            Err(e) => {
                eprintln!("case {case}: refused: {e}");
                assert!(e.to_string().contains("damaged"), "case {case}: {e}")
            }
            Ok(mut reader) => {
                let promised = reader.info().frame_count;
                let mut yielded = 0u64;
                for item in reader.by_ref() {
                    match item {
                        Ok(_) => yielded += 1,
                        Err(e) => {
                            assert!(
                                matches!(
                                    e,
                                    VideoError::DecodeFailed { .. } | VideoError::Truncated { .. }
                                ),
                                "case {case}: {e}"
                            );
                            break;
                        }
                    }
                }
                eprintln!(
                    "case {case}: {yielded} of {promised} frames, {} packets skipped",
                    reader.skipped_packets()
                );
                assert!(yielded <= promised, "case {case}: {yielded} > {promised}");
                skipped += reader.skipped_packets();
            }
        }
    }
    // With this seed some packets are beyond repair: the skip path was exercised.
    assert!(skipped > 0);
}

fn tiny_frame(index: u64) -> Frame {
    Frame::new(index, 64, 48, vec![128; 64 * 48 * 3]).unwrap()
}

fn tiny_settings() -> Mp4Settings {
    let mut s = Mp4Settings::new(64, 48, Rational::integer(10).unwrap());
    s.preset = "ultrafast".into();
    s
}

#[test]
fn outputs_are_never_clobbered_or_left_half_written() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.mp4");
    let temp = dir.path().join("out.tmp.mp4");

    // Dropped without finish: no output, no temporary file.
    let mut writer = Mp4Writer::create(&out, tiny_settings()).unwrap();
    assert!(temp.exists());
    writer.write(&tiny_frame(0)).unwrap();
    drop(writer);
    assert!(!out.exists() && !temp.exists());

    // Nothing written: an error, no file.
    let writer = Mp4Writer::create(&out, tiny_settings()).unwrap();
    assert!(matches!(
        writer.finish(),
        Err(VideoError::NothingWritten { .. })
    ));
    assert!(!out.exists() && !temp.exists());

    // A finished file exists only under its final name.
    let mut writer = Mp4Writer::create(&out, tiny_settings()).unwrap();
    for i in 0..3 {
        writer.write(&tiny_frame(i)).unwrap();
    }
    writer.finish().unwrap();
    assert!(out.exists() && !temp.exists());
    assert_eq!(ffprobe_frame_count(&out), 3);

    // Refused without overwrite, replaced with it.
    let err = Mp4Writer::create(&out, tiny_settings()).unwrap_err();
    assert!(matches!(err, VideoError::OutputExists { .. }), "{err}");
    assert!(err.to_string().contains("--force"), "{err}");
    let mut settings = tiny_settings();
    settings.overwrite = true;
    let mut writer = Mp4Writer::create(&out, settings).unwrap();
    writer.write(&tiny_frame(0)).unwrap();
    writer.finish().unwrap();
    assert_eq!(ffprobe_frame_count(&out), 1);
}

#[test]
fn unwritable_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let no_dir = dir.path().join("missing/out.mp4");
    let err = Mp4Writer::create(&no_dir, tiny_settings()).unwrap_err();
    assert!(matches!(err, VideoError::Unwritable { .. }), "{err}");
    assert!(err.to_string().contains("missing"), "{err}");

    let file = dir.path().join("plain-file");
    fs::write(&file, b"x").unwrap();
    let under_file = file.join("out.mp4");
    let err = Mp4Writer::create(&under_file, tiny_settings()).unwrap_err();
    assert!(matches!(err, VideoError::Unwritable { .. }), "{err}");
    let err = PngSequenceWriter::create(&under_file, false).unwrap_err();
    assert!(matches!(err, VideoError::Unwritable { .. }), "{err}");

    let err = Mp4Writer::create(dir.path(), tiny_settings()).unwrap_err();
    assert!(matches!(err, VideoError::Unwritable { .. }), "{err}");
}

#[test]
fn frames_of_the_wrong_size_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = Mp4Writer::create(dir.path().join("out.mp4"), tiny_settings()).unwrap();
    let wrong = Frame::new(7, 32, 48, vec![0; 32 * 48 * 3]).unwrap();
    let err = writer.write(&wrong).unwrap_err();
    assert!(
        matches!(err, VideoError::FrameMismatch { frame: 7, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("frame 7"), "{err}");
    let broken = Frame {
        index: 8,
        width: 64,
        height: 48,
        data: vec![0; 10],
    };
    assert!(matches!(
        writer.write(&broken),
        Err(VideoError::FrameMismatch { .. })
    ));
    let mut png = PngSequenceWriter::create(dir.path().join("seq"), false).unwrap();
    assert!(matches!(
        png.write(&broken),
        Err(VideoError::FrameMismatch { .. })
    ));
}

#[test]
fn missing_audio_source_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = tiny_settings();
    settings.audio_source = Some(dir.path().join("gone.mp4"));
    let err = Mp4Writer::create(dir.path().join("out.mp4"), settings).unwrap_err();
    assert!(matches!(err, VideoError::NotFound { .. }), "{err}");
    assert!(!dir.path().join("out.tmp.mp4").exists());
}
