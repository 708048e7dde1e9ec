//! Shared by the tests that load the tiny random fixture models.

use std::path::{Path, PathBuf};

/// The UNet weights file of a fixture folder (`scripts/make_fixtures.py` writes f32, or f16
/// where the fixture tests the f16 path).
pub fn unet_weights(dir: &Path) -> PathBuf {
    [
        "diffusion_pytorch_model.safetensors",
        "diffusion_pytorch_model.fp16.safetensors",
    ]
    .iter()
    .map(|f| dir.join(f))
    .find(|p| p.exists())
    .expect("fixture weights")
}
