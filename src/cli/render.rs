//! `rotoscope render`: probe the input, plan batches, run the stage pipeline with the Stable
//! Diffusion renderer, write the output (MP4 with the source's audio, or a PNG sequence)
//! under a temporary name and rename.
//!
//! Resumable: finished batches are kept in the work directory (`--work-dir`, default
//! `<output>.work/`); a rerun of the same command reuses them, a changed preset or input
//! starts over (and says why), `--no-resume` clears them. Ctrl-C stops after the current
//! frame, keeps the finished batches and exits with 130; a second Ctrl-C quits at once. The
//! work directory is removed once the output is complete.
//!
//! Model entries of the preset are used as given (hub ids, existing paths) or, for a
//! relative path that only exists next to the preset file, from there (as `still` does), so
//! `presets/smoke.yaml` finds the test models from any directory.
//!
//! The work itself is a [`crate::app::render_job::RenderJob`] run by [`crate::app::render_job::run_render_job`], shared with
//! `rotoscope batch`; it also decides what happens when model files are missing (offline:
//! preprocess, keep the maps, list the missing files, exit 2).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use clap::Args;
use serde::Serialize;

use super::args::{FrameSelection, OutputTarget};
use super::plan::frame_range;
use super::{load_preset, CliError};
use crate::app::render_job::{run_render_job, JobInterrupted, RenderJob, Reporting};
use crate::detail::{
    detailer_config, inpainter_for_preset, BatchDetail, FaceHandDetailer, RegionPlanner,
    RegionReport, StableDiffusionInpainter,
};
use crate::loaders::model_cache::ModelCache;
use crate::pipeline::plan::Batch;
use crate::pipeline::plan::BatchPlan;
use crate::pipeline::progress::{BarProgress, JsonProgress};
use crate::pipeline::resume::{Notifier, RendererFactory, StopFlag, WorkDir};
use crate::pipeline::runner::{PipelineReport, StageTimes};
use crate::pipeline::stages::{Detailer, StageError};
use crate::pipeline::stages::{FrameSink, PreparedFrame, Preprocessor};
use crate::preprocess::stages::{build_preprocessors, PreprocessorOptions};
use crate::preset::ControlKind;
use crate::preset::{Preset, PresetOverrides};
use crate::render::sd_renderer::{LoadedModels, SdRenderError, SdRenderer, SharedModels};
use crate::render::temporal::anchor::read_prepared_frame;
use crate::video::encode::{frames_to_seconds, Mp4Settings, Mp4Writer};
use crate::video::png_sequence::PngSequenceWriter;
use crate::video::Frame;
use crate::video::{probe_with, ReadOptions, VideoInfo, VideoReader};

/// Exit code after Ctrl-C (128 + SIGINT), as shells report it.
pub const EXIT_INTERRUPTED: i32 = 130;

/// A UNet whose first level has fewer channels is a random test model (SD1.5 has 320).
pub(crate) const TEST_MODEL_CHANNELS: usize = 64;

