//! The preprocessors the render pipeline runs, as thin [`Preprocessor`] wrappers around the
//! pose and soft-edge modules: each adds its control image (at the source frame's size) to
//! the frame.
//!
//! * openpose: [`PoseStage`] (MediaPipe models, tracked from frame to frame), or
//!   [`PoseJsonPreprocessor`] reading OpenPose JSON files (`*_keypoints.json`, e.g. from
//!   `rotoscope preprocess` or DWPose/OpenPose) instead of estimating;
//! * softedge: [`SoftEdgePreprocessor`] (HED).
//!
//! Face and hand detailing reads the pose keypoints: whatever the openpose map draws
//! (`preprocess.pose`), the estimator also finds the parts [`DetailKeypoints`] asks for, and
//! OpenPose JSON keeps every part it holds; the map is drawn with the preset's parts only.
//!
//! Pose tracking carries state from frame to frame, so it sees every frame of the render in
//! order (a resumed render must track exactly like an uninterrupted one); the stateless
//! soft-edge map is skipped for frames that only finished batches need. Every wrapper
//! checks the render's stop flag, so Ctrl-C also stops a render that is still preprocessing.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use image::RgbImage;

use crate::cancel::StopFlag;
use crate::detail::DetailSettings;
use crate::preprocess::openpose::json::{read_json_file, PoseJsonError};
use crate::preprocess::openpose::{draw_pose_map, DrawParts, PoseFrame};
use crate::preprocess::pose::stage::PoseStage;
use crate::preprocess::pose::{PoseError, PoseEstimator, PoseSettings, PoseTracker};
use crate::preprocess::softedge::{to_control_image, SoftEdge, SoftEdgeError, SoftEdgeSettings};
use crate::preset::{self, ControlKind};
use crate::video::Frame;

use crate::pipeline::stages::{ControlImage, PreparedFrame, Preprocessor, StageError};

/// Where the MediaPipe models sit below the models directory.
pub const MEDIAPIPE_DIR: &str = "mediapipe";

