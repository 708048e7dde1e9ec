//! `rotoscope batch JOBS.yaml [--json] [--quiet] [--force]`: many render jobs from one YAML
//! file ([`crate::app::batch::jobs_file`] has the schema), one after another.
//!
//! * Jobs on the same models (model stack and ControlNets) load them once ([`ModelCache`]).
//! * A job whose output was written by an earlier run with the same settings is skipped
//!   ([`crate::app::batch::state`]: `JOBS.state.json` next to the jobs file); an interrupted job resumes from its
//!   last finished batch (its work directory, as `rotoscope render` does).
//! * A failing job (missing input, bad preset, missing models, ...) is reported with its name
//!   and reason, and the others still run.
//! * The end prints a summary table (stdout), or with `--json` a report as the last JSON line.
//!
//! Exit codes: 0 when every job is done or skipped, 1 when any job failed, 2 for an invalid
//! jobs file (nothing runs), 130 after Ctrl-C (the running job keeps its finished batches).

mod progress;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use clap::Args;
use serde::Serialize;

use self::progress::BatchBars;
use super::render::{install_interrupt_handler, EXIT_INTERRUPTED};
use super::{open_device, print_stdout};
use crate::app::batch::state::{state_path, BatchState};
use crate::app::batch::{load_jobs, run_job, BatchFailed, JobResult, JobRun, JobStatus};
use crate::app::job::{JobInterrupted, Reporting};
use crate::device::DeviceChoice;
use crate::loaders::model_cache::ModelCache;
use crate::pipeline::progress::JsonProgress;

#[derive(Debug, Args)]
pub struct BatchArgs {
    /// YAML file listing (input, preset, output) jobs
    #[arg(value_name = "JOBS.yaml")]
    pub jobs: PathBuf,
    /// Progress and the final report as JSON lines on stdout
    #[arg(long)]
    pub json: bool,
    /// No progress or notes; failures and the summary are still printed
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Render every job again, overwriting outputs (also ones this batch did not write)
    #[arg(long)]
    pub force: bool,
    /// Where the networks run for every job: cpu, cuda or cuda:N
    #[arg(long, value_name = "DEVICE", default_value_t = DeviceChoice::Cpu)]
    pub device: DeviceChoice,
}

/// The `--json` report (last line of stdout, `"event":"report"`).
#[derive(Debug, Serialize)]
struct Report<'a> {
    event: &'static str,
    jobs_file: &'a Path,
    jobs: &'a [JobResult],
    done: usize,
    skipped: usize,
    failed: usize,
    /// How many times model weights were read from disk (jobs on the same models share).
    model_loads: usize,
    elapsed: f64,
}

#[derive(Serialize)]
struct JobEvent<'a> {
    event: &'static str,
    job: &'a str,
    number: usize,
    of: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<JobStatus>,
}

/// Progress for the whole batch: terminal bars, JSON lines or nothing.
enum View {
    Quiet,
    Bars(Arc<BatchBars>),
    Json(Arc<JsonProgress>),
}

impl View {
    fn reporting(&self) -> Reporting {
        match self {
            View::Quiet => Reporting::quiet(),
            View::Bars(bars) => {
                let printer = bars.clone();
                Reporting::custom(bars.clone(), Arc::new(move |t| printer.println(t)), true)
            }
            View::Json(json) => Reporting::json(json.clone()),
        }
    }

    fn note(&self, text: &str) {
        match self {
            View::Quiet => {}
            View::Bars(bars) => bars.println(text),
            View::Json(_) => eprintln!("{text}"),
        }
    }

    /// Failures are printed whatever the view (on stderr).
    fn failure(&self, text: &str) {
        match self {
            View::Bars(bars) => bars.println(text),
            _ => eprintln!("{text}"),
        }
    }
}

