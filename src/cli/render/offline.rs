//! Preprocessing without a renderer: when a render's SD models are missing (offline, empty
//! Hugging Face cache), the pose and soft-edge maps it needs are still made with the packaged
//! preprocessor weights and kept in a cache directory in the `rotoscope preprocess` layout
//! (`pose_000123.png` + `pose_000123_keypoints.json`, `softedge_000123.png`, one manifest per
//! stage keyed by the input's fingerprint and the settings; see
//! [`crate::preprocess::cache`]). A rerun skips the frames already there.

use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;

use crate::preprocess::cache::{fingerprint_file, StageCache};
use crate::preprocess::pose::stage::{self, PoseStage};
use crate::preprocess::pose::{PoseEstimator, PoseSettings, PoseTracker};
use crate::preprocess::softedge::softedge::HED_WEIGHTS;
use crate::preprocess::softedge::{to_control_image, SoftEdge, SoftEdgeSettings};
use crate::preset::ControlKind;
use crate::render::progress::{ProgressReporter, Stage};
use crate::render::stages::preprocessors::{PreprocessorOptions, MEDIAPIPE_DIR};
use crate::video::VideoReader;

/// The cache's folder inside a render's work directory.
pub const PREPROCESS_CACHE_DIR: &str = "preprocess";

const SOFTEDGE_STAGE: &str = "softedge";
const SOFTEDGE_SUFFIX: &str = ".png";

/// Make the `maps` of every frame `reader` yields into `dir` (poses are not estimated when
/// `options.pose_json` supplies them). Returns the number of frames whose maps are in the
/// cache; nothing is created when no map needs a model. Stops between frames when
/// `options.stop` is set (the error is [`crate::render::resume::Interrupted`]).
pub fn preprocess_into_cache(
    reader: VideoReader,
    maps: &[ControlKind],
    options: &PreprocessorOptions,
    input_fingerprint: &str,
    dir: &Path,
    progress: &dyn ProgressReporter,
) -> anyhow::Result<u64> {
    let want_pose = maps.contains(&ControlKind::Openpose) && options.pose_json.is_none();
    let want_softedge = maps.contains(&ControlKind::Softedge);
    if !want_pose && !want_softedge {
        return Ok(0);
    }
    let mut pose = None;
    if want_pose {
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
        pose = Some(PoseStage::new(tracker, Some(cache)));
    }
    let mut softedge = None;
    if want_softedge {
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
        softedge = Some((model, cache));
    }

    progress.begin(Stage::Preprocess, reader.info().frame_count);
    let mut done = 0;
    for frame in reader {
        options.stop.check()?;
        let frame = frame?;
        let index = frame.index;
        let image = frame
            .into_rgb_image()
            .with_context(|| format!("frame {index}"))?;
        if let Some(pose) = pose.as_mut() {
            pose.frame(index, &image)?;
        }
        if let Some((model, cache)) = &softedge {
            if !cache.is_done(index) {
                let map = model
                    .detect(&image, image.width(), image.height())
                    .with_context(|| format!("soft edges of frame {index}"))?;
                let mut png = Vec::new();
                to_control_image(&map)
                    .write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)
                    .with_context(|| format!("encoding the soft-edge map of frame {index}"))?;
                cache.write(index, SOFTEDGE_SUFFIX, &png)?;
            }
        }
        done += 1;
        progress.advance(Stage::Preprocess, done);
    }
    progress.finish(Stage::Preprocess);
    Ok(done)
}
