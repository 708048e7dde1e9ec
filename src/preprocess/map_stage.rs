//! What a map preprocessor is, for the registry ([`crate::preprocess::registry`]) and the
//! stages in each preprocessor's folder: its registry entry ([`MapPreprocessor`]), the
//! options every preprocessor is built from, its errors, and the cache folder it may keep its
//! maps in.

use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::cancel::StopFlag;
use crate::detail::DetailSettings;
use crate::pipeline::stages::Preprocessor;
use crate::preprocess::cache::{CacheError, StageCache};
use crate::preprocess::openpose::json::PoseJsonError;
use crate::preprocess::openpose::DrawParts;
use crate::preprocess::pose::{PoseError, PoseSettings};
use crate::preprocess::softedge::SoftEdgeError;
use crate::preset::{self, ControlKind, Preset};
use crate::video::Frame;

/// One map kind's preprocessor.
pub struct MapPreprocessor {
    pub kind: ControlKind,
    /// The preset section that configures it (`preprocess.pose`), naming it in listings.
    pub section: &'static str,
    /// Folder of its model files below the models directory (`""`: the directory itself).
    pub models_subdir: &'static str,
    /// The model files it reads for `options`, relative to `models_subdir`.
    pub model_files: fn(&PreprocessorOptions) -> Vec<&'static str>,
    /// Builds it, reading and filling `cache` when one is given.
    pub build: BuildPreprocessor,
}

/// How a registry entry builds its preprocessor.
pub type BuildPreprocessor = fn(
    &PreprocessorOptions,
    Option<&CacheTarget>,
) -> Result<Box<dyn Preprocessor>, PreprocessorError>;

impl MapPreprocessor {
    /// The folder of its model files in `models_dir`.
    pub fn models_folder(&self, models_dir: &Path) -> PathBuf {
        match self.models_subdir {
            "" => models_dir.to_path_buf(),
            sub => models_dir.join(sub),
        }
    }

    /// Where its model files are for `options`.
    pub fn model_paths(&self, options: &PreprocessorOptions) -> Vec<PathBuf> {
        let dir = self.models_folder(&options.models_dir);
        (self.model_files)(options)
            .into_iter()
            .map(|f| dir.join(f))
            .collect()
    }
}

/// A cache folder for the maps of one input: the `rotoscope preprocess` layout
/// (`pose_000123.png`, ...; one manifest per stage keyed by `input_fingerprint` and the
/// settings, see [`crate::preprocess::cache`]).
#[derive(Debug, Clone)]
pub struct CacheTarget {
    pub dir: PathBuf,
    pub input_fingerprint: String,
}

