//! Pose estimation with MediaPipe's models (person, body, palm, hand, face detection and
//! landmarks), giving OpenPose keypoints (see [`crate::preprocess::openpose`]).
//!
//! Pure parts (anchors, decoding, ROIs, crops, tracking state, smoothing) are separate from
//! the model wrappers ([`detector`], [`body`], [`hands`], [`face`]) and the orchestration
//! ([`estimator`]).

use std::path::{Path, PathBuf};

use crate::tflite::{Array, TfliteError, TfliteModel};

pub mod anchors;
pub mod body;
pub mod crop;
pub mod detection;
pub mod detector;
pub mod estimator;
pub mod face;
pub mod hands;
pub mod roi;
pub mod smoothing;
pub mod stage;
pub mod tracker;

pub use crate::preset::pose::PoseSettings;
pub use estimator::{PoseEstimator, PoseTracker};
pub use tracker::TrackingStats;

/// A landmark normalised to the image, with its score (visibility or presence).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct NormLandmark {
    pub x: f32,
    pub y: f32,
    pub score: f32,
}

#[derive(Debug, thiserror::Error)]
pub enum PoseError {
    #[error("pose model {path} is missing: run scripts/fetch-models.sh (installs the MediaPipe models into $ROTOSCOPE_MODELS/mediapipe)")]
    MissingModel { path: PathBuf },
    #[error("pose models missing from {}: {}; run scripts/fetch-models.sh (installs them into $ROTOSCOPE_MODELS/mediapipe)", dir.display(), files.join(", "))]
    MissingModels { dir: PathBuf, files: Vec<String> },
    #[error(transparent)]
    Model(#[from] TfliteError),
    #[error("{path}: not the expected MediaPipe model: {detail}")]
    UnexpectedModel { path: PathBuf, detail: String },
    #[error("cannot crop the model input: {0}")]
    Crop(#[from] crop::CropError),
    #[error(transparent)]
    Settings(#[from] crate::preset::pose::SettingsError),
}

/// Loads a `.tflite` model, turning a missing file into an actionable error.
fn load_model(path: &Path) -> Result<TfliteModel, PoseError> {
    if !path.is_file() {
        return Err(PoseError::MissingModel {
            path: path.to_path_buf(),
        });
    }
    Ok(TfliteModel::load(path)?)
}

/// Runs a single-input model.
fn run_model(model: &TfliteModel, input: Array) -> Result<Vec<Array>, PoseError> {
    Ok(model.run_arrays(vec![input])?)
}
