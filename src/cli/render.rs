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

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use anyhow::Context;
use clap::Args;
use serde::Serialize;

use super::args::{FrameSelection, OutputTarget};
use super::plan::{frame_range, read_options};
use super::preprocess::models_dir;
use super::{load_preset, CliError};
use crate::detail::{detailer_for_preset, FaceHandDetailer, StableDiffusionInpainter};
use crate::models::loading::HubOptions;
use crate::preprocess::cache::fingerprint_file;
use crate::preset::ControlKind;
use crate::preset::{Preset, PresetError, PresetOverrides};
use crate::render::pipeline::{Pipeline, PipelineReport, StageTimes};
use crate::render::plan::Batch;
use crate::render::plan::{plan_for_preset, BatchPlan};
use crate::render::progress::{BarProgress, JsonProgress, ProgressReporter, SilentProgress};
use crate::render::resume::{
    default_work_dir, is_interrupted, Notifier, RendererFactory, ResumableRenderer, RunIdentity,
    StopFlag, WorkDir, WORK_FORMAT,
};
use crate::render::sd_renderer::{
    LoadedModels, SdRenderConfig, SdRenderError, SdRenderer, SharedModels, RENDERER_NAME,
};
use crate::render::stages::preprocessors::{build_preprocessors, PreprocessorOptions};
use crate::render::stages::{Detailer, StageError};
use crate::render::stages::{FrameSink, PreparedFrame, Preprocessor};
use crate::render::temporal::anchor::read_prepared_frame;
use crate::video::encode::{frames_to_seconds, Mp4Settings, Mp4Writer};
use crate::video::png_sequence::PngSequenceWriter;
use crate::video::Frame;
use crate::video::{probe_with, ReadOptions, VideoInfo, VideoReader};

/// Exit code after Ctrl-C (128 + SIGINT), as shells report it.
pub const EXIT_INTERRUPTED: i32 = 130;

/// A UNet whose first level has fewer channels is a random test model (SD1.5 has 320).
const TEST_MODEL_CHANNELS: usize = 64;

#[derive(Debug, Args)]
pub struct RenderArgs {
    /// Input video (anything FFmpeg reads; variable frame rate is resampled to constant)
    #[arg(value_name = "INPUT")]
    pub input: PathBuf,
    /// Preset file, or the name of a bundled preset (anime, watercolor, lineart-ink)
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

/// How this run talks to the user.
#[derive(Clone)]
enum Reporting {
    Quiet,
    Bars(Arc<BarProgress>),
    Json(Arc<JsonProgress>),
}

impl Reporting {
    fn new(args: &RenderArgs) -> Self {
        if args.json {
            Reporting::Json(Arc::new(JsonProgress::new()))
        } else if args.quiet {
            Reporting::Quiet
        } else {
            Reporting::Bars(Arc::new(BarProgress::new()))
        }
    }

    fn progress(&self) -> Arc<dyn ProgressReporter> {
        match self {
            Reporting::Quiet => Arc::new(SilentProgress),
            Reporting::Bars(bars) => bars.clone(),
            Reporting::Json(json) => json.clone(),
        }
    }

