//! Pose as a pipeline stage: keypoints and the openpose map of each frame in order, through
//! the on-disk cache when one is given. [`OPENPOSE`] is its entry in the preprocessor
//! registry ([`crate::preprocess::registry`]): as a [`Preprocessor`] it adds the control image
//! `openpose` at the source size, and the [`PoseFrame`] as an annotation for the face/hand
//! detailers.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use image::RgbImage;

use super::detector::DetectorKind;
use super::{body, face, hands, PoseError, PoseEstimator, PoseSettings, PoseTracker};
use crate::pipeline::stages::{ControlImage, PreparedFrame, Preprocessor, StageError};
use crate::preprocess::cache::{fingerprint_file, CacheError, StageCache};
use crate::preprocess::map_stage::{
    CacheTarget, MapPreprocessor, PreprocessorError, PreprocessorOptions,
};
use crate::preprocess::openpose::json::{parse_json, to_json_string, PoseJsonError};
use crate::preprocess::openpose::json_stage::PoseJsonPreprocessor;
use crate::preprocess::openpose::{draw_pose_map, DrawParts, PoseFrame};
use crate::preset::ControlKind;
use crate::video::Frame;

/// Cache stage name: files `pose_000123.png` and `pose_000123_keypoints.json`.
pub const STAGE: &str = "pose";
/// Where the MediaPipe models sit below the models directory.
pub const MEDIAPIPE_DIR: &str = "mediapipe";

/// The openpose map's entry in the preprocessor registry.
pub const OPENPOSE: MapPreprocessor = MapPreprocessor {
    kind: ControlKind::Openpose,
    section: "preprocess.pose",
    models_subdir: MEDIAPIPE_DIR,
    model_files,
    build,
};

/// The MediaPipe models the estimator runs for `options` (the drawn parts and those
/// detailing reads).
fn model_files(options: &PreprocessorOptions) -> Vec<&'static str> {
    let settings = options.estimated_pose();
    let mut files = vec![DetectorKind::Person.file_name(), body::MODEL_FILE];
    if settings.hands {
        files.extend([DetectorKind::Palm.file_name(), hands::MODEL_FILE]);
    }
    if settings.face {
        files.extend([DetectorKind::Face.file_name(), face::MODEL_FILE]);
    }
    files
}

/// Poses from `options.pose_json` when given (never cached: they are files already), else
/// MediaPipe tracking, through `cache` when given. When detailing needs parts the map does
/// not show, they are estimated (and kept in the cache's keypoints) and the map is drawn
/// again without them.
fn build(
    options: &PreprocessorOptions,
    cache: Option<&CacheTarget>,
) -> Result<Box<dyn Preprocessor>, PreprocessorError> {
    if let Some(dir) = &options.pose_json {
        return Ok(Box::new(PoseJsonPreprocessor::new(
            dir,
            options.drawn_parts(),
        )?));
    }
    let settings = options.estimated_pose();
    let mediapipe = options.models_dir.join(MEDIAPIPE_DIR);
    let estimator = PoseEstimator::new(&mediapipe, &settings)?;
    let cache = match cache {
        Some(target) => Some(target.open(
            STAGE,
            &[MAP_SUFFIX, JSON_SUFFIX],
            &cache_settings(&mediapipe, &settings)?,
        )?),
        None => None,
    };
    let tracker = PoseTracker::new(Arc::new(estimator), options.fps);
    let stage = PoseStage::new(tracker, cache);
    let parts = options.drawn_parts();
    Ok(if parts == draw_parts(&settings) {
        Box::new(stage)
    } else {
        Box::new(RedrawnPoseMap {
            inner: Box::new(stage),
            parts,
        })
    })
}
pub const MAP_SUFFIX: &str = ".png";
pub const JSON_SUFFIX: &str = "_keypoints.json";

#[derive(Debug, thiserror::Error)]
pub enum PoseStageError {
    #[error("pose estimation of frame {frame}: {source}")]
    Estimate { frame: u64, source: PoseError },
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error(transparent)]
    Json(#[from] PoseJsonError),
    #[error("{}: {source}", path.display())]
    Image {
        path: PathBuf,
        source: image::ImageError,
    },
    #[error("frame {frame}: {width}×{height} RGB data has the wrong length")]
    BadFrame { frame: u64, width: u32, height: u32 },
}

