//! Shared helpers for the CLI tests: run the real `rotoscope` binary and check its exit
//! code and messages. Media helpers (ffmpeg / ffprobe, independent of the code under test)
//! come from the video tests' common module.
#![allow(dead_code)]

#[path = "../video_common/mod.rs"]
pub mod media;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::SystemTime;

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_rotoscope")
}

/// `rotoscope ARGS` with no stdin (as CI does), not yet run: for callers that set a working
/// directory, environment variables or output files first (then `capture` or `spawn`).
pub fn command<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut command = Command::new(bin());
    command.args(args).stdin(Stdio::null());
    command
}

/// Runs `command` and captures its output.
pub fn capture(command: &mut Command) -> Output {
    command.output().expect("run the rotoscope binary")
}

/// Runs `rotoscope ARGS` with no stdin (as CI does) and captures its output.
pub fn rotoscope<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    capture(&mut command(args))
}

/// Runs `rotoscope ARGS` in the working directory `dir`.
pub fn rotoscope_in<I, S>(dir: &Path, args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    capture(command(args).current_dir(dir))
}

/// Runs `rotoscope ARGS` with the environment variables `vars` set.
pub fn rotoscope_env<I, S, V>(args: I, vars: &[(&str, V)]) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
    V: AsRef<OsStr>,
{
    let mut command = command(args);
    for (key, value) in vars {
        command.env(key, value);
    }
    capture(&mut command)
}

/// Makes `command` run as on a machine without network access to the Hugging Face hub and
/// with the hub cache in `hf_home`: `HF_HUB_OFFLINE=1`, `HF_HOME=hf_home`, no `HF_HUB_CACHE`.
pub fn offline_hub<'a>(command: &'a mut Command, hf_home: &Path) -> &'a mut Command {
    command
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HOME", hf_home)
        .env_remove("HF_HUB_CACHE")
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts success and returns stdout.
pub fn assert_ok(out: &Output) -> String {
    assert_success(out);
    stdout(out)
}

/// Asserts success.
pub fn assert_success(out: &Output) {
    assert!(
        out.status.success(),
        "rotoscope failed ({:?}): {}",
        out.status.code(),
        stderr(out)
    );
}

/// Asserts exit code `code`, a single `error: ...` line as the last line of stderr that
/// contains every string in `needles`, and no panic. Returns that line.
pub fn assert_error(out: &Output, code: i32, needles: &[&str]) -> String {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(code), "exit code; stderr: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    error_line(&err, needles)
}

/// `assert_error` without its check for a panic: exit code `code` and the last `error: ...`
/// line of stderr, which contains every string in `needles`. Returns that line.
pub fn assert_error_code(out: &Output, code: i32, needles: &[&str]) -> String {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(code), "exit code; stderr: {err}");
    error_line(&err, needles)
}

/// The last `error: ...` line of `err`, asserted to contain every string in `needles`.
fn error_line(err: &str, needles: &[&str]) -> String {
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
    parse_json_lines(&stdout(out))
}

/// The JSON objects of `text`, one per line.
pub fn parse_json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// When `path` was last modified.
pub fn modified(path: &Path) -> SystemTime {
    std::fs::metadata(path).unwrap().modified().unwrap()
}
