//! The one registry of map preprocessors, keyed by [`ControlKind`]: each entry says which
//! map it makes, which packaged model files it reads, and how it is built — with or without
//! an on-disk cache. `render`, `rotoscope preprocess`, the offline map cache and
//! `rotoscope models` all build their preprocessors from here.
//!
//! * openpose: MediaPipe pose tracking ([`crate::preprocess::pose::stage`]), or OpenPose
//!   JSON files instead of estimating ([`crate::preprocess::openpose::json_stage`]);
//! * softedge: HED ([`crate::preprocess::softedge::stage`]);
//! * temporalnet has no entry: its map is the previous rendered frame.
//!
//! Adding a map kind (e.g. depth) is its folder with a `MapPreprocessor` constant, one line
//! in [`REGISTRY`] and the `ControlKind` variant in the preset schema.
//!
//! Face and hand detailing reads the pose keypoints: whatever the openpose map draws
//! (`preprocess.pose`), the estimator also finds the parts [`DetailKeypoints`] asks for, and
//! OpenPose JSON keeps every part it holds; the map is drawn with the preset's parts only.
//!
//! Pose tracking carries state from frame to frame, so it sees every frame of the render in
//! order (a resumed render must track exactly like an uninterrupted one); the stateless
//! soft-edge map is skipped for frames that only finished batches need. Every preprocessor
//! built here checks the render's stop flag, so Ctrl-C also stops a render that is still
//! preprocessing.

use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::cancel::StopFlag;
use crate::detail::DetailSettings;
use crate::pipeline::stages::{PreparedFrame, Preprocessor, StageError};
use crate::preprocess::cache::{CacheError, StageCache};
use crate::preprocess::openpose::json::PoseJsonError;
use crate::preprocess::openpose::DrawParts;
use crate::preprocess::pose::{PoseError, PoseSettings};
use crate::preprocess::softedge::SoftEdgeError;
use crate::preprocess::{pose, softedge};
use crate::preset::{self, ControlKind, Preset};
use crate::video::Frame;

/// Every map preprocessor. One line per map kind.
pub const REGISTRY: &[MapPreprocessor] = &[pose::stage::OPENPOSE, softedge::stage::SOFTEDGE];

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
    pub build: fn(
        &PreprocessorOptions,
        Option<&CacheTarget>,
    ) -> Result<Box<dyn Preprocessor>, PreprocessorError>,
}

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

/// The registry entry making `kind`'s map; `None` for maps no preprocessor makes
/// (temporalnet).
pub fn lookup(kind: ControlKind) -> Option<&'static MapPreprocessor> {
    REGISTRY.iter().find(|p| p.kind == kind)
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

/// The maps a preset's ControlNets and detailer read: the ControlNets' kinds, and openpose
/// when face or hand detailing is on (it finds the regions in the pose keypoints).
pub fn maps_for(mut controlnet_maps: Vec<ControlKind>, preset: &Preset) -> Vec<ControlKind> {
    if preset.detail.any_enabled() && !controlnet_maps.contains(&ControlKind::Openpose) {
        controlnet_maps.push(ControlKind::Openpose);
    }
    controlnet_maps
}

/// The preprocessors making the maps `kinds` asks for (kinds without a preprocessor, such as
/// temporalnet, need none), without a cache. Setup problems of all of them (missing model
/// files, ...) are reported together.
pub fn build_preprocessors(
    kinds: &[ControlKind],
    options: &PreprocessorOptions,
) -> Result<Vec<Box<dyn Preprocessor>>, PreprocessorError> {
    build(kinds, options, None)
}

/// As [`build_preprocessors`], reading and filling the cache in `cache`.
pub fn build_cached_preprocessors(
    kinds: &[ControlKind],
    options: &PreprocessorOptions,
    cache: &CacheTarget,
) -> Result<Vec<Box<dyn Preprocessor>>, PreprocessorError> {
    build(kinds, options, Some(cache))
}

fn build(
    kinds: &[ControlKind],
    options: &PreprocessorOptions,
    cache: Option<&CacheTarget>,
) -> Result<Vec<Box<dyn Preprocessor>>, PreprocessorError> {
    let mut built: Vec<Box<dyn Preprocessor>> = Vec::new();
    let mut errors = Vec::new();
    for entry in kinds.iter().filter_map(|&kind| lookup(kind)) {
        match (entry.build)(options, cache) {
            Ok(p) => built.push(Box::new(Interruptible {
                inner: p,
                stop: options.stop.clone(),
            })),
            Err(e) => errors.push(e),
        }
    }
    match errors.len() {
        0 => Ok(built),
        1 => Err(errors.remove(0)),
        _ => Err(PreprocessorError::Setup(errors)),
    }
}

/// Checks the stop flag before handing the frame on.
struct Interruptible {
    inner: Box<dyn Preprocessor>,
    stop: StopFlag,
}

impl Preprocessor for Interruptible {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn process(&mut self, frame: &mut PreparedFrame) -> Result<(), StageError> {
        self.stop.check()?;
        self.inner.process(frame)
    }

    fn is_done(&self, index: u64) -> bool {
        self.inner.is_done(index)
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        self.inner.counters()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn options(pose: preset::PoseSettings, detail: DetailKeypoints) -> PreprocessorOptions {
        PreprocessorOptions {
            pose,
            detail,
            ..PreprocessorOptions::defaults(PathBuf::from("models"), 24.0)
        }
    }

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
    fn every_map_kind_but_temporalnet_has_one_preprocessor() {
        for kind in [ControlKind::Openpose, ControlKind::Softedge] {
            let entries = REGISTRY.iter().filter(|p| p.kind == kind).count();
            assert_eq!(entries, 1, "{kind}");
        }
        assert!(lookup(ControlKind::Temporalnet).is_none());
        let none = build_preprocessors(
            &[ControlKind::Temporalnet],
            &options(preset::PoseSettings::default(), DetailKeypoints::default()),
        )
        .unwrap();
        assert!(none.is_empty());
    }

    #[test]
    fn model_files_follow_what_is_estimated() {
        let body_only = preset::PoseSettings {
            body: true,
            hands: false,
            face: false,
        };
        let pose = lookup(ControlKind::Openpose).unwrap();
        let plain = pose.model_paths(&options(body_only.clone(), DetailKeypoints::default()));
        let hands = pose.model_paths(&options(
            body_only,
            DetailKeypoints {
                face: false,
                hands: true,
            },
        ));
        assert!(plain.iter().all(|p| p.starts_with("models/mediapipe")));
        assert!(hands.len() > plain.len(), "{plain:?} vs {hands:?}");
        let soft = lookup(ControlKind::Softedge).unwrap().model_paths(&options(
            preset::PoseSettings::default(),
            DetailKeypoints::default(),
        ));
        assert_eq!(soft, vec![PathBuf::from("models/hed/hed.safetensors")]);
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

    #[test]
    fn a_stop_request_stops_preprocessing() {
        struct Count(u32);
        impl Preprocessor for Count {
            fn name(&self) -> &str {
                "count"
            }
            fn process(&mut self, _: &mut PreparedFrame) -> Result<(), StageError> {
                self.0 += 1;
                Ok(())
            }
        }
        let stop = StopFlag::new();
        let mut wrapped = Interruptible {
            inner: Box::new(Count(0)),
            stop: stop.clone(),
        };
        let mut frame = PreparedFrame::new(Frame::new(0, 1, 1, vec![0; 3]).unwrap());
        wrapped.process(&mut frame).unwrap();
        stop.request();
        let err = wrapped.process(&mut frame).unwrap_err();
        assert!(crate::cancel::is_interrupted(err.as_ref()));
    }
}
