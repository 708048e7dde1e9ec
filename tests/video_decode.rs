//! Decoding: frame counts, rates, ranges, rotation, codecs, pixel agreement with the
//! ffmpeg CLI. Inputs are generated with the ffmpeg CLI into a temporary directory.

mod video_common;

use std::path::{Path, PathBuf};

use rotoscope::preset::rational::Rational;
use rotoscope::video::{probe, Frame, ReadOptions, VideoReader};
use video_common::*;

fn read_all(path: &Path, options: ReadOptions) -> Vec<Frame> {
    VideoReader::open_with(path, options)
        .unwrap()
        .map(|f| f.unwrap())
        .collect()
}

/// Frames must match the ffmpeg CLI's decode of the same file to within rounding.
fn assert_matches_ffmpeg(path: &Path, frames: &[Frame], vf: &str) {
    let (w, h) = (frames[0].width, frames[0].height);
    let reference = ffmpeg_rgb_frames(path, vf, w, h);
    assert_eq!(reference.len(), frames.len(), "frame count vs ffmpeg");
    for (i, (ours, theirs)) in frames.iter().zip(&reference).enumerate() {
        let (mean, max) = diff_stats(&ours.data, theirs);
        assert!(
            mean < 0.5 && max <= 24,
            "{}: frame {i} differs from ffmpeg: mean {mean:.3}, max {max}",
            path.display()
        );
    }
}

#[test]
fn sample_decodes_exactly() {
    let info = probe(sample_path()).unwrap();
    assert_eq!((info.width, info.height), (512, 512));
    assert_eq!(info.fps, Rational::integer(24).unwrap());
    assert_eq!(info.frame_count, 72);
    assert_eq!(info.start_frame, 0);
    assert!((info.duration_secs - 3.0).abs() < 1e-9);
    assert!(info.has_audio);
    assert_eq!(info.rotation_degrees, 0);
    assert_eq!(info.codec, "h264");

    let frames = read_all(&sample_path(), ReadOptions::default());
    assert_eq!(frames.len(), 72);
    for (i, f) in frames.iter().enumerate() {
        assert_eq!(f.index, i as u64);
        assert_eq!(f.data.len(), 512 * 512 * 3);
    }
    // The sample is tagged BT.709; ffmpeg is told the same explicitly.
    assert_matches_ffmpeg(
        &sample_path(),
        &frames,
        "scale=in_color_matrix=bt709:in_range=tv:flags=bicubic+accurate_rnd+full_chroma_int+full_chroma_inp",
    );
}

#[test]
fn frame_ranges_and_rate_override_pick_the_right_frames() {
    let all = read_all(&sample_path(), ReadOptions::default());

    // A range in the middle (the reader seeks) and at the start.
    for range in [30..41, 0..5, 70..72] {
        let options = ReadOptions {
            frames: Some(range.clone()),
            ..Default::default()
        };
        let reader = VideoReader::open_with(sample_path(), options.clone()).unwrap();
        assert_eq!(reader.info().frame_count, range.end - range.start);
        assert_eq!(reader.info().start_frame, range.start);
        let part = read_all(&sample_path(), options);
        assert_eq!(part.len() as u64, range.end - range.start);
        for f in &part {
            assert_eq!(
                f, &all[f.index as usize],
                "frame {} of range {range:?}",
                f.index
            );
        }
    }

    // Half the rate: output frame n is source frame 2n (ties round away from zero).
    let half = read_all(
        &sample_path(),
        ReadOptions {
            fps: Some(Rational::integer(12).unwrap()),
            ..Default::default()
        },
    );
    assert_eq!(half.len(), 36);
    for (n, f) in half.iter().enumerate() {
        assert_eq!(f.data, all[2 * n].data, "12 fps frame {n}");
    }

    // Double the rate: every frame twice.
    let double = read_all(
        &sample_path(),
        ReadOptions {
            fps: Some(Rational::integer(48).unwrap()),
            ..Default::default()
        },
    );
    assert_eq!(double.len(), 144);
    for (n, f) in double.iter().enumerate() {
        assert_eq!(f.data, all[n / 2].data, "48 fps frame {n}");
    }
}

#[test]
fn ranges_that_seek_match_a_full_decode() {
    // Frequent keyframes and B-frames (so the reader really seeks), the same in MPEG-TS
    // (which seeks by timestamp, not to keyframes), and a VFR Matroska file (seeking by
    // cues, timestamps off the grid).
    let dir = tempfile::tempdir().unwrap();
    let gop = dir.path().join("gop.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=128x96:rate=25:duration=4",
        "-c:v",
        "libx264",
        "-preset",
        "fast",
        "-g",
        "12",
        "-bf",
        "3",
        "-pix_fmt",
        "yuv420p",
        gop.to_str().unwrap(),
    ]);
    let ts = dir.path().join("gop.ts");
    ffmpeg(&[
        "-i",
        gop.to_str().unwrap(),
        "-c",
        "copy",
        ts.to_str().unwrap(),
    ]);
    let vfr = dir.path().join("vfr.mkv");
    make_vfr_clip(&vfr);
    for path in [&gop, &ts, &vfr] {
        let all = read_all(path, ReadOptions::default());
        let n = all.len() as u64;
        for range in [n / 2..n / 2 + 7, n - 3..n, 13..14] {
            let part = read_all(
                path,
                ReadOptions {
                    frames: Some(range.clone()),
                    ..Default::default()
                },
            );
            let expected: Vec<_> = all[range.start as usize..range.end as usize].to_vec();
            assert!(part == expected, "{}: range {range:?}", path.display());
        }
    }
}

