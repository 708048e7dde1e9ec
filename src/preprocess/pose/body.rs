//! BlazePose body landmarks (`pose_landmark_full.tflite`) on a person ROI, as
//! `mediapipe/modules/pose_landmark/pose_landmark_by_roi_cpu.pbtxt` and
//! `tensors_to_pose_landmarks_and_segmentation.pbtxt`: 256² crop in [0, 1]; 39 landmarks
//! (33 body + 2 auxiliary ROI points + 4 unused) of (x, y, z, visibility, presence) in crop
//! pixels, refined by the 64² heatmap (`RefineLandmarksFromHeatmapCalculator`, kernel 7),
//! then projected to the image.

use std::path::Path;

use image::RgbImage;

use super::crop::{crop, Border, Crop, TensorSpec};
use super::roi::{NormPoint, NormRect};
use super::{NormLandmark, PoseError};
use crate::preprocess::openpose::keypoints::BLAZEPOSE_POINTS;
use crate::tflite::{Array, TfliteModel};

pub const MODEL_FILE: &str = "pose_landmark_full.tflite";
const INPUT: usize = 256;
const RAW_LANDMARKS: usize = 39;
const HEATMAP_KERNEL: usize = 7;
const MIN_CONFIDENCE_TO_REFINE: f32 = 0.5;

/// One person's landmarks in image-normalised coordinates.
#[derive(Debug, Clone)]
pub struct BodyLandmarks {
    /// The 33 BlazePose landmarks; `score` is the visibility.
    pub landmarks: [NormLandmark; BLAZEPOSE_POINTS],
    /// Auxiliary landmarks 33 (hip centre) and 34 (full-body radius point) for tracking.
    pub auxiliary: [NormPoint; 2],
    /// The model's pose presence score.
    pub presence: f32,
}

pub struct BodyLandmarker {
    model: TfliteModel,
}

const TENSOR: TensorSpec = TensorSpec {
    width: INPUT,
    height: INPUT,
    keep_aspect_ratio: true,
    range: (0.0, 1.0),
    border: Border::Replicate,
};

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

impl BodyLandmarker {
    pub fn load(models_dir: &Path) -> Result<Self, PoseError> {
        let path = models_dir.join(MODEL_FILE);
        let model = super::load_model(&path)?;
        let shapes: Vec<&Vec<usize>> = model.outputs().iter().map(|o| &o.shape).collect();
        let ok = shapes.len() == 5
            && *shapes[0] == [1, RAW_LANDMARKS * 5]
            && *shapes[1] == [1, 1]
            && *shapes[3] == [1, 64, 64, RAW_LANDMARKS];
        if !ok {
            return Err(PoseError::UnexpectedModel {
                path,
                detail: format!(
                    "expected [1, 195], [1, 1], mask, [1, 64, 64, 39], world; got {shapes:?}"
                ),
            });
        }
        Ok(BodyLandmarker { model })
    }

    /// Runs the landmark model on `roi`.
    pub fn run(&self, image: &RgbImage, roi: &NormRect) -> Result<BodyLandmarks, PoseError> {
        let input = crop(image, Some(roi), &TENSOR)?;
        let outputs = super::run_model(&self.model, input.tensor.clone())?;
        Ok(decode(&input, &outputs[0], outputs[1].data[0], &outputs[3]))
    }
}

/// Landmarks in crop-normalised coordinates, refined by the heatmap, projected to the image.
fn decode(input: &Crop, raw: &Array, presence: f32, heatmap: &Array) -> BodyLandmarks {
    let mut points: Vec<(f32, f32, f32)> = (0..RAW_LANDMARKS)
        .map(|i| {
            let v = &raw.data[i * 5..i * 5 + 5];
            (v[0] / INPUT as f32, v[1] / INPUT as f32, sigmoid(v[3]))
        })
        .collect();
    refine_from_heatmap(&mut points, heatmap);
    let project = |p: (f32, f32, f32)| {
        let (x, y) = input.project(p.0, p.1);
        NormLandmark { x, y, score: p.2 }
    };
    BodyLandmarks {
        landmarks: std::array::from_fn(|i| project(points[i])),
        auxiliary: [33, 34].map(|i| {
            let l = project(points[i]);
            (l.x, l.y)
        }),
        presence,
    }
}

/// `RefineLandmarksFromHeatmapCalculator`: each landmark moves to the confidence-weighted
/// mean position of its heatmap channel in a 7×7 window around it, if the window's peak
/// (sigmoid) confidence reaches 0.5.
pub fn refine_from_heatmap(points: &mut [(f32, f32, f32)], heatmap: &Array) {
    let Some((_, hm_h, hm_w, channels)) = heatmap.nhwc() else {
        return;
    };
    let offset = (HEATMAP_KERNEL - 1) / 2;
    for (lm, p) in points.iter_mut().enumerate().take(channels) {
        // C++ `int(x * w)` truncates toward zero.
        let col = (p.0 * hm_w as f32) as i64;
        let row = (p.1 * hm_h as f32) as i64;
        if col < 0 || col >= hm_w as i64 || row < 0 || row >= hm_h as i64 {
            continue;
        }
        let (col, row) = (col as usize, row as usize);
        let (c0, c1) = (col.saturating_sub(offset), (col + offset + 1).min(hm_w));
        let (r0, r1) = (row.saturating_sub(offset), (row + offset + 1).min(hm_h));
        let (mut sum, mut wc, mut wr, mut max_conf) = (0.0f32, 0.0f32, 0.0f32, 0.0f32);
        for r in r0..r1 {
            for c in c0..c1 {
                let conf = sigmoid(heatmap.data[(r * hm_w + c) * channels + lm]);
                sum += conf;
                max_conf = max_conf.max(conf);
                wc += c as f32 * conf;
                wr += r as f32 * conf;
            }
        }
        if max_conf >= MIN_CONFIDENCE_TO_REFINE && sum > 0.0 {
            p.0 = wc / hm_w as f32 / sum;
            p.1 = wr / hm_h as f32 / sum;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heatmap_refinement_moves_to_weighted_peak() {
        // 8×8 heatmap, 1 channel, strong blob at (col 5, row 2) and (col 6, row 2).
        let mut data = vec![-20.0f32; 64];
        data[2 * 8 + 5] = 20.0;
        data[2 * 8 + 6] = 20.0;
        let hm = Array::new(vec![1, 8, 8, 1], data);
        let mut pts = vec![(4.0 / 8.0, 3.0 / 8.0, 1.0)];
        refine_from_heatmap(&mut pts, &hm);
        assert!((pts[0].0 - 5.5 / 8.0).abs() < 1e-4, "{:?}", pts[0]);
        assert!((pts[0].1 - 2.0 / 8.0).abs() < 1e-4);
        // Weak heatmap: unchanged.
        let hm = Array::new(vec![1, 8, 8, 1], vec![-20.0; 64]);
        let mut pts = vec![(0.5, 0.5, 1.0)];
        refine_from_heatmap(&mut pts, &hm);
        assert_eq!(pts[0], (0.5, 0.5, 1.0));
    }
}
