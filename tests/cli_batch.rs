//! `rotoscope batch` through the real binary, on the tiny random test models of
//! tests/fixtures/pipeline: jobs run one after another, a failing job does not stop the
//! others, finished jobs are skipped on a rerun, jobs on the same models load them once.

mod cli_common;
mod render_common;

use std::path::{Path, PathBuf};

use cli_common::media::ffprobe_frame_count;
use cli_common::*;

/// A fast preset on the tiny models with a (TemporalNet) ControlNet, so the shared models
/// include one.
fn tiny_preset(dir: &Path) -> PathBuf {
    let models = repo_path("tests/fixtures/pipeline");
    write_preset(
        dir,
        "tiny.yaml",
        &format!(
            "model: {{base: {m}}}\nprompt: a dancer\nresolution: {{width: 64, height: 64}}\n\
             sampler: {{steps: 2}}\nbatch: {{frames: 8, overlap: 2}}\n\
             output: {{encoder_preset: ultrafast}}\n\
             temporal:\n  temporalnet: {{enabled: true, model: {m}/controlnet_a}}\n",
            m = models.display()
        ),
    )
}

/// A folder with the sample clip, the preset and a jobs file of three jobs, the second of
/// which names a missing input. Paths in the jobs file are relative to it.
fn setup(third_prompt: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(sample(), dir.path().join("clip.mp4")).unwrap();
    tiny_preset(dir.path());
    let jobs = write_jobs(dir.path(), third_prompt);
    (dir, jobs)
}

fn write_jobs(dir: &Path, third_prompt: &str) -> PathBuf {
    let jobs = dir.join("jobs.yaml");
    std::fs::write(
        &jobs,
        format!(
            "defaults: {{preset: tiny.yaml, frames: '0..12'}}\n\
             jobs:\n\
             \x20 - {{name: first, input: clip.mp4, output: out/first.mp4}}\n\
             \x20 - {{name: broken, input: no-such-clip.mp4, output: out/broken.mp4}}\n\
             \x20 - {{name: third, input: clip.mp4, output: out/third.mp4, seed: 3, prompt: '{third_prompt}'}}\n"
        ),
    )
    .unwrap();
    jobs
}

fn batch(jobs: &Path, flags: &[&str]) -> std::process::Output {
    let mut args: Vec<&std::ffi::OsStr> = vec!["batch".as_ref(), jobs.as_os_str()];
    args.extend(flags.iter().map(std::ffi::OsStr::new));
    rotoscope(args)
}

/// The final `report` object of `--json` output.
fn final_report(out: &std::process::Output) -> serde_json::Value {
    let events = json_lines(out);
    let last = events.last().expect("a report line").clone();
    assert_eq!(last["event"], "report", "{last}");
    last
}