#[derive(Debug, Args)]
pub struct RenderArgs {
    /// Input video (anything FFmpeg reads; variable frame rate is resampled to constant)
    #[arg(value_name = "INPUT")]
    pub input: PathBuf,
    /// Preset file, or the name of a bundled preset (anime, watercolor, lineart-ink,
    /// anime-animatediff)
    #[arg(short = 'p', long = "preset", value_name = "PRESET")]
    pub preset: PathBuf,
    /// Output: an .mp4 file, or a directory (existing, or ending in /) for a PNG sequence
    #[arg(short = 'o', long = "output", value_name = "OUTPUT")]
    pub output: PathBuf,
    /// Only render frames A..B (start inclusive, end exclusive; either may be left out)
    #[arg(long, value_name = "A..B")]
    pub frames: Option<FrameSelection>,
    /// Seed (overrides the preset's sampler.seed)
    #[arg(long, value_name = "S")]
    pub seed: Option<u64>,
    /// Directory for finished batches, so an interrupted render can resume
    /// (default: OUTPUT.work next to the output)
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// Ignore finished batches in the work directory and render everything again
    #[arg(long)]
    pub no_resume: bool,
    /// Read poses from OpenPose JSON files in DIR (`*_<frame>_keypoints.json`, e.g. from
    /// `rotoscope preprocess`) instead of estimating them
    #[arg(long, value_name = "DIR")]
    pub pose_json: Option<PathBuf>,
    /// Overwrite an existing output
    #[arg(long)]
    pub force: bool,
    /// No progress bars or messages (errors are still printed)
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Progress as JSON lines on stdout (events: start, progress, done)
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: RenderArgs) -> anyhow::Result<()> {
    let overrides = PresetOverrides { seed: args.seed };
    let preset = load_preset(&args.preset, &overrides)?;
    let job = RenderJob {
        input: args.input,
        preset,
        preset_origin: args.preset.display().to_string(),
        preset_dir: crate::app::render_job::preset_dir(&args.preset),
        output: args.output,
        frames: args.frames,
        work_dir: args.work_dir,
        resume: !args.no_resume,
        pose_json: args.pose_json,
        force: args.force,
    };
    let reporting = if args.json {
        Reporting::json(Arc::new(JsonProgress::new()))
    } else if args.quiet {
        Reporting::quiet()
    } else {
        Reporting::bars(Arc::new(BarProgress::new()))
    };
    let stop = install_interrupt_handler();
    let outcome = match run_render_job(&job, &Arc::new(ModelCache::new()), &reporting, &stop) {
        Ok(outcome) => outcome,
        Err(err) => {
            if let Some(interrupted) = err.downcast_ref::<JobInterrupted>() {
                // Printed even with --quiet: the user pressed Ctrl-C and must learn how to go on.
                eprintln!("{interrupted}");
                std::process::exit(EXIT_INTERRUPTED);
            }
            return Err(err);
        }
    };
    if reporting.json_out().is_some() {
        crate::app::render_job::emit_done(&reporting, &outcome);
    } else {
        let report = &outcome.report;
        reporting.note(&format!(
            "wrote {}: {} in {:.1} s",
            report.output.path.display(),
            report.output.detail,
            report.wall_secs
        ));
        reporting.note(&report.stages.summary(report.wall_secs));
    }
    Ok(())
}

/// The anchor frame's input, read when the renderer is built.
pub(crate) struct AnchorInput {
    pub(crate) path: PathBuf,
    pub(crate) options: ReadOptions,
    pub(crate) index: u64,
    /// The first rendered frame.
    pub(crate) first_frame: u64,
    pub(crate) preprocess: PreprocessorOptions,
    pub(crate) maps: Vec<ControlKind>,
}

/// The shared models, loaded on first use, with a word to the user when that happens.
pub(crate) fn load_models(
    shared: &SharedModels,
    notify: &Notifier,
) -> Result<Arc<LoadedModels>, SdRenderError> {
    if shared.is_loaded() {
        return shared.get();
    }
    let base = &shared.config().models.base;
    if shared.weights_cached() {
        notify(&format!(
            "models already loaded: {base} (shared with the previous job)"
        ));
    } else {
        notify(&format!("loading models: {base}"));
    }
    let models = shared.get()?;
    if crate::app::render_job::is_test_model(models.unet_channels()) {
        notify(&format!(
            "note: {base} is a tiny test model with random weights (UNet channels {:?}): its \
             images are patterns from random weights, not a trained style",
            models.unet_channels()
        ));
    }
    Ok(models)
}