#[derive(Debug, thiserror::Error)]
pub enum PreprocessorError {
    /// Every preprocessor that could not be set up, reported together.
    #[error("{}", join_lines(.0))]
    Setup(Vec<PreprocessorError>),
    #[error("openpose maps: {0}")]
    Pose(#[from] PoseError),
    #[error("softedge maps: {0}")]
    SoftEdge(#[from] SoftEdgeError),
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
        draw_parts(&self.pose)
    }
}

/// The preprocessors making the maps `kinds` asks for (`temporalnet` needs none). Setup
/// problems of all of them (missing model files, ...) are reported together.
pub fn build_preprocessors(
    kinds: &[ControlKind],
    options: &PreprocessorOptions,
) -> Result<Vec<Box<dyn Preprocessor>>, PreprocessorError> {
    let mut built: Vec<Box<dyn Preprocessor>> = Vec::new();
    let mut errors = Vec::new();
    for kind in kinds {
        let made: Result<Box<dyn Preprocessor>, PreprocessorError> = match kind {
            ControlKind::Openpose => match &options.pose_json {
                Some(dir) => PoseJsonPreprocessor::new(dir, options.drawn_parts())
                    .map(|p| Box::new(p) as Box<dyn Preprocessor>),
                None => pose_stage(options),
            },
            ControlKind::Softedge => {
                SoftEdgePreprocessor::new(options).map(|p| Box::new(p) as Box<dyn Preprocessor>)
            }
            ControlKind::Temporalnet => continue,
        };
        match made {
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

fn draw_parts(settings: &preset::PoseSettings) -> DrawParts {
    DrawParts {
        body: settings.body,
        hands: settings.hands,
        face: settings.face,
    }
}

/// MediaPipe pose tracking, without a cache: every frame is estimated in order. When
/// detailing needs parts the map does not show, they are estimated and the map is drawn
/// again without them.
fn pose_stage(options: &PreprocessorOptions) -> Result<Box<dyn Preprocessor>, PreprocessorError> {
    let settings = options.estimated_pose();
    let estimator = PoseEstimator::new(&options.models_dir.join(MEDIAPIPE_DIR), &settings)?;
    let tracker = PoseTracker::new(Arc::new(estimator), options.fps);
    let stage = PoseStage::new(tracker, None);
    let parts = options.drawn_parts();
    let estimated = DrawParts {
        body: settings.body,
        hands: settings.hands,
        face: settings.face,
    };
    Ok(if parts == estimated {
        Box::new(stage)
    } else {
        Box::new(RedrawnPoseMap {
            inner: Box::new(stage),
            parts,
        })
    })
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
}

fn to_rgb(frame: &Frame) -> Result<RgbImage, PreprocessorError> {
    RgbImage::from_raw(frame.width, frame.height, frame.data.clone()).ok_or_else(|| {
        PreprocessorError::Frame {
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
        }
    })
}

/// HED soft edges (controlnet_aux's `HEDdetector`), at the source frame's size.
pub struct SoftEdgePreprocessor {
    model: SoftEdge,
    needed: Option<Vec<Range<u64>>>,
}

impl SoftEdgePreprocessor {
    pub fn new(options: &PreprocessorOptions) -> Result<Self, PreprocessorError> {
        let settings = SoftEdgeSettings {
            safe: options.softedge.safe,
            ..SoftEdgeSettings::default()
        };
        Ok(Self {
            model: SoftEdge::new(&options.models_dir, &settings)?,
            needed: options.needed.clone(),
        })
    }

    fn needs(&self, index: u64) -> bool {
        self.needed
            .as_ref()
            .is_none_or(|ranges| ranges.iter().any(|r| r.contains(&index)))
    }
}

impl Preprocessor for SoftEdgePreprocessor {
    fn name(&self) -> &str {
        "softedge"
    }

    fn process(&mut self, frame: &mut PreparedFrame) -> Result<(), StageError> {
        let index = frame.source.index;
        if !self.needs(index) {
            return Ok(());
        }
        let image = to_rgb(&frame.source)?;
        let map = self
            .model
            .detect(&image, image.width(), image.height())
            .map_err(|e| PreprocessorError::Frame {
                frame: index,
                what: "soft edges",
                source: Box::new(e),
            })?;
        frame.controls.push(ControlImage {
            kind: ControlKind::Softedge,
            image: Frame::from_rgb_image(index, to_control_image(&map)),
        });
        Ok(())
    }
}

/// Poses from OpenPose JSON files, one per input frame: the file whose name ends in
/// `_<digits>_keypoints.json` with `<digits>` the input frame index (`pose_000012_keypoints.json`
/// as `rotoscope preprocess` writes it, `clip_000000000012_keypoints.json` as OpenPose does).
/// The map is drawn at the source frame's size; the keypoints travel as an annotation.
pub struct PoseJsonPreprocessor {
    dir: PathBuf,
    files: BTreeMap<u64, PathBuf>,
    parts: DrawParts,
}

impl PoseJsonPreprocessor {
    pub fn new(dir: &Path, parts: DrawParts) -> Result<Self, PreprocessorError> {
        let bad = |reason: String| PreprocessorError::JsonDir {
            dir: dir.to_path_buf(),
            reason,
        };
        let mut files = BTreeMap::new();
        for entry in std::fs::read_dir(dir).map_err(|e| bad(e.to_string()))? {
            let path = entry.map_err(|e| bad(e.to_string()))?.path();
            let Some(index) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(keypoints_file_index)
            else {
                continue;
            };
            if let Some(other) = files.insert(index, path.clone()) {
                return Err(bad(format!(
                    "{} and {} both hold frame {index}",
                    other.display(),
                    path.display()
                )));
            }
        }
        if files.is_empty() {
            return Err(bad("no *_keypoints.json files".into()));
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            files,
            parts,
        })
    }
}

/// The frame index in an OpenPose keypoints file name (`..._000123_keypoints.json` → 123).
pub fn keypoints_file_index(name: &str) -> Option<u64> {
    let stem = name.strip_suffix("_keypoints.json")?;
    let digits = stem.len() - stem.bytes().rev().take_while(u8::is_ascii_digit).count();
    stem[digits..].parse().ok()
}

impl Preprocessor for PoseJsonPreprocessor {
    fn name(&self) -> &str {
        "pose-json"
    }

    fn process(&mut self, frame: &mut PreparedFrame) -> Result<(), StageError> {
        let (index, w, h) = (frame.source.index, frame.source.width, frame.source.height);
        let path = self
            .files
            .get(&index)
            .ok_or_else(|| PreprocessorError::JsonMissing {
                frame: index,
                dir: self.dir.clone(),
            })?;
        let mut poses = read_json_file(path, Some((w, h))).map_err(PreprocessorError::from)?;
        let pose = match poses.len() {
            0 => PoseFrame::empty(w, h),
            _ => poses.swap_remove(0),
        };
        let map = draw_pose_map(&pose, w, h, self.parts);
        frame.controls.push(ControlImage {
            kind: ControlKind::Openpose,
            image: Frame::from_rgb_image(index, map),
        });
        frame.annotations.insert(pose);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preprocess::openpose::json::to_json_string;
    use crate::preprocess::openpose::{Body, Face, Hand, Keypoint, Person};

    #[test]
    fn keypoint_file_names_give_frame_indices() {
        assert_eq!(
            keypoints_file_index("pose_000123_keypoints.json"),
            Some(123)
        );
        assert_eq!(
            keypoints_file_index("clip_000000000007_keypoints.json"),
            Some(7)
        );
        assert_eq!(keypoints_file_index("5_keypoints.json"), Some(5));
        assert_eq!(keypoints_file_index("pose_000123.png"), None);
        assert_eq!(keypoints_file_index("pose_keypoints.json"), None);
    }

    #[test]
    fn json_poses_become_maps_and_annotations() {
        let dir = tempfile::tempdir().unwrap();
        let mut pose = PoseFrame::empty(64, 48);
        let mut body = Body {
            points: [Keypoint::MISSING; 18],
        };
        body.points[1] = Keypoint::new(32.0, 10.0, 1.0); // neck
        body.points[2] = Keypoint::new(20.0, 12.0, 1.0); // right shoulder
        pose.people.push(Person {
            body: Some(body),
            ..Person::default()
        });
        std::fs::write(
            dir.path().join("pose_000004_keypoints.json"),
            to_json_string(&pose),
        )
        .unwrap();
        std::fs::write(dir.path().join("readme.txt"), "x").unwrap();
        let mut pre = PoseJsonPreprocessor::new(dir.path(), DrawParts::default()).unwrap();

        let mut frame = PreparedFrame::new(Frame::new(4, 64, 48, vec![0; 64 * 48 * 3]).unwrap());
        pre.process(&mut frame).unwrap();
        let map = frame.control(ControlKind::Openpose).unwrap();
        assert_eq!((map.width, map.height, map.index), (64, 48, 4));
        assert!(map.data.iter().any(|&v| v > 0), "the limb is drawn");
        let keypoints = frame.annotations.get::<PoseFrame>().unwrap();
        assert_eq!(keypoints.people.len(), 1);

        let mut other = PreparedFrame::new(Frame::new(5, 64, 48, vec![0; 64 * 48 * 3]).unwrap());
        let err = pre.process(&mut other).unwrap_err().to_string();
        assert!(err.contains("frame 5"), "{err}");
        assert!(
            PoseJsonPreprocessor::new(&dir.path().join("missing"), DrawParts::default()).is_err()
        );
    }

    /// A person with body, face and right hand on a 64 × 48 frame.
    fn full_person() -> PoseFrame {
        let mut pose = PoseFrame::empty(64, 48);
        let mut body = Body {
            points: [Keypoint::MISSING; 18],
        };
        body.points[1] = Keypoint::new(32.0, 20.0, 1.0);
        body.points[2] = Keypoint::new(20.0, 22.0, 1.0);
        pose.people.push(Person {
            body: Some(body),
            face: Some(Face {
                points: std::array::from_fn(|i| {
                    Keypoint::new(28.0 + (i % 8) as f32, 6.0 + (i / 8) as f32, 1.0)
                }),
            }),
            right_hand: Some(Hand {
                points: std::array::from_fn(|i| {
                    Keypoint::new(
                        50.0 + (i % 5) as f32 * 2.0,
                        30.0 + (i / 5) as f32 * 2.0,
                        1.0,
                    )
                }),
            }),
            ..Person::default()
        });
        pose
    }

    fn options(pose: preset::PoseSettings, detail: DetailKeypoints) -> PreprocessorOptions {
        PreprocessorOptions {
            models_dir: PathBuf::from("models"),
            pose,
            softedge: preset::SoftedgeSettings::default(),
            fps: 24.0,
            pose_json: None,
            needed: None,
            stop: StopFlag::new(),
            detail,
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

    #[test]
    fn json_poses_keep_face_and_hands_the_map_does_not_draw() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("pose_000000_keypoints.json"),
            to_json_string(&full_person()),
        )
        .unwrap();
        let body_only = DrawParts {
            body: true,
            hands: false,
            face: false,
        };
        let mut pre = PoseJsonPreprocessor::new(dir.path(), body_only).unwrap();
        let mut frame = PreparedFrame::new(Frame::new(0, 64, 48, vec![0; 64 * 48 * 3]).unwrap());
        pre.process(&mut frame).unwrap();
        let pose = frame.annotations.get::<PoseFrame>().unwrap();
        assert_eq!(pose.people[0].face, full_person().people[0].face);
        assert_eq!(
            pose.people[0].right_hand,
            full_person().people[0].right_hand
        );
        let map = frame.control(ControlKind::Openpose).unwrap();
        assert_eq!(
            map.data,
            draw_pose_map(&full_person(), 64, 48, body_only).into_raw()
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