fn statuses(report: &serde_json::Value) -> Vec<(String, String)> {
    report["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| {
            (
                j["name"].as_str().unwrap().to_string(),
                j["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn three_jobs_one_failing_then_a_rerun_skips_the_finished_ones() {
    let (dir, jobs) = setup("a robot");
    let first = dir.path().join("out/first.mp4");
    let third = dir.path().join("out/third.mp4");

    let out = batch(&jobs, &["--json"]);
    // The failing job is named in the final error line; the exit code says a job failed.
    assert_error(&out, 1, &["1 of 3 jobs failed", "broken"]);
    let messages = stderr(&out);
    assert!(
        messages.contains("broken") && messages.contains("no-such-clip.mp4"),
        "{messages}"
    );
    let report = final_report(&out);
    assert_eq!(
        statuses(&report),
        [
            ("first".into(), "done".into()),
            ("broken".into(), "failed".into()),
            ("third".into(), "done".into())
        ]
    );
    let broken = &report["jobs"][1];
    assert!(
        broken["error"]
            .as_str()
            .unwrap()
            .contains("no-such-clip.mp4"),
        "{broken}"
    );
    // Both rendered jobs use the same models (another prompt and seed): loaded once.
    assert_eq!(report["model_loads"], 1, "{report}");
    for job in [&report["jobs"][0], &report["jobs"][2]] {
        assert_eq!(job["frames"], 12);
        assert_eq!(
            job["test_weights"], true,
            "the random-weights notice: {job}"
        );
    }
    // Each rendered job's own events are there (start .. done), between its job markers.
    let events = json_lines(&out);
    let starts = events.iter().filter(|e| e["event"] == "start").count();
    let dones: Vec<_> = events.iter().filter(|e| e["event"] == "done").collect();
    assert_eq!((starts, dones.len()), (2, 2));
    assert!(dones.iter().all(|d| d["test_weights"] == true));
    assert!(messages.contains("random weights"), "{messages}");

    // Two outputs, whole; no work directories left.
    assert_eq!(ffprobe_frame_count(&first), 12);
    assert_eq!(ffprobe_frame_count(&third), 12);
    assert!(!dir.path().join("out/broken.mp4").exists());
    let mut names: Vec<_> = std::fs::read_dir(dir.path().join("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["first.mp4", "third.mp4"]);
    let stamps = (modified(&first), modified(&third));

    // Rerun: the finished jobs are skipped (no render events, outputs untouched); the
    // broken one fails again.
    let again = batch(&jobs, &["--json"]);
    assert_error(&again, 1, &["broken"]);
    let rerun = final_report(&again);
    assert_eq!(
        statuses(&rerun),
        [
            ("first".into(), "skipped".into()),
            ("broken".into(), "failed".into()),
            ("third".into(), "skipped".into())
        ]
    );
    assert_eq!(rerun["model_loads"], 0);
    assert_eq!(rerun["jobs"][0]["frames"], 12);
    let events = json_lines(&again);
    assert!(
        events
            .iter()
            .all(|e| !["start", "progress", "done"].contains(&e["event"].as_str().unwrap())),
        "a skipped job renders nothing: {events:?}"
    );
    assert_eq!((modified(&first), modified(&third)), stamps);

    // The human summary says so too.
    let table = batch(&jobs, &["--quiet"]);
    assert_eq!(table.status.code(), Some(1));
    let text = stdout(&table);
    let row = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no row for {name}: {text}"))
            .to_string()
    };
    assert!(row("first").contains("skipped"), "{text}");
    assert!(row("third").contains("skipped"), "{text}");
    assert!(row("broken").contains("failed"), "{text}");
    assert!(text.contains("failed: broken: "), "{text}");
    assert_eq!((modified(&first), modified(&third)), stamps);

    // A changed job renders again; the unchanged one stays skipped.
    write_jobs(dir.path(), "a different robot");
    let changed = batch(&jobs, &["--json"]);
    assert_eq!(
        statuses(&final_report(&changed)),
        [
            ("first".into(), "skipped".into()),
            ("broken".into(), "failed".into()),
            ("third".into(), "done".into())
        ]
    );
    assert_eq!(modified(&first), stamps.0);
    assert_ne!(modified(&third), stamps.1);
}

#[test]
fn an_output_made_by_something_else_needs_force() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(sample(), dir.path().join("clip.mp4")).unwrap();
    tiny_preset(dir.path());
    std::fs::create_dir(dir.path().join("out")).unwrap();
    let theirs = dir.path().join("out/theirs.mp4");
    std::fs::write(&theirs, b"someone else's video").unwrap();
    let jobs = dir.path().join("jobs.yaml");
    std::fs::write(
        &jobs,
        "jobs:\n  - {name: mine, input: clip.mp4, preset: tiny.yaml, output: out/theirs.mp4, \
         frames: '0..4'}\n",
    )
    .unwrap();

    let out = batch(&jobs, &["--quiet"]);
    assert_error(&out, 1, &["mine"]);
    assert!(
        stderr(&out).contains("not written by this job"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read(&theirs).unwrap(), b"someone else's video");

    let forced = batch(&jobs, &["--quiet", "--force"]);
    assert_ok(&forced);
    assert_eq!(ffprobe_frame_count(&theirs), 4);
    // Now it is this job's output: skipped from here on.
    let again = batch(&jobs, &["--quiet"]);
    assert!(stdout(&assert_ok_ref(&again)).contains("skipped"));
}

fn assert_ok_ref(out: &std::process::Output) -> &std::process::Output {
    assert_ok(out);
    out
}

#[test]
fn jobs_file_errors_give_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let jobs = dir.path().join("jobs.yaml");
    std::fs::write(
        &jobs,
        "defaults: {preset: anime}\njobs:\n  - input: a.mp4\n    output: a.mp4\n    seeed: 3\n",
    )
    .unwrap();
    let out = batch(&jobs, &[]);
    let line = assert_error(&out, 2, &["jobs.yaml:5:5: jobs[0]: unknown field `seeed`"]);
    assert!(line.contains("expected one of"), "{line}");

    std::fs::write(
        &jobs,
        "defaults: {preset: anime}\njobs:\n  - {input: a.mp4, output: o.mp4}\n  \
         - {input: b.mp4, output: ./o.mp4}\n",
    )
    .unwrap();
    let out = batch(&jobs, &[]);
    assert_error(
        &out,
        2,
        &["jobs.yaml: jobs[1].output", "also the output of jobs[0]"],
    );

    // A bad preset is the job's failure, not the file's: the job is named.
    std::fs::write(
        &jobs,
        "jobs:\n  - {name: odd, input: a.mp4, output: o.mp4, preset: no-such-preset}\n",
    )
    .unwrap();
    let out = batch(&jobs, &["--quiet"]);
    assert_error(&out, 1, &["1 of 1 jobs failed: odd"]);
    assert!(stderr(&out).contains("no-such-preset"), "{}", stderr(&out));
}

#[test]
fn an_interrupted_job_resumes_from_its_last_finished_batch() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(sample(), dir.path().join("clip.mp4")).unwrap();
    tiny_preset(dir.path());
    let jobs = dir.path().join("jobs.yaml");
    std::fs::write(
        &jobs,
        "defaults: {preset: tiny.yaml}\njobs:\n\
         \x20 - {name: long, input: clip.mp4, output: out/long.mp4, frames: '0..48'}\n\
         \x20 - {name: after, input: clip.mp4, output: out/after.mp4, frames: '0..4'}\n",
    )
    .unwrap();
    let work = dir.path().join("out/long.mp4.work");
    let log = dir.path().join("first.log");
    let report_file = dir.path().join("first.json");
    let mut child = command(["batch"])
        .arg(&jobs)
        .arg("--json")
        .stdout(std::fs::File::create(&report_file).unwrap())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "batch ended ({status}) before a batch was finished: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        if render_common::finished_batches(&work) >= 1 {
            // SAFETY: signalling our own child process, which has not been waited for.
            assert_eq!(
                unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) },
                0
            );
            break;
        }
        assert!(started.elapsed().as_secs() < 300, "render too slow");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let status = child.wait().unwrap();
    let messages = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(130), "{messages}");
    assert!(messages.contains("job long: interrupted"), "{messages}");
    let text = std::fs::read_to_string(&report_file).unwrap();
    let report: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(
        statuses(&report),
        [
            ("long".into(), "interrupted".into()),
            ("after".into(), "not_run".into())
        ]
    );
    let kept = render_common::finished_batches(&work);
    assert!(kept >= 1);
    assert!(!dir.path().join("out/long.mp4").exists());

    let again = batch(&jobs, &["--json"]);
    assert_ok(&again);
    let report = final_report(&again);
    assert_eq!(
        statuses(&report),
        [
            ("long".into(), "done".into()),
            ("after".into(), "done".into())
        ]
    );
    assert_eq!(
        report["jobs"][0]["resumed_batches"], kept as u64,
        "{report}"
    );
    assert_eq!(ffprobe_frame_count(&dir.path().join("out/long.mp4")), 48);
    assert!(!work.exists());
}
