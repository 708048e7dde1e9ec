//! Batches of render jobs (`rotoscope batch`): the jobs file ([`jobs_file`]), the record of
//! finished outputs ([`state`]: `JOBS.state.json` next to the jobs file), and one job run or
//! skipped ([`run_job`]). The command in `cli/batch.rs` runs the jobs in order and reports.

pub mod jobs_file;
pub mod state;

use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;

pub use self::jobs_file::{load_jobs, parse_jobs, JobSpec, JobsFileError};
use self::state::{job_key, BatchState, Decision};
use crate::app::events::emit_done;
use crate::app::job::{preset_dir, RenderJob, Reporting};
use crate::app::render_job::run_render_job;
use crate::app::resolve::load_preset;
use crate::cancel::StopFlag;
use crate::loaders::model_cache::ModelCache;
use crate::pipeline::resume::WORK_FORMAT;
use crate::preprocess::cache::fingerprint_file;
use crate::preset::PresetOverrides;
use crate::render::sd_renderer::RENDERER_NAME;

/// How a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Done,
    Skipped,
    Failed,
    Interrupted,
    /// Not started: the batch was interrupted before.
    NotRun,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Done => "done",
            JobStatus::Skipped => "skipped",
            JobStatus::Failed => "failed",
            JobStatus::Interrupted => "interrupted",
            JobStatus::NotRun => "not run",
        }
    }
}

/// One line of the summary.
#[derive(Debug, Clone, Serialize)]
pub struct JobResult {
    pub name: String,
    pub status: JobStatus,
    pub input: PathBuf,
    pub output: PathBuf,
    /// Frames of the output (rendered now, or recorded when skipped).
    pub frames: Option<u64>,
    pub secs: f64,
    /// Why the job failed.
    pub error: Option<String>,
    /// Batches taken from the work directory of an interrupted run.
    pub resumed_batches: usize,
    /// The job ran on tiny random test models: its images are patterns from random weights.
    pub test_weights: bool,
}

/// The job failed: its name and the reason, the others still run.
#[derive(Debug, thiserror::Error)]
#[error("{failed} of {total} jobs failed: {names}")]
pub struct BatchFailed {
    pub failed: usize,
    pub total: usize,
    pub names: String,
}

pub enum JobRun {
    Skipped {
        frames: u64,
        test_weights: bool,
    },
    Done {
        frames: u64,
        resumed_batches: usize,
        test_weights: bool,
    },
}

/// Runs (or skips) one job and records it in `state` when it finishes; `note` prints the
/// job's progress lines (`number` of `total` names it there).
#[allow(clippy::too_many_arguments)]
pub fn run_job(
    spec: &JobSpec,
    state: &mut BatchState,
    force: bool,
    models: &Arc<ModelCache>,
    reporting: &Reporting,
    note: &dyn Fn(&str),
    number: usize,
    total: usize,
    stop: &StopFlag,
) -> anyhow::Result<JobRun> {
    let overrides = PresetOverrides { seed: spec.seed };
    let mut preset = load_preset(&spec.preset, &overrides)?;
    if let Some(prompt) = &spec.prompt {
        preset.prompt = prompt.clone();
    }
    if let Some(negative) = &spec.negative_prompt {
        preset.negative_prompt = negative.clone();
    }
    if !spec.input.is_file() {
        anyhow::bail!("input {}: no such file", spec.input.display());
    }
    let key = job_key(&[
        &format!(
            "{RENDERER_NAME} rotoscope {} work {WORK_FORMAT}",
            env!("CARGO_PKG_VERSION")
        ),
        &fingerprint_file(&spec.input)?,
        &preset.fingerprint(),
        &spec.frames.map(|f| f.to_string()).unwrap_or_default(),
    ]);
    let overwrite = match state.decide(&spec.output, &key, force) {
        Decision::Skip(done) => {
            return Ok(JobRun::Skipped {
                frames: done.frames,
                test_weights: done.test_weights,
            })
        }
        Decision::Foreign => anyhow::bail!(
            "{}: already exists and was not written by this job (use --force to overwrite)",
            spec.output.display()
        ),
        Decision::Render { overwrite } => overwrite,
    };
    note(&format!(
        "job {number}/{total}: {}: {} -> {}",
        spec.name,
        spec.input.display(),
        spec.output.display()
    ));
    let job = RenderJob {
        input: spec.input.clone(),
        preset_dir: preset_dir(&spec.preset),
        preset_origin: spec.preset.display().to_string(),
        preset,
        output: spec.output.clone(),
        frames: spec.frames,
        work_dir: spec.work_dir.clone(),
        resume: true,
        pose_json: None,
        force: overwrite,
    };
    let outcome = run_render_job(&job, models, reporting, stop)?;
    emit_done(reporting, &outcome);
    let report = &outcome.report;
    note(&format!(
        "job {number}/{total}: {}: wrote {}: {} in {:.1} s",
        spec.name,
        report.output.path.display(),
        report.output.detail,
        report.wall_secs
    ));
    state.record(
        &spec.output,
        &spec.name,
        &key,
        report.frames,
        outcome.test_weights,
    )?;
    Ok(JobRun::Done {
        frames: report.frames,
        resumed_batches: outcome.reused_batches,
        test_weights: outcome.test_weights,
    })
}