    /// A human-readable note on stderr (stdout stays pure JSON with `--json`).
    fn note(&self, text: &str) {
        match self {
            Reporting::Quiet => {}
            Reporting::Bars(bars) => bars.println(text),
            Reporting::Json(_) => eprintln!("{text}"),
        }
    }
}

pub fn run(args: RenderArgs) -> anyhow::Result<()> {
    let overrides = PresetOverrides { seed: args.seed };
    let preset = load_preset(&args.preset, &overrides)?;
    let preset_dir = args
        .preset
        .is_file()
        .then(|| args.preset.parent().map(Path::to_path_buf))
        .flatten();
    // Input first: a wrong input is the more fundamental mistake to report.
    let options = read_options(&preset);
    let (reader, clip_frames) = open_input(&args.input, &options, args.frames)?;
    let info = reader.info().clone();
    let target = OutputTarget::from_arg(&args.output);
    check_output(&target, &args.input, args.force)?;
    let plan = plan_for_preset(info.frame_count as usize, &preset)
        .with_context(|| format!("planning batches for {}", args.preset.display()))?;
    let size = preset.render_size(info.width, info.height);
    let config = SdRenderConfig::from_preset(&preset, size, preset_dir.as_deref());
    let anchor_index = preset.temporal.anchor.resolve(info.start_frame);
    if config.needs_anchor() && anchor_index >= clip_frames {
        return Err(PresetError::Invalid {
            origin: args.preset.display().to_string(),
            field: "temporal.anchor".into(),
            message: format!(
                "frame {anchor_index} is past the end of {} ({clip_frames} frames)",
                args.input.display()
            ),
        }
        .into());
    }
    let reporting = Reporting::new(&args);

    let work_root = args
        .work_dir
        .clone()
        .unwrap_or_else(|| default_work_dir(target.path()));
    let run_identity = RunIdentity {
        format: WORK_FORMAT,
        renderer: format!("{RENDERER_NAME} rotoscope {}", env!("CARGO_PKG_VERSION")),
        preset_fingerprint: preset.fingerprint(),
        input: fingerprint_file(&args.input)?,
        first_frame: info.start_frame,
        frame_count: info.frame_count,
        fps: info.fps.to_string(),
        width: size.0,
        height: size.1,
        seed: preset.sampler.seed,
    };
    // The work directory sits next to the output: where it cannot be made, the output cannot
    // be written either.
    let (work, opened) = WorkDir::open(&work_root, run_identity, &args.input, !args.no_resume)
        .map_err(|e| CliError::OutputUnwritable {
            path: work_root.clone(),
            reason: format!("its work directory: {e}"),
        })?;
    if let Some(line) = opened.describe(&work_root) {
        reporting.note(&line);
    }
    let rendered = (|| -> anyhow::Result<PipelineReport> {
        // A resumed render replaces the frames its interrupted run already wrote to a PNG
        // sequence (they come from the same work directory); anything else needs --force.
        let resuming = opened.reusable > 0;
        let sink = create_sink(&target, &args, &preset, &info, size, resuming)?;
        let unfinished: Vec<_> = plan
            .batches
            .iter()
            .filter(|b| !work.is_finished(b))
            .map(|b| info.start_frame + b.start as u64..info.start_frame + b.end as u64)
            .collect();

        let stop = install_interrupt_handler();
        let preprocess_options = PreprocessorOptions {
            models_dir: models_dir(),
            pose: preset.preprocess.pose.clone(),
            softedge: preset.preprocess.softedge.clone(),
            fps: info.fps.as_f64(),
            pose_json: args.pose_json.clone(),
            needed: Some(unfinished.clone()),
            stop: stop.clone(),
        };
        let mut maps = config.required_maps();
        // Face and hand detailing finds the regions in the pose keypoints.
        if preset.detail.any_enabled() && !maps.contains(&ControlKind::Openpose) {
            maps.push(ControlKind::Openpose);
        }
        // Finished batches need no maps; pose tracking still sees every frame (see
        // `preprocessors`), so only a render with nothing left to render or detail skips
        // preprocessing entirely.
        let preprocessors = if unfinished.is_empty() && !preset.detail.any_enabled() {
            Vec::new()
        } else {
            build_preprocessors(&maps, &preprocess_options)?
        };

        let notify: Notifier = {
            let reporting = reporting.clone();
            Arc::new(move |text: &str| reporting.note(text))
        };
        let notify_detail = notify.clone();
        let shared = Arc::new(SharedModels::new(
            config,
            HubOptions::from_env(matches!(reporting, Reporting::Bars(_))),
        ));
        let factory = renderer_factory(
            shared.clone(),
            AnchorInput {
                path: args.input.clone(),
                options: options.clone(),
                index: anchor_index,
                first_frame: info.start_frame,
                preprocess: PreprocessorOptions {
                    needed: None,
                    ..preprocess_options
                },
                maps,
            },
            notify.clone(),
        );
        let renderer =
            ResumableRenderer::new(RENDERER_NAME, size, work.clone(), factory, stop, notify);
        if let Reporting::Json(json) = &reporting {
            json.emit(&start_event(
                &args,
                &preset,
                &info,
                &plan,
                RENDERER_NAME,
                size,
            ));
        }

        let mut pipeline = Pipeline::new(Box::new(reader), Box::new(renderer), sink);
        pipeline.preprocessors = preprocessors;
        if preset.detail.any_enabled() {
            pipeline.detailers.push(Box::new(SharedModelDetailer {
                shared,
                preset: preset.clone(),
                fps: info.fps.as_f64(),
                notify: notify_detail,
                detailer: None,
            }));
        }
        pipeline.blend = preset.batch.blend;
        match pipeline.run(&plan, reporting.progress()) {
            Ok(report) => Ok(report),
            Err(err) if is_interrupted(&err) => {
                let kept = plan.batches.iter().filter(|b| work.is_finished(b)).count();
                // Printed even with --quiet: the user pressed Ctrl-C and must learn how to go on.
                eprintln!(
                    "interrupted: {kept} of {} batches are finished and kept in {}; run the \
                     same command again to resume (--no-resume starts over)",
                    plan.batches.len(),
                    work.root().display()
                );
                std::process::exit(EXIT_INTERRUPTED);
            }
            Err(err) => Err(err).with_context(|| format!("rendering {}", args.input.display())),
        }
    })();
    let report = match rendered {
        Ok(report) => report,
        Err(err) => {
            // Nothing worth resuming: leave no empty work directory behind.
            if !plan.batches.iter().any(|b| work.is_finished(b)) {
                let _ = work.remove();
            }
            return Err(err);
        }
    };
    work.remove()?;

    match &reporting {
        Reporting::Json(json) => json.emit(&done_event(&report, json.elapsed_secs())),
        _ => {
            reporting.note(&format!(
                "wrote {}: {} in {:.1} s",
                report.output.path.display(),
                report.output.detail,
                report.wall_secs
            ));
            reporting.note(&report.stages.summary(report.wall_secs));
        }
    }
    Ok(())
}

/// The anchor frame's input, read when the renderer is built.
struct AnchorInput {
    path: PathBuf,
    options: ReadOptions,
    index: u64,
    /// The first rendered frame.
    first_frame: u64,
    preprocess: PreprocessorOptions,
    maps: Vec<ControlKind>,
}

/// The shared models, loaded on first use, with a word to the user when that happens.
fn load_models(
    shared: &SharedModels,
    notify: &Notifier,
) -> Result<Arc<LoadedModels>, SdRenderError> {
    if shared.is_loaded() {
        return shared.get();
    }
    let base = &shared.config().models.base;
    notify(&format!("loading models: {base}"));
    let models = shared.get()?;
    if models
        .unet_channels()
        .first()
        .is_some_and(|&c| c < TEST_MODEL_CHANNELS)
    {
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
fn renderer_factory(
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
        Ok(Box::new(renderer) as Box<dyn crate::render::resume::ChainedRenderer>)
    })
}

/// Face and hand detailing (the preset's `detail:` section) on the renderer's models, built
/// when the first batch arrives. It runs on every batch, also on batches read back from the
/// work directory (which holds the renderer's frames before detailing), so its tracks are the
/// same whether or not a render was resumed.
struct SharedModelDetailer {
    shared: Arc<SharedModels>,
    preset: Preset,
    fps: f64,
    notify: Notifier,
    detailer: Option<FaceHandDetailer<StableDiffusionInpainter>>,
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
        if self.detailer.is_none() {
            let models = load_models(&self.shared, &self.notify)?;
            let openpose = models.controlnet_of_kind(self.shared.config(), ControlKind::Openpose);
            self.detailer =
                detailer_for_preset(&self.preset, models.sd.clone(), openpose, self.fps)?;
        }
        match &mut self.detailer {
            Some(detailer) => detailer.detail_batch(batch, inputs, outputs),
            None => Ok(()),
        }
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
fn install_interrupt_handler() -> StopFlag {
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
fn open_input(
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
fn check_output(target: &OutputTarget, input: &Path, force: bool) -> anyhow::Result<()> {
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

fn create_sink(
    target: &OutputTarget,
    args: &RenderArgs,
    preset: &Preset,
    info: &VideoInfo,
    (width, height): (u32, u32),
    resuming: bool,
) -> anyhow::Result<Box<dyn FrameSink>> {
    Ok(match target {
        OutputTarget::Mp4(path) => {
            let mut settings = Mp4Settings::new(width, height, info.fps);
            settings.crf = preset.output.crf as f32;
            settings.preset = preset.output.encoder_preset.clone();
            settings.overwrite = args.force;
            if info.has_audio {
                settings.audio_source = Some(args.input.clone());
                // With --frames, only the audio under the selected frames; otherwise the
                // whole track, as long as it is.
                if args.frames.is_some() {
                    let frames = info.start_frame..info.start_frame + info.frame_count;
                    settings.audio_range = Some(frames_to_seconds(&frames, info.fps));
                }
            }
            Box::new(Mp4Writer::create(path, settings)?)
        }
        OutputTarget::PngSequence(dir) => {
            Box::new(PngSequenceWriter::create(dir, args.force || resuming)?)
        }
    })
}

/// `{"event":"start",...}`: what is about to be rendered (first line of `--json` output).
#[derive(Serialize)]
struct StartEvent<'a> {
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

fn start_event<'a>(
    args: &'a RenderArgs,
    preset: &'a Preset,
    info: &VideoInfo,
    plan: &BatchPlan,
    renderer: &'a str,
    (width, height): (u32, u32),
) -> StartEvent<'a> {
    StartEvent {
        event: "start",
        input: &args.input,
        output: &args.output,
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
struct DoneEvent<'a> {
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
}

fn done_event(report: &PipelineReport, elapsed: f64) -> DoneEvent<'_> {
    DoneEvent {
        event: "done",
        output: &report.output.path,
        frames: report.frames,
        detail: &report.output.detail,
        elapsed,
        stage_secs: report.stages,
        stage_share_percent: report.stages.shares(report.wall_secs).into_iter().collect(),
    }
}