/// Which parts of the settings are drawn.
pub fn draw_parts(settings: &PoseSettings) -> DrawParts {
    DrawParts {
        body: settings.body,
        hands: settings.hands,
        face: settings.face,
    }
}

/// Everything that decides the pose output besides the input: settings, drawn parts and the
/// identity of every model file (fingerprinted like inputs), as cache key text.
pub fn cache_settings(models_dir: &Path, settings: &PoseSettings) -> Result<String, CacheError> {
    let mut key = format!("{}|{:?}", settings.cache_key(), draw_parts(settings));
    let files = [
        DetectorKind::Person.file_name(),
        body::MODEL_FILE,
        DetectorKind::Palm.file_name(),
        hands::MODEL_FILE,
        DetectorKind::Face.file_name(),
        face::MODEL_FILE,
    ];
    for file in files {
        let path = models_dir.join(file);
        let id = if path.is_file() {
            fingerprint_file(&path)?
        } else {
            "absent".to_string()
        };
        key.push_str(&format!("|{file}={id}"));
    }
    Ok(key)
}

/// One frame's result.
pub struct PoseOutput {
    pub keypoints: PoseFrame,
    pub map: RgbImage,
    /// Read from the cache rather than estimated.
    pub cached: bool,
}

pub struct PoseStage {
    tracker: PoseTracker,
    parts: DrawParts,
    cache: Option<StageCache>,
    /// The frame index the tracker expects next (a gap resets tracking).
    expected: Option<u64>,
}

impl PoseStage {
    pub fn new(tracker: PoseTracker, cache: Option<StageCache>) -> Self {
        let parts = draw_parts(tracker.estimator().settings());
        PoseStage {
            tracker,
            parts,
            cache,
            expected: None,
        }
    }

    pub fn tracker(&self) -> &PoseTracker {
        &self.tracker
    }

    /// Whether frame `index` is already in the cache.
    pub fn is_done(&self, index: u64) -> bool {
        self.cache.as_ref().is_some_and(|c| c.is_done(index))
    }

    /// Keypoints and map of frame `index` (frames must come in increasing order): read back
    /// from the cache when that frame is done, else estimated, drawn and written to it.
    pub fn frame(&mut self, index: u64, image: &RgbImage) -> Result<PoseOutput, PoseStageError> {
        if let Some(cache) = &self.cache {
            if cache.is_done(index) {
                return load_cached(cache, index).map(|(keypoints, map)| PoseOutput {
                    keypoints,
                    map,
                    cached: true,
                });
            }
        }
        if self.expected != Some(index) {
            // Frames were skipped (cached): the previous ROIs no longer apply.
            self.tracker.reset();
        }
        self.expected = Some(index + 1);
        let keypoints = self
            .tracker
            .next(image)
            .map_err(|source| PoseStageError::Estimate {
                frame: index,
                source,
            })?;
        let map = draw_pose_map(&keypoints, image.width(), image.height(), self.parts);
        if let Some(cache) = &self.cache {
            let mut png = Vec::new();
            map.write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)
                .map_err(|source| PoseStageError::Image {
                    path: cache.path(index, MAP_SUFFIX),
                    source,
                })?;
            cache.write(index, MAP_SUFFIX, &png)?;
            // The JSON last: a frame is done only when both files are there.
            cache.write(index, JSON_SUFFIX, to_json_string(&keypoints).as_bytes())?;
        }
        Ok(PoseOutput {
            keypoints,
            map,
            cached: false,
        })
    }
}

fn load_cached(cache: &StageCache, index: u64) -> Result<(PoseFrame, RgbImage), PoseStageError> {
    let json_path = cache.path(index, JSON_SUFFIX);
    let text = std::fs::read_to_string(&json_path).map_err(|source| PoseJsonError::Io {
        path: json_path.clone(),
        source,
    })?;
    let mut frames = parse_json(&text, None, &json_path.display().to_string())?;
    let keypoints = frames.pop().unwrap_or_else(|| PoseFrame::empty(0, 0));
    let map_path = cache.path(index, MAP_SUFFIX);
    let map = image::open(&map_path)
        .map_err(|source| PoseStageError::Image {
            path: map_path,
            source,
        })?
        .to_rgb8();
    Ok((keypoints, map))
}

