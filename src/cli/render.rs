//! `rotoscope render`: probe the input, plan batches, run the stage pipeline, write the
//! output (MP4 with the source's audio, or a PNG sequence) under a temporary name and rename.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use serde::Serialize;

use super::args::{FrameSelection, OutputTarget};
use super::plan::{frame_range, read_options};
use super::{load_preset, CliError};
use crate::preset::{Preset, PresetOverrides};
use crate::render::pipeline::{Pipeline, PipelineReport};
use crate::render::plan::{plan_for_preset, BatchPlan};
use crate::render::progress::{BarProgress, JsonProgress, ProgressReporter, SilentProgress};
use crate::render::stages::passthrough::PassThroughRenderer;
use crate::render::stages::{FrameRenderer, FrameSink};
use crate::video::encode::{frames_to_seconds, Mp4Settings, Mp4Writer};
use crate::video::png_sequence::PngSequenceWriter;
use crate::video::{probe_with, VideoInfo, VideoReader};

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
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// Ignore finished batches in the work directory and render everything again
    #[arg(long)]
    pub no_resume: bool,
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
    // Input first: a wrong input is the more fundamental mistake to report.
    let reader = open_input(&args.input, &preset, args.frames)?;
    let info = reader.info().clone();
    let target = OutputTarget::from_arg(&args.output);
    check_output(&target, &args.input, args.force)?;
    let plan = plan_for_preset(info.frame_count as usize, &preset)
        .with_context(|| format!("planning batches for {}", args.preset.display()))?;

    let renderer: Box<dyn FrameRenderer> = Box::new(PassThroughRenderer);
    let (width, height) = renderer.output_size(info.width, info.height);
    let sink = create_sink(&target, &args, &preset, &info, (width, height))?;

    let reporting = Reporting::new(&args);
    reporting.note(&format!(
        "note: renderer \"{}\": the Stable Diffusion renderer is not in this build yet, \
         frames pass through unchanged",
        renderer.name()
    ));
    if args.work_dir.is_some() || args.no_resume {
        reporting.note(
            "note: --work-dir / --no-resume take effect with the Stable Diffusion renderer \
             (resumable batches); the pass-through renderer has nothing to cache",
        );
    }
    if let Reporting::Json(json) = &reporting {
        json.emit(&start_event(
            &args,
            &preset,
            &info,
            &plan,
            renderer.name(),
            (width, height),
        ));
    }

    let pipeline = Pipeline::new(Box::new(reader), renderer, sink);
    let report = pipeline
        .run(&plan, reporting.progress())
        .with_context(|| format!("rendering {}", args.input.display()))?;

    match &reporting {
        Reporting::Json(json) => json.emit(&done_event(&report, json.elapsed_secs())),
        _ => reporting.note(&format!(
            "wrote {}: {} in {:.1} s",
            report.output.path.display(),
            report.output.detail,
            report.wall_secs
        )),
    }
    Ok(())
}

/// Open the input the way the preset and `--frames` ask. Without `--frames` the reader's
/// own scan is the only pass over the file; with it, a probe first finds the clip's length.
fn open_input(
    input: &Path,
    preset: &Preset,
    frames: Option<FrameSelection>,
) -> anyhow::Result<VideoReader> {
    let mut options = read_options(preset);
    if frames.is_some() {
        let whole = probe_with(input, &options)?;
        options.frames = frame_range(&whole, frames)?;
    }
    // The video module refuses inputs without frames (VideoError::ZeroFrames).
    Ok(VideoReader::open_with(input, options)?)
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
        OutputTarget::PngSequence(dir) => Box::new(PngSequenceWriter::create(dir, args.force)?),
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
    /// Seconds each stage spent working (not waiting): the pipeline's overhead next to
    /// the render.
    stage_secs: StageSecs,
}

#[derive(Serialize)]
struct StageSecs {
    decode: f64,
    preprocess: f64,
    render: f64,
    encode: f64,
}

fn done_event(report: &PipelineReport, elapsed: f64) -> DoneEvent<'_> {
    DoneEvent {
        event: "done",
        output: &report.output.path,
        frames: report.frames,
        detail: &report.output.detail,
        elapsed,
        stage_secs: StageSecs {
            decode: report.decode_secs,
            preprocess: report.preprocess_secs,
            render: report.render_secs,
            encode: report.encode_secs,
        },
    }
}