/// Builds the renderer on the shared models, and renders the anchor frame (or rebuilds its
/// attention cache from the cached output) when cross-frame attention needs it. Runs on the
/// render thread, only when a batch needs rendering.
pub(crate) fn renderer_factory(
    shared: Arc<SharedModels>,
    anchor: AnchorInput,
    notify: Notifier,
) -> RendererFactory {
    Box::new(move |work: &WorkDir, batch: &[PreparedFrame]| {
        let models = load_models(&shared, &notify)?;
        let mut renderer = SdRenderer::new(shared.config().clone(), models);
        if renderer.config().needs_anchor() {
            // The first rendered frame, when it is the anchor, is preprocessed exactly as the
            // pipeline does it (fresh trackers): take it from the batch when it is there.
            let in_batch = batch
                .iter()
                .find(|f| f.source.index == anchor.index && anchor.index == anchor.first_frame);
            let read;
            let prepared = match in_batch {
                Some(frame) => frame,
                None => {
                    let mut preprocessors: Vec<Box<dyn Preprocessor>> =
                        build_preprocessors(&anchor.maps, &anchor.preprocess)?;
                    read = read_prepared_frame(
                        &anchor.path,
                        &anchor.options,
                        anchor.index,
                        &mut preprocessors,
                    )?;
                    &read
                }
            };
            let cached = work.load_anchor(anchor.index)?;
            let reused = cached.is_some();
            if let Some(fresh) = renderer.prepare_anchor(prepared, cached)? {
                work.save_anchor(&fresh)?;
            }
            let (bytes, _) = renderer.attention_cache_bytes();
            notify(&format!(
                "anchor frame {}{}: cross-frame attention keeps {:.1} MB per reference frame",
                anchor.index,
                if reused {
                    " (output from the work directory)"
                } else {
                    ""
                },
                bytes as f64 / 1e6
            ));
        }
        Ok(Box::new(renderer) as Box<dyn crate::pipeline::resume::ChainedRenderer>)
    })
}

/// Face and hand detailing (the preset's `detail:` section) on the renderer's models. The
/// work directory keeps each batch's detailed frames next to the renderer's: a finished
/// batch's are read back, and its regions only tracked (no model runs), so the batches that
/// are detailed continue the same tracks as in an uninterrupted render. The models are
/// loaded when the first batch needs a detail pass.
pub(crate) struct SharedModelDetailer {
    shared: Arc<SharedModels>,
    preset: Preset,
    work: WorkDir,
    stop: StopFlag,
    notify: Notifier,
    /// `detail` events with `--json`.
    json: Option<Arc<JsonProgress>>,
    stage: DetailStage,
}

/// Before the first detail pass only the tracks are kept; then the whole detailer.
enum DetailStage {
    Tracking(RegionPlanner),
    Detailing(FaceHandDetailer<StableDiffusionInpainter>),
    /// Only while switching from one to the other.
    Switching,
}

/// `{"event":"detail",...}`: what detailing did to one batch (with `--json`).
#[derive(Serialize)]
struct DetailEvent<'a> {
    event: &'static str,
    batch: usize,
    frames: usize,
    /// The detailed frames were read back from the work directory (no diffusion pass).
    restored: bool,
    /// Diffusion passes run for this batch.
    inpainted: usize,
    regions: &'a [RegionReport],
}

impl SharedModelDetailer {
    pub(crate) fn new(
        shared: Arc<SharedModels>,
        preset: &Preset,
        fps: f64,
        work: WorkDir,
        stop: StopFlag,
        notify: Notifier,
        json: Option<Arc<JsonProgress>>,
    ) -> Result<Option<Self>, crate::detail::DetailError> {
        let Some(config) = detailer_config(preset, fps)? else {
            return Ok(None);
        };
        Ok(Some(SharedModelDetailer {
            shared,
            preset: preset.clone(),
            work,
            stop,
            notify,
            json,
            stage: DetailStage::Tracking(RegionPlanner::new(config)),
        }))
    }

    /// The detailer, loading the models on first use.
    fn detailer(&mut self) -> Result<&mut FaceHandDetailer<StableDiffusionInpainter>, StageError> {
        if let DetailStage::Tracking(_) = self.stage {
            let DetailStage::Tracking(planner) =
                std::mem::replace(&mut self.stage, DetailStage::Switching)
            else {
                unreachable!("matched just above")
            };
            let models = load_models(&self.shared, &self.notify)?;
            let openpose = models.controlnet_of_kind(self.shared.config(), ControlKind::Openpose);
            let inpainter = inpainter_for_preset(&self.preset, models.sd.clone(), openpose)?;
            let detailer = FaceHandDetailer::from_planner(planner, inpainter)?
                .with_stop_flag(self.stop.clone());
            self.stage = DetailStage::Detailing(detailer);
        }
        match &mut self.stage {
            DetailStage::Detailing(detailer) => Ok(detailer),
            _ => Err("face/hand detailing failed to load earlier in this run".into()),
        }
    }