impl Preprocessor for PoseStage {
    fn name(&self) -> &str {
        STAGE
    }

    fn process(&mut self, frame: &mut PreparedFrame) -> Result<(), StageError> {
        let src = &frame.source;
        let image = RgbImage::from_raw(src.width, src.height, src.data.clone()).ok_or(
            PoseStageError::BadFrame {
                frame: src.index,
                width: src.width,
                height: src.height,
            },
        )?;
        let out = self.frame(src.index, &image)?;
        frame.controls.push(ControlImage {
            kind: ControlKind::Openpose,
            image: Frame::from_rgb_image(src.index, out.map),
        });
        frame.annotations.insert(out.keypoints);
        Ok(())
    }

    fn is_done(&self, index: u64) -> bool {
        PoseStage::is_done(self, index)
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        let s = self.tracker.stats();
        vec![
            ("pose_person_detections", s.person_detections),
            ("pose_palm_detections", s.palm_detections),
            ("pose_face_detections", s.face_detections),
        ]
    }
}

/// Replaces the openpose map of a pose preprocessor that estimated more parts than the map
/// should show by one drawn from its keypoints with `parts` only (the keypoints stay whole).
struct RedrawnPoseMap {
    inner: Box<dyn Preprocessor>,
    parts: DrawParts,
}

impl Preprocessor for RedrawnPoseMap {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn process(&mut self, frame: &mut PreparedFrame) -> Result<(), StageError> {
        self.inner.process(frame)?;
        let (index, w, h) = (frame.source.index, frame.source.width, frame.source.height);
        let Some(pose) = frame.annotations.get::<PoseFrame>() else {
            return Ok(());
        };
        let map = Frame::from_rgb_image(index, draw_pose_map(pose, w, h, self.parts));
        match frame
            .controls
            .iter_mut()
            .find(|c| c.kind == ControlKind::Openpose)
        {
            Some(control) => control.image = map,
            None => frame.controls.push(ControlImage {
                kind: ControlKind::Openpose,
                image: map,
            }),
        }
        Ok(())
    }
    fn is_done(&self, index: u64) -> bool {
        self.inner.is_done(index)
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        self.inner.counters()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preprocess::openpose::test_poses::full_person;

    #[test]
    fn the_map_is_redrawn_with_the_preset_parts_and_the_keypoints_stay_whole() {
        /// Stands in for the pose stage: keypoints of every part, map of every part.
        struct Everything;
        impl Preprocessor for Everything {
            fn name(&self) -> &str {
                "pose"
            }
            fn process(&mut self, frame: &mut PreparedFrame) -> Result<(), StageError> {
                let pose = full_person();
                let map = draw_pose_map(&pose, 64, 48, DrawParts::default());
                frame.controls.push(ControlImage {
                    kind: ControlKind::Openpose,
                    image: Frame::from_rgb_image(frame.source.index, map),
                });
                frame.annotations.insert(pose);
                Ok(())
            }
        }
        let parts = DrawParts {
            body: true,
            hands: false,
            face: false,
        };
        let mut redrawn = RedrawnPoseMap {
            inner: Box::new(Everything),
            parts,
        };
        let mut frame = PreparedFrame::new(Frame::new(3, 64, 48, vec![0; 64 * 48 * 3]).unwrap());
        redrawn.process(&mut frame).unwrap();
        assert_eq!(frame.controls.len(), 1);
        let expected = draw_pose_map(&full_person(), 64, 48, parts);
        let map = frame.control(ControlKind::Openpose).unwrap();
        assert_eq!(map.data, expected.into_raw());
        let all = draw_pose_map(&full_person(), 64, 48, DrawParts::default());
        assert_ne!(map.data, all.into_raw(), "face and hand are not drawn");
        let kept = frame.annotations.get::<PoseFrame>().unwrap();
        assert!(kept.people[0].face.is_some() && kept.people[0].right_hand.is_some());
    }
}