pub fn run(args: BatchArgs) -> anyhow::Result<()> {
    let jobs = load_jobs(&args.jobs)?;
    let models = Arc::new(ModelCache::new(open_device(args.device)?));
    let mut state = BatchState::load(&state_path(&args.jobs))?;
    let view = if args.json {
        View::Json(Arc::new(JsonProgress::new()))
    } else if args.quiet {
        View::Quiet
    } else {
        View::Bars(Arc::new(BatchBars::new(jobs.len())))
    };
    let reporting = view.reporting();
    let stop = install_interrupt_handler();

    let mut results: Vec<JobResult> = Vec::with_capacity(jobs.len());
    let mut interrupted = false;
    for (k, spec) in jobs.iter().enumerate() {
        let number = k + 1;
        let mut result = JobResult {
            name: spec.name.clone(),
            status: JobStatus::NotRun,
            input: spec.input.clone(),
            output: spec.output.clone(),
            frames: None,
            secs: 0.0,
            error: None,
            resumed_batches: 0,
            test_weights: false,
        };
        if interrupted {
            results.push(result);
            continue;
        }
        if let View::Bars(bars) = &view {
            bars.start_job(number, &spec.name);
        }
        if let View::Json(json) = &view {
            json.emit(&JobEvent {
                event: "job",
                job: &spec.name,
                number,
                of: jobs.len(),
                status: None,
            });
        }
        let job_started = Instant::now();
        let outcome = run_job(
            spec,
            &mut state,
            args.force,
            &models,
            &reporting,
            &|text| view.note(text),
            number,
            jobs.len(),
            &stop,
        );
        result.secs = round_ms(job_started.elapsed().as_secs_f64());
        match outcome {
            Ok(JobRun::Skipped {
                frames,
                test_weights,
            }) => {
                result.status = JobStatus::Skipped;
                result.frames = Some(frames);
                result.test_weights = test_weights;
                view.note(&format!(
                    "job {number}/{}: {}: skipped, {} is up to date",
                    jobs.len(),
                    spec.name,
                    spec.output.display()
                ));
            }
            Ok(JobRun::Done {
                frames,
                resumed_batches,
                test_weights,
            }) => {
                result.status = JobStatus::Done;
                result.frames = Some(frames);
                result.resumed_batches = resumed_batches;
                result.test_weights = test_weights;
            }
            Err(err) if err.downcast_ref::<JobInterrupted>().is_some() => {
                result.status = JobStatus::Interrupted;
                result.error = Some(err.to_string());
                interrupted = true;
            }
            Err(err) => {
                result.status = JobStatus::Failed;
                result.error = Some(format!("{err:#}"));
                view.failure(&format!(
                    "job {number}/{} failed: {}: {err:#}",
                    jobs.len(),
                    spec.name
                ));
            }
        }
        if let View::Json(json) = &view {
            json.emit(&JobEvent {
                event: "job_end",
                job: &spec.name,
                number,
                of: jobs.len(),
                status: Some(result.status),
            });
        }
        results.push(result);
    }
    if let View::Bars(bars) = &view {
        bars.finish();
    }

    let count = |status| results.iter().filter(|r| r.status == status).count();
    match &view {
        View::Json(json) => json.emit(&Report {
            event: "report",
            jobs_file: &args.jobs,
            jobs: &results,
            done: count(JobStatus::Done),
            skipped: count(JobStatus::Skipped),
            failed: count(JobStatus::Failed),
            model_loads: models.loads(),
            elapsed: json.elapsed_secs(),
        }),
        _ => print_stdout(&summary_table(&results))?,
    }
    if interrupted {
        if let Some(r) = results.iter().find(|r| r.status == JobStatus::Interrupted) {
            // Printed even with --quiet: the user pressed Ctrl-C and must learn how to go on.
            eprintln!(
                "job {}: {}",
                r.name,
                r.error.as_deref().unwrap_or("interrupted")
            );
        }
        std::process::exit(EXIT_INTERRUPTED);
    }
    let failed: Vec<&str> = results
        .iter()
        .filter(|r| r.status == JobStatus::Failed)
        .map(|r| r.name.as_str())
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(BatchFailed {
            failed: failed.len(),
            total: results.len(),
            names: failed.join(", "),
        }
        .into())
    }
}

fn round_ms(secs: f64) -> f64 {
    (secs * 1000.0).round() / 1000.0
}

/// The summary: one row per job, then the reasons of failures and a word on test weights.
fn summary_table(results: &[JobResult]) -> String {
    let header = ["job", "status", "frames", "time", "output"];
    let rows: Vec<[String; 5]> = results
        .iter()
        .map(|r| {
            [
                r.name.clone(),
                r.status.as_str().to_string(),
                r.frames.map_or("-".into(), |f| f.to_string()),
                if matches!(r.status, JobStatus::Done | JobStatus::Failed) {
                    format!("{:.1} s", r.secs)
                } else {
                    "-".into()
                },
                r.output.display().to_string(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 5]| {
        let mut text = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<w$}  "));
            }
        }
        text.trim_end().to_string() + "\n"
    };
    let mut out = line(header);
    for row in &rows {
        out.push_str(&line(row.each_ref().map(String::as_str)));
    }
    for r in results.iter().filter(|r| r.status == JobStatus::Failed) {
        out.push_str(&format!(
            "failed: {}: {}\n",
            r.name,
            r.error.as_deref().unwrap_or("")
        ));
    }
    for r in results.iter().filter(|r| r.test_weights) {
        out.push_str(&format!(
            "note: {} ran on tiny random test models: its images are patterns from random \
             weights, not a trained style\n",
            r.name
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(name: &str, status: JobStatus, frames: Option<u64>) -> JobResult {
        JobResult {
            name: name.into(),
            status,
            input: "in.mp4".into(),
            output: format!("out/{name}.mp4").into(),
            frames,
            secs: 1.25,
            error: (status == JobStatus::Failed).then(|| "input x.mp4: no such file".into()),
            resumed_batches: 0,
            test_weights: status == JobStatus::Done,
        }
    }

    #[test]
    fn the_summary_lists_every_job_and_why_one_failed() {
        let table = summary_table(&[
            result("first", JobStatus::Done, Some(24)),
            result("second-job", JobStatus::Skipped, Some(8)),
            result("bad", JobStatus::Failed, None),
        ]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], "job         status   frames  time   output");
        assert_eq!(
            lines[1],
            "first       done     24      1.2 s  out/first.mp4"
        );
        assert_eq!(
            lines[2],
            "second-job  skipped  8       -      out/second-job.mp4"
        );
        assert_eq!(lines[3], "bad         failed   -       1.2 s  out/bad.mp4");
        assert_eq!(lines[4], "failed: bad: input x.mp4: no such file");
        assert!(lines[5].starts_with("note: first ran on tiny random test models"));
    }
}
