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

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use image::RgbImage;
use serde::Serialize;

use super::CliError;
use crate::pipeline::progress::{BarProgress, JsonProgress, ProgressReporter, Stage};
use crate::preprocess::cache::{fingerprint_file, CacheError, StageCache};
use crate::preprocess::models_dir;
use crate::preprocess::pose::stage::{self, PoseStage};
use crate::preprocess::pose::{PoseEstimator, PoseSettings, PoseTracker};
use crate::preprocess::softedge::{to_control_image, SoftEdge, SoftEdgeSettings};
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

const SOFTEDGE_STAGE: &str = "softedge";
const SOFTEDGE_SUFFIX: &str = ".png";

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

struct SoftEdgeStage {
    model: SoftEdge,
    cache: StageCache,
}

impl SoftEdgeStage {
    fn run(&self, index: u64, image: &RgbImage) -> anyhow::Result<()> {
        let map = self
            .model
            .detect(image, image.width(), image.height())
            .with_context(|| format!("soft edges of frame {index}"))?;
        let mut png = Vec::new();
        to_control_image(&map)
            .write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)
            .with_context(|| format!("encoding the soft-edge map of frame {index}"))?;
        self.cache.write(index, SOFTEDGE_SUFFIX, &png)?;
        Ok(())
    }
}

fn open_cache(
    dir: &Path,
    stage: &str,
    suffixes: &[&str],
    input: &str,
    settings: &str,
) -> anyhow::Result<StageCache> {
    StageCache::open(dir, stage, suffixes, input, settings).map_err(|e| match e {
        CacheError::Io { path, source } => CliError::OutputUnwritable {
            path,
            reason: source.to_string(),
        }
        .into(),
        other => anyhow::Error::from(other),
    })
}

pub fn run(args: PreprocessArgs) -> anyhow::Result<()> {
    let (want_pose, want_softedge) = match (args.pose, args.softedge) {
        (false, false) => (true, true),
        flags => flags,
    };
    let reader = VideoReader::open(&args.input)?;
    let info: VideoInfo = reader.info().clone();
    let fingerprint = fingerprint_file(&args.input)?;
    let models = models_dir();

    let mut pose = None;
    if want_pose {
        let settings = PoseSettings::default();
        let estimator = PoseEstimator::new(&models.join("mediapipe"), &settings)?;
        let key = stage::cache_settings(&models.join("mediapipe"), &settings)?;
        let cache = open_cache(
            &args.output,
            stage::STAGE,
            &[stage::MAP_SUFFIX, stage::JSON_SUFFIX],
            &fingerprint,
            &key,
        )?;
        let tracker = PoseTracker::new(Arc::new(estimator), info.fps.as_f64());
        pose = Some(PoseStage::new(tracker, Some(cache)));
    }
    let mut softedge = None;
    if want_softedge {
        let settings = SoftEdgeSettings::default();
        let model = SoftEdge::new(&models, &settings)?;
        let weights = models.join(crate::preprocess::softedge::softedge::HED_WEIGHTS);
        let key = format!("{settings:?}|hed={}", fingerprint_file(&weights)?);
        let cache = open_cache(
            &args.output,
            SOFTEDGE_STAGE,
            &[SOFTEDGE_SUFFIX],
            &fingerprint,
            &key,
        )?;
        softedge = Some(SoftEdgeStage { model, cache });
    }

    let first = info.start_frame;
    let frame_range = first..first + info.frame_count;
    let is_done = |index: u64, pose: &Option<PoseStage>, soft: &Option<SoftEdgeStage>| {
        let pose_done = pose.as_ref().is_none_or(|p| p.is_done(index));
        let soft_done = soft.as_ref().is_none_or(|s| s.cache.is_done(index));
        pose_done && soft_done
    };
    let already = frame_range
        .clone()
        .filter(|&i| is_done(i, &pose, &softedge))
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
        if is_done(index, &pose, &softedge) {
            cached += 1;
            progress.advance(Stage::Preprocess, done);
            continue;
        }
        let image = frame
            .into_rgb_image()
            .with_context(|| format!("frame {index} of {}", args.input.display()))?;
        if let Some(p) = pose.as_mut() {
            if !p.is_done(index) {
                p.frame(index, &image)?;
            }
        }
        if let Some(s) = &softedge {
            if !s.cache.is_done(index) {
                s.run(index, &image)?;
            }
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
    let stats = pose.as_ref().map(|p| p.tracker().stats());
    match &reporting {
        Reporting::Json(json) => json.emit(&DoneEvent {
            event: "done",
            output: &args.output,
            frames: done,
            computed,
            cached,
            elapsed: json.elapsed_secs(),
            frames_per_sec: (frames_per_sec * 100.0).round() / 100.0,
            pose_person_detections: stats.map(|s| s.person_detections),
            pose_palm_detections: stats.map(|s| s.palm_detections),
            pose_face_detections: stats.map(|s| s.face_detections),
        }),
        Reporting::Bars(bars) => bars.println(&format!(
            "{}: {done} frames ({computed} computed at {frames_per_sec:.1} frames/s, {cached} from an earlier run)",
            args.output.display()
        )),
    }
    Ok(())
}
