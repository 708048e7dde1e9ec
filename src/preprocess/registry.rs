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

use crate::cancel::StopFlag;
use crate::pipeline::stages::{PreparedFrame, Preprocessor, StageError};
use crate::preprocess::{pose, softedge};
use crate::preset::{ControlKind, Preset};

pub use crate::preprocess::map_stage::{
    CacheTarget, DetailKeypoints, MapPreprocessor, PreprocessorError, PreprocessorOptions,
};

/// Every map preprocessor. One line per map kind.
pub const REGISTRY: &[MapPreprocessor] = &[pose::stage::OPENPOSE, softedge::stage::SOFTEDGE];

/// The registry entry making `kind`'s map; `None` for maps no preprocessor makes
/// (temporalnet).
pub fn lookup(kind: ControlKind) -> Option<&'static MapPreprocessor> {
    REGISTRY.iter().find(|p| p.kind == kind)
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

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::preprocess::map_stage::test_options as options;
    use crate::preset;
    use crate::video::Frame;

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
