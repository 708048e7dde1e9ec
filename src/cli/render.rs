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
//! The work itself is a [`RenderJob`] run by [`run_render_job`], shared with `rotoscope
//! batch`; it also decides what happens when model files are missing (offline: preprocess,
//! keep the maps, list the missing files, exit 2). `--device` is opened once, here, for
//! the run's model cache. This file keeps the arguments, the printing and Ctrl-C.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use clap::Args;

use super::open_device;
use crate::app::args::FrameSelection;
use crate::app::events::emit_done;
use crate::app::job::{preset_dir, JobInterrupted, RenderJob, Reporting};
use crate::app::render_job::run_render_job;
use crate::app::resolve::load_preset;
use crate::cancel::StopFlag;
use crate::device::DeviceChoice;
use crate::loaders::model_cache::ModelCache;
use crate::pipeline::progress::{BarProgress, JsonProgress};
use crate::preset::PresetOverrides;

/// Exit code after Ctrl-C (128 + SIGINT), as shells report it.
pub const EXIT_INTERRUPTED: i32 = 130;

#[derive(Debug, Args)]
pub struct RenderArgs {
    /// Input video (anything FFmpeg reads; variable frame rate is resampled to constant)
    #[arg(value_name = "INPUT")]
    pub input: PathBuf,
    /// Preset file, or the name of a bundled preset (anime, watercolor, lineart-ink,
    /// anime-animatediff, anime-fast)
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
    /// Where the networks run: cpu, cuda or cuda:N
    #[arg(long, value_name = "DEVICE", default_value_t = DeviceChoice::Cpu)]
    pub device: DeviceChoice,
}

pub fn run(args: RenderArgs) -> anyhow::Result<()> {
    let overrides = PresetOverrides { seed: args.seed };
    let preset = load_preset(&args.preset, &overrides)?;
    let models = Arc::new(ModelCache::new(open_device(args.device)?));
    let job = RenderJob {
        input: args.input,
        preset,
        preset_origin: args.preset.display().to_string(),
        preset_dir: preset_dir(&args.preset),
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
    let outcome = match run_render_job(&job, &models, &reporting, &stop) {
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
        emit_done(&reporting, &outcome);
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
pub fn install_interrupt_handler() -> StopFlag {
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
