//! Rotated ROI crops into model input tensors, and the projection of model outputs back to
//! the image — MediaPipe's `ImageToTensorCalculator` (OpenCV converter:
//! `calculators/tensor/image_to_tensor_converter_opencv.cc`, `image_to_tensor_utils.cc`
//! `GetRoi` / `PadRoi`) and `LandmarkLetterboxRemovalCalculator` +
//! `LandmarkProjectionCalculator` / `DetectionProjectionCalculator`.
//!
//! Output pixel `(i, j)` of a `W × H` tensor samples the image at
//! `centre + R(θ) · ((i / W − ½) · w, (j / H − ½) · h)` (the affine map sending the ROI's
//! corners to the tensor's corners, as `warpPerspective` does), bilinearly, rounded to 8 bits
//! like the OpenCV warp of an 8-bit image, then mapped linearly from [0, 255] to the model's
//! value range.

use image::RgbImage;
use rayon::prelude::*;

use super::roi::NormRect;
use crate::alloc::uninit_f32;
use crate::tflite::Array;

/// What lies outside the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Border {
    /// Black (`BORDER_ZERO`, the detectors).
    Zero,
    /// Nearest edge pixel (`BORDER_REPLICATE`, MediaPipe's default: the landmark models).
    Replicate,
}

/// `ImageToTensorCalculatorOptions`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TensorSpec {
    pub width: usize,
    pub height: usize,
    pub keep_aspect_ratio: bool,
    pub range: (f32, f32),
    pub border: Border,
}

/// A rotated rectangle in image pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PixelRect {
    pub cx: f32,
    pub cy: f32,
    pub width: f32,
    pub height: f32,
    pub rotation: f32,
}

/// A model input and how to map its normalised coordinates back to the image.
#[derive(Debug, Clone)]
pub struct Crop {
    /// `[1, H, W, 3]` f32.
    pub tensor: Array,
    /// The sampled rectangle (after letterbox padding) in image pixels.
    pub rect: PixelRect,
    pub image_size: (u32, u32),
}

#[derive(Debug, thiserror::Error)]
pub enum CropError {
    #[error("ROI is empty or not finite: {0:?}")]
    BadRoi(PixelRect),
    #[error("image is empty ({0}×{1})")]
    EmptyImage(u32, u32),
}

impl Crop {
    /// Maps a point normalised to the tensor (x right, y down, [0, 1]) to coordinates
    /// normalised to the image (letterbox removal and ROI projection in one step).
    pub fn project(&self, x: f32, y: f32) -> (f32, f32) {
        let r = &self.rect;
        let (c, s) = (r.rotation.cos(), r.rotation.sin());
        let dx = (x - 0.5) * r.width;
        let dy = (y - 0.5) * r.height;
        (
            (r.cx + c * dx - s * dy) / self.image_size.0 as f32,
            (r.cy + s * dx + c * dy) / self.image_size.1 as f32,
        )
    }

    /// Tensor-relative scale of one tensor pixel in image pixels (for depth-like values).
    pub fn pixels_per_unit(&self) -> f32 {
        self.rect.width
    }
}

/// `GetRoi` + `PadRoi`: the ROI in pixels (whole image without one), grown to the tensor's
/// aspect ratio when `keep_aspect_ratio` (the growth is the letterbox padding).
pub fn roi_in_pixels(roi: Option<&NormRect>, size: (u32, u32), spec: &TensorSpec) -> PixelRect {
    let (w, h) = (size.0 as f32, size.1 as f32);
    let mut r = match roi {
        Some(n) => PixelRect {
            cx: n.x_center * w,
            cy: n.y_center * h,
            width: n.width * w,
            height: n.height * h,
            rotation: n.rotation,
        },
        None => PixelRect {
            cx: 0.5 * w,
            cy: 0.5 * h,
            width: w,
            height: h,
            rotation: 0.0,
        },
    };
    if spec.keep_aspect_ratio && r.width > 0.0 && r.height > 0.0 {
        let tensor_aspect = spec.height as f32 / spec.width as f32;
        let roi_aspect = r.height / r.width;
        if tensor_aspect > roi_aspect {
            r.height = r.width * tensor_aspect;
        } else {
            r.width = r.height / tensor_aspect;
        }
    }
    r
}

