//! A render job and what it reports: what to render ([`RenderJob`]), how it talks to the
//! user ([`Reporting`]), how it ended ([`JobOutcome`], [`JobInterrupted`],
//! [`ModelsMissing`]). [`crate::app::render_job`] runs one; `rotoscope batch` runs many.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::app::args::{FrameSelection, OutputTarget};
use crate::loaders::sd_models::SdModelsError;
use crate::pipeline::progress::{BarProgress, JsonProgress, ProgressReporter, SilentProgress};
use crate::pipeline::resume::default_work_dir;
use crate::pipeline::runner::PipelineReport;
use crate::preset::Preset;

/// What to render, with every setting decided (the preset's overrides already applied).
#[derive(Debug, Clone)]
pub struct RenderJob {
    pub input: PathBuf,
    pub preset: Preset,
    /// How the preset was named (a path or a bundled name), for messages.
    pub preset_origin: String,
    /// The preset file's folder: relative model paths that only exist there resolve there.
    pub preset_dir: Option<PathBuf>,
    /// An .mp4 file, or a directory for a PNG sequence.
    pub output: PathBuf,
    pub frames: Option<FrameSelection>,
    /// Default: `<output>.work` next to the output.
    pub work_dir: Option<PathBuf>,
    /// Reuse finished batches of an earlier run (off: `--no-resume`).
    pub resume: bool,
    pub pose_json: Option<PathBuf>,
    /// Overwrite an existing output.
    pub force: bool,
}

impl RenderJob {
    /// The work directory for finished batches.
    pub fn work_root(&self) -> PathBuf {
        self.work_dir
            .clone()
            .unwrap_or_else(|| default_work_dir(OutputTarget::from_arg(&self.output).path()))
    }
}

/// How a job talks to the user: progress, human notes, JSON events.
#[derive(Clone)]
pub struct Reporting {
    progress: Arc<dyn ProgressReporter>,
    note: Arc<dyn Fn(&str) + Send + Sync>,
    json: Option<Arc<JsonProgress>>,
    /// Hub downloads get progress bars (a terminal user is watching).
    pub(crate) hub_progress: bool,
}

impl Reporting {
    /// `--quiet`: nothing but errors.
    pub fn quiet() -> Self {
        Self {
            progress: Arc::new(SilentProgress),
            note: Arc::new(|_| {}),
            json: None,
            hub_progress: false,
        }
    }

    /// Bars on stderr, notes printed above them.
    pub fn bars(bars: Arc<BarProgress>) -> Self {
        let printer = bars.clone();
        Self::custom(bars, Arc::new(move |text| printer.println(text)), true)
    }

    /// `--json`: JSON lines on stdout, notes on stderr (stdout stays pure JSON).
    pub fn json(json: Arc<JsonProgress>) -> Self {
        Self {
            progress: json.clone(),
            note: Arc::new(|text| eprintln!("{text}")),
            json: Some(json),
            hub_progress: false,
        }
    }

    /// Any progress reporter with its own way of printing notes.
    pub fn custom(
        progress: Arc<dyn ProgressReporter>,
        note: Arc<dyn Fn(&str) + Send + Sync>,
        hub_progress: bool,
    ) -> Self {
        Self {
            progress,
            note,
            json: None,
            hub_progress,
        }
    }

    pub fn progress(&self) -> Arc<dyn ProgressReporter> {
        self.progress.clone()
    }

    /// A human-readable note.
    pub fn note(&self, text: &str) {
        (self.note)(text)
    }

    /// Where JSON events go, with `--json`.
    pub fn json_out(&self) -> Option<&Arc<JsonProgress>> {
        self.json.as_ref()
    }
}

/// A finished job.
#[derive(Debug)]
pub struct JobOutcome {
    pub report: PipelineReport,
    /// Batches read back from the work directory of an interrupted run.
    pub reused_batches: usize,
    /// The models are tiny random test models (`presets/smoke.yaml`): the images are
    /// patterns from random weights.
    pub test_weights: bool,
}

/// Ctrl-C stopped the job; its finished batches are kept.
#[derive(Debug, thiserror::Error)]
#[error(
    "interrupted: {kept} of {total} batches are finished and kept in {}; run the same \
     command again to resume (--no-resume starts over)",
    work_dir.display()
)]
pub struct JobInterrupted {
    pub kept: usize,
    pub total: usize,
    pub work_dir: PathBuf,
}

/// The job's models are not all there; the preprocessing ran and is kept.
#[derive(Debug, thiserror::Error)]
pub struct ModelsMissing {
    /// Not a `#[source]`: the message already holds its text (the list of files).
    pub missing: SdModelsError,
    /// Frames whose pose / soft-edge maps are in `cache_dir` (0: the preset needs none).
    pub preprocessed: u64,
    /// Why the preprocessing could not run either (its weights are missing, ...).
    pub preprocess_problem: Option<String>,
    pub cache_dir: PathBuf,
    pub preset: String,
}

impl std::fmt::Display for ModelsMissing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{}", self.missing)?;
        if self.preprocessed > 0 {
            writeln!(
                f,
                "Preprocessing ran anyway: the pose / soft-edge maps of {} frame(s) are kept in \
                 {} (as `rotoscope preprocess` writes them) and used by the next run.",
                self.preprocessed,
                self.cache_dir.display()
            )?;
        }
        if let Some(problem) = &self.preprocess_problem {
            writeln!(f, "The preprocessing could not run either: {problem}")?;
        }
        write!(
            f,
            "To get every model this preset needs, run on a machine with network access:\n  \
             rotoscope models fetch -p {}\n(or put a diffusers folder or a single .safetensors \
             checkpoint on disk and point the preset's `model.base` / ControlNet `model` at it)",
            self.preset
        )
    }
}

/// Where `preset` (a path or a bundled name) sits: its folder, for relative model paths.
pub fn preset_dir(name_or_path: &Path) -> Option<PathBuf> {
    name_or_path
        .is_file()
        .then(|| name_or_path.parent().map(Path::to_path_buf))
        .flatten()
}
