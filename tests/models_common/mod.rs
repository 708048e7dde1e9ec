//! Shared by the tests that need the real preprocessor models (scripts/fetch-models.sh).
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// Where the real models are: `$ROTOSCOPE_MODELS` or `<repo>/models`.
pub fn models_dir() -> PathBuf {
    std::env::var_os("ROTOSCOPE_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("models"))
}

/// `models_dir()`, after checking that the pose and soft-edge weights of the preprocessors
/// are there. Panics with instructions when they are missing.
pub fn preprocessor_models_dir() -> PathBuf {
    let dir = models_dir();
    for needed in ["mediapipe/pose_landmark_full.tflite", "hed/hed.safetensors"] {
        assert!(
            dir.join(needed).is_file(),
            "{} is missing: run scripts/fetch-models.sh (or set ROTOSCOPE_MODELS)",
            dir.join(needed).display()
        );
    }
    dir
}

/// `path` (a file under `models_dir()`), after checking that it exists.
pub fn require(path: PathBuf) -> PathBuf {
    assert!(
        path.exists(),
        "{} is missing: run scripts/fetch-models.sh (set ROTOSCOPE_MODELS to use another models directory)",
        path.display()
    );
    path
}
