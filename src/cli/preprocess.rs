//! `rotoscope preprocess INPUT -o DIR [--pose] [--softedge] [--json]`: for every frame of a
//! clip, the openpose map (`pose_000123.png`) with its OpenPose keypoints
//! (`pose_000123_keypoints.json`) and the soft-edge map (`softedge_000123.png`), at the
//! clip's frame size. Without `--pose` or `--softedge` both are made.
//!
//! `DIR` is also the cache: each stage keeps a manifest keyed by the input's fingerprint and
//! the settings (see [`crate::preprocess::cache`]); a rerun skips the frames already there
//! and redoes everything after a change to the input, the settings or the models.
//!
//! Models come from `$ROTOSCOPE_MODELS` (default `./models`), as installed by
//! `scripts/fetch-models.sh`. Settings are the preset defaults (`preprocess.pose`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use serde::Serialize;

use super::CliError;
use crate::pipeline::progress::{BarProgress, JsonProgress, ProgressReporter, Stage};
use crate::pipeline::stages::{PreparedFrame, Preprocessor};
use crate::preprocess::cache::fingerprint_file;
use crate::preprocess::models_dir;
use crate::preprocess::registry::{
    build_cached_preprocessors, CacheTarget, PreprocessorError, PreprocessorOptions,
};
use crate::preset::ControlKind;
use crate::video::{VideoInfo, VideoReader};

#[derive(Debug, Args)]
pub struct PreprocessArgs {
    /// Input video
    #[arg(value_name = "INPUT")]
    pub input: PathBuf,
    /// Output directory (PNG maps + OpenPose JSON per frame)
    #[arg(short = 'o', long = "output", value_name = "DIR")]
    pub output: PathBuf,
    /// Estimate poses (OpenPose maps and *_keypoints.json)
    #[arg(long)]
    pub pose: bool,
    /// Compute soft-edge (HED) maps
    #[arg(long)]
    pub softedge: bool,
    /// Progress as JSON lines on stdout
    #[arg(long)]
    pub json: bool,
}

/// `{"event":"start",...}`: first line of `--json` output.
#[derive(Serialize)]
struct StartEvent<'a> {
    event: &'static str,
    input: &'a Path,
    output: &'a Path,
    frames: u64,
    fps: String,
    width: u32,
    height: u32,
    pose: bool,
    softedge: bool,
    /// Frames already in the output directory from an earlier run with the same key.
    cached: u64,
}

/// `{"event":"done",...}`: last line of `--json` output.
#[derive(Serialize)]
struct DoneEvent<'a> {
    event: &'static str,
    output: &'a Path,
    frames: u64,
    /// Frames computed by this run (the rest came from the cache).
    computed: u64,
    cached: u64,
    elapsed: f64,
    /// Frames computed per second of this run (0 when everything was cached).
    frames_per_sec: f64,
    /// How often the pose models ran (tracking: detections ≪ frames).
    pose_person_detections: Option<u64>,
    pose_palm_detections: Option<u64>,
    pose_face_detections: Option<u64>,
}

/// Bars on stderr, or JSON lines on stdout (`--json`).
enum Reporting {
    Bars(BarProgress),
    Json(JsonProgress),
}

impl Reporting {
    fn reporter(&self) -> &dyn ProgressReporter {
        match self {
            Reporting::Bars(b) => b,
            Reporting::Json(j) => j,
        }
    }
}

/// The output directory cannot hold the cache: an unwritable output (exit 2), not a
/// failing preprocessor.
fn setup_error(err: PreprocessorError) -> anyhow::Error {
    match err.unwritable_cache() {
        Some((path, source)) => CliError::OutputUnwritable {
            path: path.to_path_buf(),
            reason: source.to_string(),
        }
        .into(),
        None => err.into(),
    }
}

fn all_done(preprocessors: &[Box<dyn Preprocessor>], index: u64) -> bool {
    preprocessors.iter().all(|p| p.is_done(index))
}

pub fn run(args: PreprocessArgs) -> anyhow::Result<()> {
    let (want_pose, want_softedge) = match (args.pose, args.softedge) {
        (false, false) => (true, true),
        flags => flags,
    };
    let reader = VideoReader::open(&args.input)?;
    let info: VideoInfo = reader.info().clone();
    // The preset defaults, for every frame, the maps in the output directory as the cache.
    let options = PreprocessorOptions::defaults(models_dir(), info.fps.as_f64());
    let kinds: Vec<ControlKind> = [
        (want_pose, ControlKind::Openpose),
        (want_softedge, ControlKind::Softedge),
    ]
    .into_iter()
    .filter_map(|(wanted, kind)| wanted.then_some(kind))
    .collect();
    let cache = CacheTarget {
        dir: args.output.clone(),
        input_fingerprint: fingerprint_file(&args.input)?,
    };
    let mut preprocessors =
        build_cached_preprocessors(&kinds, &options, &cache).map_err(setup_error)?;

    let first = info.start_frame;
    let frame_range = first..first + info.frame_count;
    let already = frame_range
        .clone()
        .filter(|&i| all_done(&preprocessors, i))
        .count() as u64;

    let reporting = if args.json {
        Reporting::Json(JsonProgress::new())
    } else {
        Reporting::Bars(BarProgress::new())
    };
    let progress = reporting.reporter();
    let json = match &reporting {
        Reporting::Json(j) => Some(j),
        Reporting::Bars(_) => None,
    };
    if let Some(json) = &json {
        json.emit(&StartEvent {
            event: "start",
            input: &args.input,
            output: &args.output,
            frames: info.frame_count,
            fps: info.fps.to_string(),
            width: info.width,
            height: info.height,
            pose: want_pose,
            softedge: want_softedge,
            cached: already,
        });
    }
    progress.begin(Stage::Preprocess, info.frame_count);

    let started = Instant::now();
    let (mut computed, mut cached, mut done) = (0u64, 0u64, 0u64);
    for frame in reader {
        let frame = frame?;
        let index = frame.index;
        done += 1;
        if all_done(&preprocessors, index) {
            cached += 1;
            progress.advance(Stage::Preprocess, done);
            continue;
        }
        let mut prepared = PreparedFrame::new(frame);
        for p in preprocessors.iter_mut().filter(|p| !p.is_done(index)) {
            p.process(&mut prepared)
                .map_err(|e| anyhow::anyhow!(e))
                .with_context(|| {
                    format!("{} of frame {index} of {}", p.name(), args.input.display())
                })?;
        }
        computed += 1;
        progress.advance(Stage::Preprocess, done);
    }
    progress.finish(Stage::Preprocess);

    let elapsed = started.elapsed().as_secs_f64();
    let frames_per_sec = if computed > 0 && elapsed > 0.0 {
        computed as f64 / elapsed
    } else {
        0.0
    };
    let counters: Vec<_> = preprocessors.iter().flat_map(|p| p.counters()).collect();
    let counter = |name: &str| counters.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
    match &reporting {
        Reporting::Json(json) => json.emit(&DoneEvent {
            event: "done",
            output: &args.output,
            frames: done,
            computed,
            cached,
            elapsed: json.elapsed_secs(),
            frames_per_sec: (frames_per_sec * 100.0).round() / 100.0,
            pose_person_detections: counter("pose_person_detections"),
            pose_palm_detections: counter("pose_palm_detections"),
            pose_face_detections: counter("pose_face_detections"),
        }),
        Reporting::Bars(bars) => bars.println(&format!(
            "{}: {done} frames ({computed} computed at {frames_per_sec:.1} frames/s, {cached} from an earlier run)",
            args.output.display()
        )),
    }
    Ok(())
}