#[test]
fn bad_ranges_are_rejected() {
    for range in [70..73, 5..5, 80..90] {
        let err = VideoReader::open_with(
            sample_path(),
            ReadOptions {
                frames: Some(range.clone()),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                rotoscope::video::VideoError::InvalidRange {
                    frame_count: 72,
                    ..
                }
            ),
            "{range:?}: {err}"
        );
    }
}

fn make_rotated(dir: &Path, degrees: &str) -> PathBuf {
    let plain = dir.join("plain.mp4");
    if !plain.exists() {
        ffmpeg(&[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=24:duration=0.5",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
            plain.to_str().unwrap(),
        ]);
    }
    let out = dir.join(format!("rot{degrees}.mp4"));
    ffmpeg(&[
        "-i",
        plain.to_str().unwrap(),
        "-c",
        "copy",
        "-metadata:s:v:0",
        &format!("rotate={degrees}"),
        out.to_str().unwrap(),
    ]);
    out
}

#[test]
fn rotation_metadata_is_applied_like_ffmpeg_does() {
    let dir = tempfile::tempdir().unwrap();
    // FFmpeg 5.1 turns the `rotate` tag into a display matrix; its own player and CLI
    // then rotate by the matrix. Our frames must look exactly like the CLI's.
    for (tag, expect_clockwise) in [("90", 270), ("270", 90), ("180", 180)] {
        let path = make_rotated(dir.path(), tag);
        let info = probe(&path).unwrap();
        assert_eq!(info.rotation_degrees, expect_clockwise, "rotate={tag}");
        let expect_dims = if tag == "180" { (320, 240) } else { (240, 320) };
        assert_eq!((info.width, info.height), expect_dims, "rotate={tag}");
        let frames = read_all(&path, ReadOptions::default());
        assert_eq!(frames.len(), 12);
        assert!(frames.iter().all(|f| (f.width, f.height) == expect_dims));
        // BT.601 for SD, as both sides assume for untagged video.
        assert_matches_ffmpeg(&path, &frames, "");
    }
}

#[test]
fn vfr_odd_size_clip_maps_to_a_constant_rate() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vfr.mkv");
    make_vfr_clip(&path);
    let info = probe(&path).unwrap();
    assert_eq!((info.width, info.height), (333, 197));

    for fps in ["24", "30", "10"] {
        let rate: Rational = fps.parse().unwrap();
        let options = ReadOptions {
            fps: Some(rate),
            ..Default::default()
        };
        let info = rotoscope::video::probe_with(&path, &options).unwrap();
        // Expected count from ffprobe's packet times: first start to last end.
        let times = video_packet_times(&path);
        let start = times.first().unwrap().0;
        let last = times.last().unwrap();
        let end = times
            .iter()
            .map(|(p, d)| p + d)
            .fold(last.0 + last.1, f64::max);
        let expected = ((end - start) * rate.as_f64()).round() as u64;
        assert_eq!(info.frame_count, expected, "frame count at {fps} fps");
        // ffmpeg's own fps filter agrees (within its end-of-stream rounding).
        let reference = ffmpeg_fps_filter_count(&path, fps);
        eprintln!(
            "{fps} fps: ours {} (expected {expected}), ffmpeg fps filter {reference}",
            info.frame_count
        );
        assert!(
            info.frame_count.abs_diff(reference) <= 1,
            "{fps} fps: ours {} vs ffmpeg fps filter {reference}",
            info.frame_count
        );
        let frames = read_all(&path, options);
        assert_eq!(frames.len() as u64, info.frame_count);
        assert!(frames.iter().all(|f| (f.width, f.height) == (333, 197)));
        // Same pictures in the same slots as ffmpeg's fps filter.
        assert_matches_ffmpeg(&path, &frames, &format!("fps={fps}"));
    }
}

#[test]
fn other_codecs_decode() {
    let dir = tempfile::tempdir().unwrap();
    // (encoder, file name, encoder options)
    let cases = [
        (
            "libvpx-vp9",
            "clip.webm",
            "-c:v libvpx-vp9 -deadline realtime -cpu-used 8 -b:v 500k",
        ),
        (
            "libx265",
            "clip.mp4",
            "-c:v libx265 -preset ultrafast -x265-params log-level=error",
        ),
        (
            "libx265",
            "clip10.mkv",
            "-c:v libx265 -preset ultrafast -pix_fmt yuv420p10le -x265-params log-level=error",
        ),
        ("prores_ks", "clip.mov", "-c:v prores_ks -profile:v 0"),
        (
            "libx264",
            "clip.mkv",
            "-c:v libx264 -preset ultrafast -pix_fmt yuv444p",
        ),
    ];
    for (encoder, name, args) in cases {
        if !has_encoder(encoder) {
            eprintln!("skipping {encoder}: not in this FFmpeg build");
            continue;
        }
        let path = dir.path().join(format!("{encoder}-{name}"));
        let mut full = vec![
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=160x120:rate=25:duration=1",
        ];
        full.extend(args.split_whitespace());
        full.push(path.to_str().unwrap());
        ffmpeg(&full);
        let info = probe(&path).unwrap();
        assert_eq!((info.width, info.height), (160, 120), "{encoder}");
        assert_eq!(info.fps, Rational::integer(25).unwrap(), "{encoder}");
        assert_eq!(info.frame_count, 25, "{encoder}");
        let frames = read_all(&path, ReadOptions::default());
        assert_eq!(frames.len(), 25, "{encoder}");
        assert_eq!(ffprobe_frame_count(&path), 25, "{encoder}");
        assert_matches_ffmpeg(&path, &frames, "");
    }
}
