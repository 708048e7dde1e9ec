//! Pose and soft-edge maps kept on disk for a render whose SD models are missing: offline
//! (empty Hugging Face cache), the maps are still made with the packaged preprocessor weights
//! into `<work dir>/preprocess/`, in the `rotoscope preprocess` layout and cache
//! (`pose_000123.png` + `pose_000123_keypoints.json`, `softedge_000123.png`, one manifest per
//! stage keyed by the input's fingerprint and the settings; see [`crate::preprocess::cache`]).
//! A later run of the same render, offline or with the models, takes the maps from there
//! instead of computing them again; the folder goes with the work directory once the output
//! is complete.

use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use image::RgbImage;

use crate::cancel::StopFlag;
use crate::pipeline::progress::{ProgressReporter, Stage};
use crate::pipeline::stages::{ControlImage, PreparedFrame, Preprocessor, StageError};
use crate::preprocess::cache::{fingerprint_file, StageCache};
use crate::preprocess::pose::stage::{self, PoseStage};
use crate::preprocess::pose::{PoseEstimator, PoseSettings, PoseTracker};
use crate::preprocess::softedge::softedge::HED_WEIGHTS;
use crate::preprocess::softedge::{to_control_image, SoftEdge, SoftEdgeSettings};
use crate::preprocess::stages::{build_preprocessors, PreprocessorOptions, MEDIAPIPE_DIR};
use crate::preset::ControlKind;
use crate::video::{Frame, VideoReader};

/// The cache's folder inside a render's work directory.
pub const PREPROCESS_CACHE_DIR: &str = "preprocess";

const SOFTEDGE_STAGE: &str = "softedge";
const SOFTEDGE_SUFFIX: &str = ".png";

/// Preprocessors for `maps` that read and fill the cache in `dir`: pose tracking
/// ([`PoseStage`] with its cache) and soft edges. Poses from `options.pose_json` are read
/// from there as usual. Empty when no map needs a model.
pub fn cached_preprocessors(
    maps: &[ControlKind],
    options: &PreprocessorOptions,
    input_fingerprint: &str,
    dir: &Path,
) -> anyhow::Result<Vec<Box<dyn Preprocessor>>> {
    let mut built: Vec<Box<dyn Preprocessor>> = Vec::new();
    for kind in maps {
        let made: Box<dyn Preprocessor> = match kind {
            ControlKind::Openpose if options.pose_json.is_some() => {
                built.extend(build_preprocessors(&[ControlKind::Openpose], options)?);
                continue;
            }
            ControlKind::Openpose => {
                let settings = PoseSettings {
                    body: options.pose.body,
                    hands: options.pose.hands,
                    face: options.pose.face,
                    ..PoseSettings::default()
                };
                let mediapipe = options.models_dir.join(MEDIAPIPE_DIR);
                let estimator = PoseEstimator::new(&mediapipe, &settings)?;
                let key = stage::cache_settings(&mediapipe, &settings)?;
                let cache = StageCache::open(
                    dir,
                    stage::STAGE,
                    &[stage::MAP_SUFFIX, stage::JSON_SUFFIX],
                    input_fingerprint,
                    &key,
                )?;
                let tracker = PoseTracker::new(Arc::new(estimator), options.fps);
                Box::new(PoseStage::new(tracker, Some(cache)))
            }
            ControlKind::Softedge => {
                let settings = SoftEdgeSettings {
                    safe: options.softedge.safe,
                    ..SoftEdgeSettings::default()
                };
                let model = SoftEdge::new(&options.models_dir, &settings)?;
                let weights = options.models_dir.join(HED_WEIGHTS);
                let key = format!("{settings:?}|hed={}", fingerprint_file(&weights)?);
                let cache = StageCache::open(
                    dir,
                    SOFTEDGE_STAGE,
                    &[SOFTEDGE_SUFFIX],
                    input_fingerprint,
                    &key,
                )?;
                Box::new(CachedSoftEdge {
                    model,
                    cache,
                    needed: options.needed.clone(),
                })
            }
            ControlKind::Temporalnet => continue,
        };
        built.push(Box::new(Stoppable {
            inner: made,
            stop: options.stop.clone(),
        }));
    }
    Ok(built)
}

/// Run the cached `preprocessors` over every frame of `reader` (filling the cache), without
/// rendering. Returns the number of frames; stops between frames when `stop` is set (the
/// error is [`crate::cancel::Interrupted`]).
pub fn preprocess_into_cache(
    reader: VideoReader,
    mut preprocessors: Vec<Box<dyn Preprocessor>>,
    progress: &dyn ProgressReporter,
    stop: &StopFlag,
) -> anyhow::Result<u64> {
    if preprocessors.is_empty() {
        return Ok(0);
    }
    progress.begin(Stage::Preprocess, reader.info().frame_count);
    let mut done = 0;
    for frame in reader {
        stop.check()?;
        let mut prepared = PreparedFrame::new(frame?);
        for p in &mut preprocessors {
            let index = prepared.source.index;
            p.process(&mut prepared)
                .map_err(|e| anyhow::anyhow!(e))
                .with_context(|| format!("{} of frame {index}", p.name()))?;
        }
        done += 1;
        progress.advance(Stage::Preprocess, done);
    }
    progress.finish(Stage::Preprocess);
    Ok(done)
}

/// HED soft edges read from the cache when there, else computed and written to it.
struct CachedSoftEdge {
    model: SoftEdge,
    cache: StageCache,
    /// Input frames that need the map; `None` = all.
    needed: Option<Vec<std::ops::Range<u64>>>,
}

impl Preprocessor for CachedSoftEdge {
    fn name(&self) -> &str {
        SOFTEDGE_STAGE
    }

    fn process(&mut self, frame: &mut PreparedFrame) -> Result<(), StageError> {
        let index = frame.source.index;
        let needed = self
            .needed
            .as_ref()
            .is_none_or(|ranges| ranges.iter().any(|r| r.contains(&index)));
        if !needed {
            return Ok(());
        }
        let path = self.cache.path(index, SOFTEDGE_SUFFIX);
        let map = if self.cache.is_done(index) {
            image::open(&path)
                .with_context(|| format!("reading the kept soft-edge map {}", path.display()))?
                .to_rgb8()
        } else {
            let src = &frame.source;
            let image = RgbImage::from_raw(src.width, src.height, src.data.clone())
                .with_context(|| format!("frame {index}: buffer of the wrong size"))?;
            let map = to_control_image(
                &self
                    .model
                    .detect(&image, image.width(), image.height())
                    .with_context(|| format!("soft edges of frame {index}"))?,
            );
            let mut png = Vec::new();
            map.write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)
                .with_context(|| format!("encoding the soft-edge map of frame {index}"))?;
            self.cache.write(index, SOFTEDGE_SUFFIX, &png)?;
            map
        };
        frame.controls.push(ControlImage {
            kind: ControlKind::Softedge,
            image: Frame::from_rgb_image(index, map),
        });
        Ok(())
    }
}

/// Checks the stop flag (Ctrl-C) before each frame.
struct Stoppable {
    inner: Box<dyn Preprocessor>,
    stop: StopFlag,
}

impl Preprocessor for Stoppable {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn process(&mut self, frame: &mut PreparedFrame) -> Result<(), StageError> {
        self.stop.check()?;
        self.inner.process(frame)
    }
}
