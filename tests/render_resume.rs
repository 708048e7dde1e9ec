//! Resumable renders through the real binary, with the tiny random models and every temporal
//! option on (tests/fixtures/presets/render_temporal.yaml: 128², batches of 8 sharing 2):
//!
//! * a render killed (SIGKILL) after its first batch, resumed, interrupted with Ctrl-C
//!   (SIGINT: exit 130, a message on how to resume), and resumed again produces a PNG
//!   sequence byte for byte identical to an uninterrupted render's; so does an MP4 output
//!   (compared as files);
//! * a changed preset invalidates finished batches and says so; `--no-resume` clears them.

mod render_common;

use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use render_common::*;

/// 30 frames in batches of 8 sharing 2: 5 batches.
const FRAMES: &str = "..30";
const BATCHES: usize = 5;

fn sample() -> PathBuf {
    repo_path("samples/astronaut.mp4")
}

fn spawn(preset: &Path, output: &Path, work: &Path, log: &Path) -> Child {
    let work = work.display().to_string();
    render_command(
        &sample(),
        preset,
        output,
        &["--frames", FRAMES, "--work-dir", &work],
    )
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(log).unwrap())
    .spawn()
    .expect("start rotoscope")
}

/// Start a render and send `signal` once it has finished `batches` batches of its own;
/// returns how it ended, its stderr, and how many batches the work directory held when the
/// signal went out.
fn interrupt_after(
    preset: &Path,
    output: &Path,
    work: &Path,
    batches: usize,
    signal: libc::c_int,
) -> (ExitStatus, String, usize) {
    let log = work.with_extension(format!("log{signal}"));
    // Manifest times have the file system's granularity: start a little after the last one.
    std::thread::sleep(Duration::from_millis(20));
    let spawned = std::time::SystemTime::now();
    let mut child = spawn(preset, output, work, &log);
    let started = Instant::now();
    let done_at_signal = loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "render ended ({status}) before {batches} batches were finished: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        if finished_since(work, spawned) >= batches {
            let done = finished_batches(work);
            // SAFETY: signalling our own child process, which has not been waited for.
            assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, signal) }, 0);
            break done;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "render too slow"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let status = child.wait().unwrap();
    (
        status,
        std::fs::read_to_string(&log).unwrap_or_default(),
        done_at_signal,
    )
}

fn render_to_end(preset: &Path, output: &Path, work: &Path) -> String {
    let log = work.with_extension("log-end");
    let status = spawn(preset, output, work, &log).wait().unwrap();
    let stderr = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(status.success(), "render failed: {stderr}");
    stderr
}

#[test]
fn killed_and_interrupted_renders_resume_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    let preset = temporal_preset();

    let whole = dir.path().join("whole/");
    let whole_work = dir.path().join("whole.work");
    render_to_end(&preset, &whole, &whole_work);
    assert!(
        !whole_work.exists(),
        "the work directory goes once the output is complete"
    );

    let resumed = dir.path().join("resumed/");
    let work = dir.path().join("resumed.work");
    // Killed outright after the first batch: no chance to clean up.
    let (status, _, done) = interrupt_after(&preset, &resumed, &work, 1, libc::SIGKILL);
    assert!(!status.success());
    assert!(
        done < BATCHES,
        "the render finished before it could be killed"
    );
    let kept = finished_batches(&work);
    assert!(kept >= 1);

    // Resumed, then Ctrl-C after one more batch.
    let (status, stderr, done) = interrupt_after(&preset, &resumed, &work, 1, libc::SIGINT);
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(done < BATCHES, "the render finished before Ctrl-C");
    assert!(
        stderr.contains(&format!("resuming: {kept} finished batch(es)")),
        "{stderr}"
    );
    assert!(
        stderr.contains("interrupted:") && stderr.contains("run the same command again"),
        "{stderr}"
    );
    let kept_after_ctrl_c = finished_batches(&work);
    assert!(kept_after_ctrl_c > kept);
    assert!(
        !std::fs::read_dir(&work).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".partial")),
        "Ctrl-C leaves no half-written batch"
    );

    let stderr = render_to_end(&preset, &resumed, &work);
    assert!(
        stderr.contains(&format!("resuming: {kept_after_ctrl_c} finished batch(es)")),
        "{stderr}"
    );
    let (a, b) = (png_frames(&whole), png_frames(&resumed));
    assert_eq!(a.len(), 30);
    assert_eq!(a.len(), b.len());
    for ((name_a, bytes_a), (name_b, bytes_b)) in a.iter().zip(&b) {
        assert_eq!(name_a, name_b);
        assert!(bytes_a == bytes_b, "{name_a} differs after resuming");
    }
}

#[test]
fn resumed_mp4_is_the_same_file() {
    let dir = tempfile::tempdir().unwrap();
    let preset = temporal_preset();
    let whole = dir.path().join("whole.mp4");
    render_to_end(&preset, &whole, &dir.path().join("whole.work"));

    let resumed = dir.path().join("resumed.mp4");
    let work = dir.path().join("resumed.work");
    let (status, stderr, _) = interrupt_after(&preset, &resumed, &work, 2, libc::SIGINT);
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(!resumed.exists(), "no output after an interruption");
    render_to_end(&preset, &resumed, &work);
    assert!(
        std::fs::read(&whole).unwrap() == std::fs::read(&resumed).unwrap(),
        "the resumed MP4 differs from the uninterrupted one"
    );
}

#[test]
fn changed_preset_invalidates_and_no_resume_clears() {
    let dir = tempfile::tempdir().unwrap();
    let original = std::fs::read_to_string(temporal_preset()).unwrap();
    let fixtures = repo_path("tests/fixtures/pipeline").display().to_string();
    let absolute = original.replace("../pipeline", &fixtures);
    let preset = dir.path().join("p.yaml");
    std::fs::write(&preset, &absolute).unwrap();
    let output = dir.path().join("o.mp4");
    let work = dir.path().join("o.work");

    let (status, stderr, _) = interrupt_after(&preset, &output, &work, 1, libc::SIGINT);
    assert_eq!(status.code(), Some(130), "{status}: {stderr}");
    assert!(finished_batches(&work) >= 1);

    // Another prompt: the finished batches belong to a different render.
    std::fs::write(&preset, absolute.replace("temporal test", "another prompt")).unwrap();
    let (status, stderr, _) = interrupt_after(&preset, &output, &work, 1, libc::SIGINT);
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("out of date (changed: preset)") && stderr.contains("from scratch"),
        "{stderr}"
    );

    let log = dir.path().join("no-resume.log");
    let mut command = render_command(
        &sample(),
        &preset,
        &output,
        &[
            "--frames",
            "..6",
            "--work-dir",
            &work.display().to_string(),
            "--no-resume",
        ],
    );
    let out = command
        .stderr(std::fs::File::create(&log).unwrap())
        .status()
        .unwrap();
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(out.success(), "{stderr}");
    assert!(stderr.contains("--no-resume: removed"), "{stderr}");
}
