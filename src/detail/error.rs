//! Errors of face and hand detailing.

use crate::cancel::Interrupted;
use crate::diffusion::image_pipeline::ImagePipelineError;

use crate::preset::detail::RegionKind;

#[derive(Debug, thiserror::Error)]
pub enum DetailError {
    /// The pose preprocessor did not run on this frame (detailing needs its keypoints).
    #[error(
        "frame {frame} has no pose keypoints: face/hand detailing needs the pose preprocessor \
         (preprocess.pose) to run"
    )]
    NoKeypoints { frame: u64 },
    #[error("pose keypoints of frame {frame} belong to a {width}x{height} frame")]
    EmptyPoseFrame { frame: u64, width: u32, height: u32 },
    #[error(
        "detail.{section}.controlnet is on, but the preset has no openpose ControlNet to use \
         (add one under controlnets, or set detail.{section}.controlnet: false)"
    )]
    NoOpenposeControlNet { section: &'static str },
    #[error("detailing the {kind} (track {track}) of frame {frame}: {source}")]
    Generate {
        frame: u64,
        kind: RegionKind,
        track: u64,
        #[source]
        source: Box<ImagePipelineError>,
    },
    /// A stop was requested (Ctrl-C) between two frames.
    #[error("detailing stopped: {0}")]
    Interrupted(#[from] Interrupted),
    /// Sizes that disagree inside the detailer (a bug, not bad input).
    #[error("internal size mismatch: {0}")]
    SizeMismatch(String),
}

impl DetailError {
    /// Whether the user can fix it in the preset or the keypoints they supplied (exit code
    /// 2), rather than it being a failure of the program or the models.
    pub fn is_bad_input(&self) -> bool {
        match self {
            DetailError::NoOpenposeControlNet { .. } | DetailError::EmptyPoseFrame { .. } => true,
            // A frame without keypoints means the pose preprocessor did not run: a bug in
            // how the pipeline was put together, not the user's input.
            DetailError::NoKeypoints { .. }
            | DetailError::Generate { .. }
            | DetailError::Interrupted(_)
            | DetailError::SizeMismatch(_) => false,
        }
    }
}
