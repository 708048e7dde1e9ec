//! Bad input never panics: each case exits with code 2 and one `error:` line naming the
//! file, field or flag; unfinished features exit with 1. Nothing is left at the output.

mod cli_common;

use std::ffi::OsStr;
use std::path::Path;

use cli_common::media::{ffmpeg, make_frameless_clip};
use cli_common::*;

/// `rotoscope render INPUT -p PRESET -o OUTPUT EXTRA...`
fn render(input: &Path, preset: &OsStr, output: &Path, extra: &[&str]) -> std::process::Output {
    let mut args: Vec<&OsStr> = vec![
        "render".as_ref(),
        input.as_os_str(),
        "-p".as_ref(),
        preset,
        "-o".as_ref(),
        output.as_os_str(),
    ];
    args.extend(extra.iter().map(|s| OsStr::new(*s)));
    rotoscope(args)
}

fn assert_no_output(dir: &Path, name: &str) {
    let left: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(name))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn missing_input_file() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("nowhere.mp4");
    let out = render(&input, "anime".as_ref(), &dir.path().join("o.mp4"), &[]);
    assert_error(&out, 2, &["nowhere.mp4", "not found"]);
    assert_no_output(dir.path(), "o");
}

#[test]
fn input_that_is_not_a_video() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("notes.mp4");
    std::fs::write(&input, "just some text, not a video\n").unwrap();
    let out = render(&input, "anime".as_ref(), &dir.path().join("o.mp4"), &[]);
    assert_error(&out, 2, &["notes.mp4", "not a video"]);
    assert_no_output(dir.path(), "o");
}

#[test]
fn input_with_zero_video_frames() {
    let dir = tempfile::tempdir().unwrap();
    // Audio only: no video at all.
    let audio = dir.path().join("audio.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "sine=duration=1",
        "-c:a",
        "aac",
        audio.to_str().unwrap(),
    ]);
    let out = render(&audio, "anime".as_ref(), &dir.path().join("o.mp4"), &[]);
    assert_error(&out, 2, &["audio.mp4", "no video stream"]);

    // A video track whose frames were all cut away.
    let empty = make_frameless_clip(dir.path(), "empty.mkv");
    let out = render(&empty, "anime".as_ref(), &dir.path().join("o.mp4"), &[]);
    assert_error(&out, 2, &["empty.mkv", "no frames"]);
    assert_no_output(dir.path(), "o");
}

#[test]
fn truncated_input() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(sample()).unwrap();
    let input = dir.path().join("cut.mp4");
    std::fs::write(&input, &bytes[..bytes.len() / 2]).unwrap();
    let out = render(&input, "anime".as_ref(), &dir.path().join("o.mp4"), &[]);
    assert_error(&out, 2, &["cut.mp4", "truncated"]);
    assert_no_output(dir.path(), "o");
    let out = rotoscope([
        "plan".as_ref(),
        input.as_os_str(),
        "-p".as_ref(),
        "anime".as_ref(),
    ]);
    assert_error(&out, 2, &["cut.mp4", "truncated"]);
}

#[test]
fn unknown_preset_key() {
    let dir = tempfile::tempdir().unwrap();
    let preset = write_preset(
        dir.path(),
        "typo.yaml",
        "model: {base: a/b}\nprompt: cat\nsampler:\n  steps: 20\n  sede: 3\n",
    );
    let out = render(
        &sample(),
        preset.as_os_str(),
        &dir.path().join("o.mp4"),
        &[],
    );
    let line = assert_error(
        &out,
        2,
        &["typo.yaml:5:3", "sampler", "unknown field `sede`"],
    );
    assert!(line.contains("`seed`"), "lists the valid keys: {line}");
    let out = rotoscope([
        "plan".as_ref(),
        sample().as_os_str(),
        "-p".as_ref(),
        preset.as_os_str(),
    ]);
    assert_error(&out, 2, &["typo.yaml:5:3", "unknown field `sede`"]);
}

#[test]
fn invalid_preset_values_and_missing_presets() {
    let dir = tempfile::tempdir().unwrap();
    let preset = write_preset(
        dir.path(),
        "big.yaml",
        "model: {base: a/b}\nprompt: cat\nbatch: {frames: 300}\n",
    );
    let out = render(
        &sample(),
        preset.as_os_str(),
        &dir.path().join("o.mp4"),
        &[],
    );
    assert_error(&out, 2, &["big.yaml:3:8", "batch", "between 1 and 199"]);
    let out = render(
        &sample(),
        "no-such-style".as_ref(),
        &dir.path().join("o.mp4"),
        &[],
    );
    assert_error(&out, 2, &["no-such-style", "not found"]);
}

#[test]
fn unwritable_output() {
    let dir = tempfile::tempdir().unwrap();
    // A path below a regular file cannot be created, not even by root.
    let file = dir.path().join("plain.txt");
    std::fs::write(&file, "x").unwrap();
    let out = render(&sample(), "anime".as_ref(), &file.join("o.mp4"), &[]);
    assert_error(
        &out,
        2,
        &["plain.txt", "cannot write output", "not a directory"],
    );
    // procfs refuses new files whoever asks.
    let out = render(
        &sample(),
        "anime".as_ref(),
        Path::new("/proc/rotoscope-test.mp4"),
        &[],
    );
    assert_error(
        &out,
        2,
        &["/proc/rotoscope-test.mp4", "cannot write output"],
    );
    // PNG sequence into a directory that cannot be created.
    let out = render(&sample(), "anime".as_ref(), &file.join("frames/"), &[]);
    assert_error(&out, 2, &["plain.txt", "frames"]);
}

#[test]
fn existing_output_needs_force() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("taken.mp4");
    std::fs::write(&target, b"precious").unwrap();
    let out = render(&sample(), "anime".as_ref(), &target, &[]);
    assert_error(&out, 2, &["taken.mp4", "already exists", "--force"]);
    assert_eq!(std::fs::read(&target).unwrap(), b"precious");

    // A directory already holding a PNG sequence is protected the same way.
    let frames = dir.path().join("frames");
    std::fs::create_dir(&frames).unwrap();
    std::fs::write(frames.join("frame_000000.png"), b"old").unwrap();
    let out = render(&sample(), "anime".as_ref(), &frames, &[]);
    assert_error(&out, 2, &["frames", "already exists"]);

    // The input is never an output, --force or not.
    let copy = dir.path().join("in.mp4");
    std::fs::copy(sample(), &copy).unwrap();
    let out = render(&copy, "anime".as_ref(), &copy, &["--force"]);
    assert_error(&out, 2, &["in.mp4", "it is the input file"]);
}

#[test]
fn bad_flag_values() {
    let dir = tempfile::tempdir().unwrap();
    let o = dir.path().join("o.mp4");
    let out = render(&sample(), "anime".as_ref(), &o, &["--frames", "50..100"]);
    assert_error(&out, 2, &["--frames 50..100", "only 72 frames"]);
    // clap's own usage errors also exit with 2.
    let out = render(&sample(), "anime".as_ref(), &o, &["--frames", "abc"]);
    assert_error(&out, 2, &["--frames", "abc"]);
    let out = render(&sample(), "anime".as_ref(), &o, &["--seed", "-3"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = render(&sample(), "anime".as_ref(), &dir.path().join("o.avi"), &[]);
    assert_error(&out, 2, &["o.avi", ".mp4"]);
    assert_no_output(dir.path(), "o");
}

#[test]
fn batch_names_a_missing_jobs_file() {
    let out = rotoscope(["batch", "no-such-jobs.yaml"]);
    assert_error(&out, 2, &["no-such-jobs.yaml", "cannot read the jobs file"]);
}
