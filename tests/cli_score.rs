//! `rotoscope score` on real clips: an output that follows the input scores like the input;
//! a flickering one, and one with a jump at a batch seam, score worse.

mod cli_common;

use cli_common::media::ffmpeg;
use cli_common::{assert_error, assert_ok, rotoscope, sample};

/// Frames 0..24 of the sample at 128², with `vf` applied (lossless-ish x264).
fn clip(dir: &std::path::Path, name: &str, vf: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    let sample = sample();
    ffmpeg(&[
        "-i",
        sample.to_str().unwrap(),
        "-frames:v",
        "24",
        "-vf",
        &format!("scale=128:128,{vf}"),
        "-c:v",
        "libx264",
        "-qp",
        "0",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv444p",
        "-an",
        path.to_str().unwrap(),
    ]);
    path
}

fn report(args: &[&str]) -> serde_json::Value {
    let out = rotoscope(args);
    let text = assert_ok(&out);
    serde_json::from_str::<serde_json::Value>(&text).expect("score --json prints one JSON object")
        ["report"]
        .clone()
}

#[test]
fn flicker_and_seams_raise_the_scores() {
    let dir = tempfile::tempdir().unwrap();
    let input = clip(dir.path(), "input.mp4", "null");
    // Every other frame brighter: temporal flicker.
    let flicker = clip(
        dir.path(),
        "flicker.mp4",
        "geq=r='r(X,Y)+40*mod(N,2)':g='g(X,Y)+40*mod(N,2)':b='b(X,Y)+40*mod(N,2)'",
    );
    // From frame 12 on, a different tone: a jump at the seam of batches 0..14 / 10..24.
    let seam = clip(
        dir.path(),
        "seam.mp4",
        "geq=r='r(X,Y)*if(gte(N,12),0.6,1)':g='g(X,Y)':b='b(X,Y)*if(gte(N,12),1.3,1)'",
    );
    let (i, f, s) = (
        input.to_str().unwrap(),
        flicker.to_str().unwrap(),
        seam.to_str().unwrap(),
    );
    let batches = "0..14,10..24";

    let same = report(&["score", i, i, "--json", "--batches", batches]);
    assert_eq!(same["frames"], 24);
    assert_eq!(
        same["output"], same["input"],
        "an output equal to its input scores as the input"
    );
    let floor = same["input"]["warp_error"].as_f64().unwrap();

    let flickering = report(&["score", i, f, "--json"]);
    let flicker_error = flickering["output"]["warp_error"].as_f64().unwrap();
    assert!(
        flicker_error > 10.0 * floor,
        "flicker {flicker_error} vs input {floor}"
    );
    assert!(
        flickering["output"]["seam_error"].is_null(),
        "no batches given, no seam error"
    );

    let seamed = report(&["score", i, s, "--json", "--batches", batches]);
    let seam_error = seamed["output"]["seam_error"].as_f64().unwrap();
    let input_seam = seamed["input"]["seam_error"].as_f64().unwrap();
    assert!(
        seam_error > 2.0 * input_seam,
        "seam {seam_error} vs input {input_seam}"
    );
}

#[test]
fn mismatched_lengths_and_bad_batches_are_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let input = clip(dir.path(), "input.mp4", "null");
    let sample = sample();
    let out = rotoscope(["score", sample.to_str().unwrap(), input.to_str().unwrap()]);
    assert_error(&out, 2, &["input.mp4", "24 frames", "72"]);
    let i = input.to_str().unwrap();
    let out = rotoscope(["score", i, i, "--batches", "0..10,12..24"]);
    assert_error(&out, 2, &["--batches", "inside or right after"]);
}
