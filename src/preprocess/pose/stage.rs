//! Pose as a pipeline stage: keypoints and the openpose map of each frame in order, through
//! the on-disk cache when one is given. Used by `rotoscope preprocess` and, as a
//! [`Preprocessor`], by the render pipeline (control image `openpose` at the source size, and
//! the [`PoseFrame`] as an annotation for the face/hand detailers).

use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::RgbImage;

use super::detector::DetectorKind;
use super::{body, face, hands, PoseError, PoseSettings, PoseTracker};
use crate::pipeline::stages::{ControlImage, PreparedFrame, Preprocessor, StageError};
use crate::preprocess::cache::{fingerprint_file, CacheError, StageCache};
use crate::preprocess::openpose::json::{parse_json, to_json_string, PoseJsonError};
use crate::preprocess::openpose::{draw_pose_map, DrawParts, PoseFrame};
use crate::preset::ControlKind;
use crate::video::Frame;

/// Cache stage name: files `pose_000123.png` and `pose_000123_keypoints.json`.
pub const STAGE: &str = "pose";
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
}