/// Crops `roi` (the whole image when `None`) out of `image` into a model input tensor.
pub fn crop(
    image: &RgbImage,
    roi: Option<&NormRect>,
    spec: &TensorSpec,
) -> Result<Crop, CropError> {
    let (iw, ih) = image.dimensions();
    if iw == 0 || ih == 0 {
        return Err(CropError::EmptyImage(iw, ih));
    }
    let rect = roi_in_pixels(roi, (iw, ih), spec);
    let finite = [rect.cx, rect.cy, rect.width, rect.height, rect.rotation]
        .iter()
        .all(|v| v.is_finite());
    if !finite || rect.width <= 0.0 || rect.height <= 0.0 {
        return Err(CropError::BadRoi(rect));
    }

    let (ow, oh) = (spec.width, spec.height);
    let (c, s) = (rect.rotation.cos(), rect.rotation.sin());
    // Per output step: how far the sample point moves in the image.
    let ux = (c * rect.width / ow as f32, s * rect.width / ow as f32);
    let uy = (-s * rect.height / oh as f32, c * rect.height / oh as f32);
    let origin = (
        rect.cx - 0.5 * c * rect.width + 0.5 * s * rect.height,
        rect.cy - 0.5 * s * rect.width - 0.5 * c * rect.height,
    );
    let scale = (spec.range.1 - spec.range.0) / 255.0;
    let offset = spec.range.0;

    let src = image.as_raw();
    let (iw_i, ih_i) = (iw as i64, ih as i64);
    let fetch = |x: i64, y: i64| -> [f32; 3] {
        let (x, y) = match spec.border {
            Border::Replicate => (x.clamp(0, iw_i - 1), y.clamp(0, ih_i - 1)),
            Border::Zero => {
                if x < 0 || y < 0 || x >= iw_i || y >= ih_i {
                    return [0.0; 3];
                }
                (x, y)
            }
        };
        let i = ((y * iw_i + x) * 3) as usize;
        [src[i] as f32, src[i + 1] as f32, src[i + 2] as f32]
    };

    // SAFETY: every row is filled below, every pixel's three channels.
    let mut data = unsafe { uninit_f32(ow * oh * 3) };
    // Rows in parallel: the crop is per-pixel work of the same order as a small layer.
    data.par_chunks_mut((ow * 3).max(1))
        .enumerate()
        .for_each(|(j, row)| {
            let row_x = origin.0 + uy.0 * j as f32;
            let row_y = origin.1 + uy.1 * j as f32;
            for (i, px) in row.chunks_exact_mut(3).enumerate() {
                let sx = row_x + ux.0 * i as f32;
                let sy = row_y + ux.1 * i as f32;
                let (x0, y0) = (sx.floor(), sy.floor());
                let (fx, fy) = (sx - x0, sy - y0);
                let (x0, y0) = (x0 as i64, y0 as i64);
                let p00 = fetch(x0, y0);
                let p10 = fetch(x0 + 1, y0);
                let p01 = fetch(x0, y0 + 1);
                let p11 = fetch(x0 + 1, y0 + 1);
                for k in 0..3 {
                    let top = p00[k] + (p10[k] - p00[k]) * fx;
                    let bottom = p01[k] + (p11[k] - p01[k]) * fx;
                    let v = (top + (bottom - top) * fy).round();
                    px[k] = v * scale + offset;
                }
            }
        });
    Ok(Crop {
        tensor: Array::new(vec![1, oh, ow, 3], data),
        rect,
        image_size: (iw, ih),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 100]))
    }

    const SPEC: TensorSpec = TensorSpec {
        width: 8,
        height: 8,
        keep_aspect_ratio: true,
        range: (0.0, 1.0),
        border: Border::Zero,
    };

    #[test]
    fn axis_aligned_crop_samples_pixel_grid() {
        let img = gradient(64, 64);
        // A 16-px square at (8..24, 32..48): output pixel i samples x = 8 + 2i.
        let roi = NormRect {
            x_center: 16.0 / 64.0,
            y_center: 40.0 / 64.0,
            width: 0.25,
            height: 0.25,
            rotation: 0.0,
        };
        let c = crop(&img, Some(&roi), &SPEC).unwrap();
        let px = |i: usize, j: usize, k: usize| c.tensor.data[(j * 8 + i) * 3 + k] * 255.0;
        assert!((px(0, 0, 0) - 8.0).abs() < 1e-3);
        assert!((px(3, 0, 0) - 14.0).abs() < 1e-3);
        assert!((px(0, 5, 1) - 42.0).abs() < 1e-3);
        assert!((px(2, 2, 2) - 100.0).abs() < 1e-3);
        // Tensor (0, 0) and (1, 1) project to the ROI's corners.
        let (x, y) = c.project(0.0, 0.0);
        assert!((x * 64.0 - 8.0).abs() < 1e-4 && (y * 64.0 - 32.0).abs() < 1e-4);
        let (x, y) = c.project(1.0, 1.0);
        assert!((x * 64.0 - 24.0).abs() < 1e-4 && (y * 64.0 - 48.0).abs() < 1e-4);
    }

    #[test]
    fn rotated_crop_turns_the_image() {
        let img = gradient(64, 64);
        // Rotated +90°: the tensor's x axis runs down the image.
        let roi = NormRect {
            x_center: 0.5,
            y_center: 0.5,
            width: 0.25,
            height: 0.25,
            rotation: std::f32::consts::FRAC_PI_2,
        };
        let c = crop(&img, Some(&roi), &SPEC).unwrap();
        let px = |i: usize, j: usize, k: usize| c.tensor.data[(j * 8 + i) * 3 + k] * 255.0;
        // Moving right in the tensor moves down in the image (green grows, red constant).
        assert!((px(5, 0, 1) - px(0, 0, 1) - 10.0).abs() < 1e-3);
        assert!((px(5, 0, 0) - px(0, 0, 0)).abs() < 1e-3);
        // project() is the inverse of the sampling.
        let (x, y) = c.project(0.5 + 0.25, 0.5);
        assert!((x - 0.5).abs() < 1e-5 && (y - (0.5 + 0.25 * 0.25)).abs() < 1e-5);
    }

    #[test]
    fn whole_image_is_letterboxed_to_square_with_zero_border() {
        let img = RgbImage::from_pixel(32, 16, image::Rgb([255, 255, 255]));
        let spec = TensorSpec {
            range: (-1.0, 1.0),
            ..SPEC
        };
        let c = crop(&img, None, &spec).unwrap();
        assert_eq!((c.rect.width, c.rect.height), (32.0, 32.0));
        let px = |i: usize, j: usize| c.tensor.data[(j * 8 + i) * 3];
        assert_eq!(px(4, 0), -1.0); // padding row: black → −1
        assert_eq!(px(4, 4), 1.0); // image: white → +1
                                   // The image's top-left corner is at tensor (0, 0.25).
        let (x, y) = c.project(0.0, 0.25);
        assert!(x.abs() < 1e-6 && y.abs() < 1e-6);
    }

    #[test]
    fn replicate_border_repeats_edges_and_bad_rois_fail() {
        let img = gradient(16, 16);
        let spec = TensorSpec {
            border: Border::Replicate,
            ..SPEC
        };
        let roi = NormRect {
            x_center: 0.0,
            y_center: 0.0,
            width: 1.0,
            height: 1.0,
            rotation: 0.0,
        };
        let c = crop(&img, Some(&roi), &spec).unwrap();
        assert_eq!(c.tensor.data[0], 0.0);
        assert!((c.tensor.data[2] * 255.0 - 100.0).abs() < 1e-3);
        let bad = NormRect { width: 0.0, ..roi };
        assert!(crop(&img, Some(&bad), &spec).is_err());
    }
}
