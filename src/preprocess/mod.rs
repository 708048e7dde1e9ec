//! Preprocessors: pose (MediaPipe) and soft edge (HED) turn frames into control maps;
//! OpenPose drawing and JSON, the on-disk map cache, and the registry the pipeline's
//! preprocessors are built from (one entry per map kind).

use std::path::PathBuf;

pub mod cache;
pub mod map_stage;
pub mod openpose;
pub mod pose;
pub mod registry;
pub mod softedge;

/// Environment variable naming the models directory.
pub const MODELS_ENV: &str = "ROTOSCOPE_MODELS";

/// Where the packaged preprocessor weights are (`scripts/fetch-models.sh` puts them there):
/// `$ROTOSCOPE_MODELS`, or `./models`.
pub fn models_dir() -> PathBuf {
    std::env::var_os(MODELS_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("models"))
}