impl CacheTarget {
    /// Opens the cache of stage `stage` whose output for a frame is one file per suffix.
    pub fn open(
        &self,
        stage: &str,
        suffixes: &[&str],
        settings_key: &str,
    ) -> Result<StageCache, PreprocessorError> {
        StageCache::open(
            &self.dir,
            stage,
            suffixes,
            &self.input_fingerprint,
            settings_key,
        )
        .map_err(PreprocessorError::CacheOpen)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PreprocessorError {
    /// Every preprocessor that could not be set up, reported together.
    #[error("{}", join_lines(.0))]
    Setup(Vec<PreprocessorError>),
    #[error("openpose maps: {0}")]
    Pose(#[from] PoseError),
    #[error("softedge maps: {0}")]
    SoftEdge(#[from] SoftEdgeError),
    /// The cache folder could not be opened (the output is not writable, ...).
    #[error("{0}")]
    CacheOpen(CacheError),
    /// The cache key could not be made (a model file unreadable, ...).
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error("OpenPose JSON directory {}: {reason}", dir.display())]
    JsonDir { dir: PathBuf, reason: String },
    #[error("no OpenPose JSON file for frame {frame} in {}", dir.display())]
    JsonMissing { frame: u64, dir: PathBuf },
    #[error(transparent)]
    Json(#[from] PoseJsonError),
    #[error("frame {frame}: {what}: {source}")]
    Frame {
        frame: u64,
        what: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl PreprocessorError {
    /// The cache folder that could not be written, when that is (one of) the problem(s).
    pub fn unwritable_cache(&self) -> Option<(&Path, &io::Error)> {
        match self {
            PreprocessorError::CacheOpen(CacheError::Io { path, source }) => Some((path, source)),
            PreprocessorError::Setup(all) => all.iter().find_map(|e| e.unwritable_cache()),
            _ => None,
        }
    }
}

fn join_lines(errors: &[PreprocessorError]) -> String {
    errors
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// What the render's preprocessors are built from.
#[derive(Debug, Clone)]
pub struct PreprocessorOptions {
    /// `$ROTOSCOPE_MODELS` (MediaPipe models in `mediapipe/`, HED in `hed/`).
    pub models_dir: PathBuf,
    pub pose: preset::PoseSettings,
    pub softedge: preset::SoftedgeSettings,
    /// Frame rate of the clip (pose smoothing).
    pub fps: f64,
    /// Read poses from OpenPose JSON files in this directory instead of estimating them.
    pub pose_json: Option<PathBuf>,
    /// Input frames that need stateless maps; `None` = all.
    pub needed: Option<Vec<Range<u64>>>,
    pub stop: StopFlag,
    /// Parts face and hand detailing reads, estimated even where `pose` does not draw them.
    pub detail: DetailKeypoints,
}

/// The pose parts face and hand detailing (the preset's `detail:`) reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DetailKeypoints {
    pub face: bool,
    pub hands: bool,
}

impl DetailKeypoints {
    pub fn for_settings(detail: &DetailSettings) -> Self {
        DetailKeypoints {
            face: detail.face.enabled,
            hands: detail.hands.enabled,
        }
    }
}

impl PreprocessorOptions {
    /// The preset schema's default settings, for every frame of a clip at `fps`, estimating
    /// poses, no detailing.
    pub fn defaults(models_dir: PathBuf, fps: f64) -> Self {
        PreprocessorOptions {
            models_dir,
            pose: preset::PoseSettings::default(),
            softedge: preset::SoftedgeSettings::default(),
            fps,
            pose_json: None,
            needed: None,
            stop: StopFlag::new(),
            detail: DetailKeypoints::default(),
        }
    }

    /// The options `preset` gives, for every frame of a clip at `fps`, estimating poses.
    pub fn for_preset(preset: &Preset, models_dir: PathBuf, fps: f64) -> Self {
        PreprocessorOptions {
            pose: preset.preprocess.pose.clone(),
            softedge: preset.preprocess.softedge.clone(),
            detail: DetailKeypoints::for_settings(&preset.detail),
            ..Self::defaults(models_dir, fps)
        }
    }

    /// What the pose estimator must find: the parts the map draws, plus those detailing
    /// reads.
    pub fn estimated_pose(&self) -> PoseSettings {
        PoseSettings {
            body: self.pose.body,
            hands: self.pose.hands || self.detail.hands,
            face: self.pose.face || self.detail.face,
            ..PoseSettings::default()
        }
    }

    /// What the openpose map shows (`preprocess.pose`).
    pub fn drawn_parts(&self) -> DrawParts {
        DrawParts {
            body: self.pose.body,
            hands: self.pose.hands,
            face: self.pose.face,
        }
    }

    /// Whether a stateless map of input frame `index` is needed.
    pub fn needs(&self, index: u64) -> bool {
        self.needed
            .as_ref()
            .is_none_or(|ranges| ranges.iter().any(|r| r.contains(&index)))
    }
}

/// The source frame as an image, for the preprocessors that read one.
pub fn source_image(frame: &Frame) -> Result<image::RgbImage, PreprocessorError> {
    frame
        .clone()
        .into_rgb_image()
        .ok_or_else(|| PreprocessorError::Frame {
            frame: frame.index,
            what: "frame buffer",
            source: format!(
                "{}x{} RGB needs {} bytes, got {}",
                frame.width,
                frame.height,
                frame.width as usize * frame.height as usize * 3,
                frame.data.len()
            )
            .into(),
        })
}

/// Options for unit tests: `pose` and `detail` as given, the rest the defaults.
#[cfg(test)]
pub(crate) fn test_options(
    pose: preset::PoseSettings,
    detail: DetailKeypoints,
) -> PreprocessorOptions {
    PreprocessorOptions {
        pose,
        detail,
        ..PreprocessorOptions::defaults(PathBuf::from("models"), 24.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preprocess::map_stage::test_options as options;

    #[test]
    fn detailing_widens_what_is_estimated_but_not_what_is_drawn() {
        let body_only = preset::PoseSettings {
            body: true,
            hands: false,
            face: false,
        };
        let plain = options(body_only.clone(), DetailKeypoints::default());
        let estimated = plain.estimated_pose();
        assert!(estimated.body && !estimated.hands && !estimated.face);

        let mut detail = DetailSettings::default();
        detail.face.enabled = true;
        let keypoints = DetailKeypoints::for_settings(&detail);
        assert_eq!(
            keypoints,
            DetailKeypoints {
                face: true,
                hands: false
            }
        );
        let with_face = options(body_only.clone(), keypoints);
        let estimated = with_face.estimated_pose();
        assert!(estimated.body && estimated.face && !estimated.hands);
        assert_eq!(
            with_face.drawn_parts(),
            DrawParts {
                body: true,
                hands: false,
                face: false
            }
        );
        detail.hands.enabled = true;
        let both = options(body_only, DetailKeypoints::for_settings(&detail));
        let estimated = both.estimated_pose();
        assert!(estimated.face && estimated.hands);
    }

    #[test]
    fn an_unwritable_cache_is_found_among_setup_errors() {
        let io = || io::Error::new(io::ErrorKind::PermissionDenied, "denied");
        let err = PreprocessorError::Setup(vec![
            PreprocessorError::JsonMissing {
                frame: 1,
                dir: PathBuf::from("j"),
            },
            PreprocessorError::CacheOpen(CacheError::Io {
                path: PathBuf::from("out"),
                source: io(),
            }),
        ]);
        let (path, _) = err.unwritable_cache().unwrap();
        assert_eq!(path, Path::new("out"));
        let key = PreprocessorError::Cache(CacheError::Io {
            path: PathBuf::from("models/x"),
            source: io(),
        });
        assert!(
            key.unwritable_cache().is_none(),
            "reading a model is not the output"
        );
    }
}