    fn report(&self, batch: &Batch, frames: usize, restored: bool, detail: &BatchDetail) {
        match &self.json {
            Some(json) => json.emit(&DetailEvent {
                event: "detail",
                batch: batch.index,
                frames,
                restored,
                inpainted: detail.inpainted,
                regions: &detail.regions,
            }),
            None if restored => (self.notify)(&format!(
                "detail: batch {}: detailed frames from the work directory",
                batch.index
            )),
            None => (self.notify)(&format!(
                "detail: batch {}: {} region(s) repainted on {frames} frame(s)",
                batch.index, detail.inpainted
            )),
        }
    }
}

impl Detailer for SharedModelDetailer {
    fn name(&self) -> &str {
        "face-hands"
    }

    fn detail_batch(
        &mut self,
        batch: &Batch,
        inputs: &[PreparedFrame],
        outputs: &mut [Frame],
    ) -> Result<(), StageError> {
        let stored = match self.work.load_detailed(batch) {
            Ok(stored) => stored.filter(|frames| frames.len() == outputs.len()),
            Err(e) => {
                (self.notify)(&format!("{e}; detailing batch {} again", batch.index));
                None
            }
        };
        if let Some(frames) = stored {
            let size = (frames[0].width, frames[0].height);
            let planner = match &mut self.stage {
                DetailStage::Tracking(planner) => planner,
                DetailStage::Detailing(detailer) => detailer.planner_mut(),
                DetailStage::Switching => {
                    return Err("face/hand detailing failed to load earlier in this run".into())
                }
            };
            let detail = planner.track_batch(batch, inputs, size)?;
            outputs.clone_from_slice(&frames);
            self.report(batch, outputs.len(), true, &detail);
            return Ok(());
        }
        let detail = self
            .detailer()?
            .detail_batch_report(batch, inputs, outputs)?;
        self.work.save_detailed(batch, outputs)?;
        self.report(batch, outputs.len(), false, &detail);
        Ok(())
    }
}

/// The stop flag Ctrl-C sets; installed once per process.
static STOP: OnceLock<StopFlag> = OnceLock::new();

extern "C" fn on_interrupt(_signal: libc::c_int) {
    const FIRST: &[u8] = b"\nstopping after the current frame (Ctrl-C again to quit at once)\n";
    if let Some(stop) = STOP.get() {
        if stop.request() {
            // SAFETY: _exit is async-signal-safe.
            unsafe { libc::_exit(EXIT_INTERRUPTED) };
        }
        // SAFETY: write(2) is async-signal-safe; the buffer is a static.
        unsafe { libc::write(2, FIRST.as_ptr().cast(), FIRST.len()) };
    }
}

/// Make Ctrl-C (SIGINT) ask the render to stop between frames instead of killing it.
pub(crate) fn install_interrupt_handler() -> StopFlag {
    let stop = STOP.get_or_init(StopFlag::new).clone();
    // SAFETY: an all-zero sigaction is a valid value to fill in; the handler only touches
    // an atomic flag and async-signal-safe calls.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_interrupt as extern "C" fn(libc::c_int) as libc::sighandler_t;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGINT, &action, std::ptr::null_mut());
    }
    stop
}

