//! Poses from OpenPose JSON files (`*_keypoints.json`, e.g. from `rotoscope preprocess` or
//! DWPose/OpenPose) instead of estimating them: the openpose preprocessor of a render given
//! `--pose-json DIR`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::pipeline::stages::{ControlImage, PreparedFrame, Preprocessor, StageError};
use crate::preprocess::map_stage::PreprocessorError;
use crate::preprocess::openpose::json::read_json_file;
use crate::preprocess::openpose::{draw_pose_map, DrawParts, PoseFrame};
use crate::preset::ControlKind;
use crate::video::Frame;

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
    use crate::preprocess::openpose::test_poses::full_person;
    use crate::preprocess::openpose::{Body, Keypoint, Person};

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
}
