//! The JSON events of a render job (`rotoscope render --json`, `rotoscope batch --json`):
//! `start` before the first frame, `done` after the last.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::app::job::{JobOutcome, RenderJob, Reporting};
use crate::pipeline::plan::BatchPlan;
use crate::pipeline::runner::{PipelineReport, StageTimes};
use crate::video::VideoInfo;

/// `{"event":"start",...}`: what is about to be rendered (first line of `--json` output).
#[derive(Serialize)]
pub struct StartEvent<'a> {
    event: &'static str,
    input: &'a Path,
    output: &'a Path,
    frames: u64,
    start_frame: u64,
    fps: String,
    input_width: u32,
    input_height: u32,
    width: u32,
    height: u32,
    has_audio: bool,
    batches: usize,
    renderer: &'a str,
    preset: Option<&'a str>,
    preset_fingerprint: String,
    seed: u64,
}

pub fn start_event<'a>(
    job: &'a RenderJob,
    info: &VideoInfo,
    plan: &BatchPlan,
    renderer: &'a str,
    (width, height): (u32, u32),
    seed: u64,
) -> StartEvent<'a> {
    let preset = &job.preset;
    StartEvent {
        event: "start",
        input: &job.input,
        output: &job.output,
        frames: info.frame_count,
        start_frame: info.start_frame,
        fps: info.fps.to_string(),
        input_width: info.width,
        input_height: info.height,
        width,
        height,
        has_audio: info.has_audio,
        batches: plan.batches.len(),
        renderer,
        preset: preset.name.as_deref(),
        preset_fingerprint: preset.fingerprint(),
        seed,
    }
}

/// `{"event":"done",...}`: the last line of `--json` output.
#[derive(Serialize)]
pub struct DoneEvent<'a> {
    event: &'static str,
    output: &'a Path,
    frames: u64,
    detail: &'a str,
    elapsed: f64,
    /// Seconds each stage spent working (not waiting), and the render thread's waits: the
    /// pipeline's overhead next to the render.
    stage_secs: StageTimes,
    /// The same as percentages of the pipeline's wall time.
    stage_share_percent: BTreeMap<&'static str, f64>,
    /// The models were tiny random test models (`presets/smoke.yaml`): the images are
    /// patterns from random weights, not a trained style.
    test_weights: bool,
}

pub fn done_event(report: &PipelineReport, elapsed: f64, test_weights: bool) -> DoneEvent<'_> {
    DoneEvent {
        event: "done",
        output: &report.output.path,
        frames: report.frames,
        detail: &report.output.detail,
        elapsed,
        stage_secs: report.stages,
        stage_share_percent: report.stages.shares(report.wall_secs).into_iter().collect(),
        test_weights,
    }
}

/// The `done` event of a job (last line of `rotoscope render --json`).
pub fn emit_done(reporting: &Reporting, outcome: &JobOutcome) {
    if let Some(json) = reporting.json_out() {
        json.emit(&done_event(
            &outcome.report,
            json.elapsed_secs(),
            outcome.test_weights,
        ));
    }
}