/// Open the input the way the preset and `--frames` ask; also the whole clip's frame count.
/// Without `--frames` the reader's own scan is the only pass over the file; with it, a probe
/// first finds the clip's length.
pub(crate) fn open_input(
    input: &Path,
    options: &ReadOptions,
    frames: Option<FrameSelection>,
) -> anyhow::Result<(VideoReader, u64)> {
    let mut options = options.clone();
    let mut clip_frames = None;
    if frames.is_some() {
        let whole = probe_with(input, &options)?;
        clip_frames = Some(whole.frame_count);
        options.frames = frame_range(&whole, frames)?;
    }
    // The video module refuses inputs without frames (VideoError::ZeroFrames).
    let reader = VideoReader::open_with(input, options)?;
    let clip_frames = clip_frames.unwrap_or(reader.info().frame_count);
    Ok((reader, clip_frames))
}

/// Refuse outputs we must not write before any decoding work starts.
pub(crate) fn check_output(target: &OutputTarget, input: &Path, force: bool) -> anyhow::Result<()> {
    let path = target.path();
    if let (Ok(out), Ok(inp)) = (path.canonicalize(), input.canonicalize()) {
        if out == inp {
            return Err(CliError::OutputUnwritable {
                path: path.to_path_buf(),
                reason: "it is the input file".into(),
            }
            .into());
        }
    }
    match target {
        OutputTarget::Mp4(path) => {
            let extension = path
                .extension()
                .map(|e| e.to_string_lossy().to_ascii_lowercase());
            if !matches!(extension.as_deref(), Some("mp4" | "m4v" | "mov")) {
                return Err(CliError::BadFlag {
                    flag: "-o",
                    value: path.display().to_string(),
                    reason: "the output must be an .mp4 file, or a directory (ending in /) \
                             for a PNG sequence"
                        .into(),
                }
                .into());
            }
            if path.exists() && !force {
                return Err(CliError::OutputExists {
                    path: path.to_path_buf(),
                }
                .into());
            }
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                let unwritable = |reason: String| CliError::OutputUnwritable {
                    path: path.to_path_buf(),
                    reason,
                };
                if parent.exists() && !parent.is_dir() {
                    return Err(
                        unwritable(format!("{} is not a directory", parent.display())).into(),
                    );
                }
                std::fs::create_dir_all(parent).map_err(|e| {
                    unwritable(format!("cannot create directory {}: {e}", parent.display()))
                })?;
            }
            Ok(())
        }
        // The PNG writer refuses a directory holding a sequence unless --force.
        OutputTarget::PngSequence(_) => Ok(()),
    }
}

pub(crate) fn create_sink(
    target: &OutputTarget,
    job: &RenderJob,
    info: &VideoInfo,
    (width, height): (u32, u32),
    resuming: bool,
) -> anyhow::Result<Box<dyn FrameSink>> {
    Ok(match target {
        OutputTarget::Mp4(path) => {
            let mut settings = Mp4Settings::new(width, height, info.fps);
            settings.crf = job.preset.output.crf as f32;
            settings.preset = job.preset.output.encoder_preset.clone();
            settings.overwrite = job.force;
            if info.has_audio {
                settings.audio_source = Some(job.input.clone());
                // With --frames, only the audio under the selected frames; otherwise the
                // whole track, as long as it is.
                if job.frames.is_some() {
                    let frames = info.start_frame..info.start_frame + info.frame_count;
                    settings.audio_range = Some(frames_to_seconds(&frames, info.fps));
                }
            }
            Box::new(Mp4Writer::create(path, settings)?)
        }
        OutputTarget::PngSequence(dir) => {
            Box::new(PngSequenceWriter::create(dir, job.force || resuming)?)
        }
    })
}

/// `{"event":"start",...}`: what is about to be rendered (first line of `--json` output).
#[derive(Serialize)]
pub(crate) struct StartEvent<'a> {
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

pub(crate) fn start_event<'a>(
    job: &'a RenderJob,
    info: &VideoInfo,
    plan: &BatchPlan,
    renderer: &'a str,
    (width, height): (u32, u32),
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
        seed: preset.sampler.seed,
    }
}

/// `{"event":"done",...}`: the last line of `--json` output.
#[derive(Serialize)]
pub(crate) struct DoneEvent<'a> {
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

pub(crate) fn done_event(
    report: &PipelineReport,
    elapsed: f64,
    test_weights: bool,
) -> DoneEvent<'_> {
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
