//! Shared helpers for the CLI tests: run the real `rotoscope` binary and check its exit
//! code and messages. Media helpers (ffmpeg / ffprobe, independent of the code under test)
//! come from the video tests' common module.
#![allow(dead_code)]

#[path = "../video_common/mod.rs"]
pub mod media;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_rotoscope")
}

/// Runs `rotoscope ARGS` with no stdin (as CI does) and captures its output.
pub fn rotoscope<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    Command::new(bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run the rotoscope binary")
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts success and returns stdout.
pub fn assert_ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "rotoscope failed ({:?}): {}",
        out.status.code(),
        stderr(out)
    );
    stdout(out)
}

/// Asserts exit code `code`, a single `error: ...` line as the last line of stderr that
/// contains every string in `needles`, and no panic. Returns that line.
pub fn assert_error(out: &Output, code: i32, needles: &[&str]) -> String {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(code), "exit code; stderr: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    let line = err
        .lines()
        .rev()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no `error:` line in: {err}"))
        .to_string();
    for needle in needles {
        assert!(line.contains(needle), "{needle:?} not in {line:?}");
    }
    line
}

pub fn sample() -> PathBuf {
    media::sample_path()
}

pub fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// Writes a preset file into `dir`.
pub fn write_preset(dir: &Path, name: &str, yaml: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, yaml).expect("write preset");
    path
}

/// A minimal preset that encodes fast (x264 ultrafast), for tests that only need the
/// pipeline to run.
pub const FAST_PRESET: &str = "\
model: {base: stable-diffusion-v1-5/stable-diffusion-v1-5}
prompt: test
output: {encoder_preset: ultrafast}
";

/// The JSON objects `--json` printed, one per stdout line.
pub fn json_lines(out: &Output) -> Vec<serde_json::Value> {
    stdout(out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}
