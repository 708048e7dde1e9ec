//! Face mesh (`face_landmark.tflite`) on a face ROI, as
//! `mediapipe/modules/face_landmark/face_landmark_cpu.pbtxt` (without attention): 192² crop
//! in [0, 1] (no letterboxing: the ROIs are square); outputs 468 × (x, y, z) in crop pixels
//! and a face-presence logit (sigmoid applied, as `TensorsToFloatsCalculator` does there).

use std::path::Path;

use image::RgbImage;

use super::crop::{crop, Border, TensorSpec};
use super::roi::NormRect;
use super::{NormLandmark, PoseError};
use crate::preprocess::openpose::keypoints::FACE_MESH_POINTS;
use crate::tflite::TfliteModel;

pub const MODEL_FILE: &str = "face_landmark.tflite";
const INPUT: usize = 192;

const TENSOR: TensorSpec = TensorSpec {
    width: INPUT,
    height: INPUT,
    keep_aspect_ratio: false,
    range: (0.0, 1.0),
    border: Border::Replicate,
};

/// A face mesh in image-normalised coordinates; every landmark's score is `presence`.
#[derive(Debug, Clone)]
pub struct FaceLandmarks {
    pub landmarks: Vec<NormLandmark>,
    pub presence: f32,
}

pub struct FaceLandmarker {
    model: TfliteModel,
}

impl FaceLandmarker {
    pub fn load(models_dir: &Path) -> Result<Self, PoseError> {
        let path = models_dir.join(MODEL_FILE);
        let model = super::load_model(&path)?;
        let sizes: Vec<usize> = model
            .outputs()
            .iter()
            .map(|o| o.shape.iter().product())
            .collect();
        if sizes != [FACE_MESH_POINTS * 3, 1] {
            return Err(PoseError::UnexpectedModel {
                path,
                detail: format!("expected 1404 landmark values and 1 score, got {sizes:?}"),
            });
        }
        Ok(FaceLandmarker { model })
    }

    pub fn run(&self, image: &RgbImage, roi: &NormRect) -> Result<FaceLandmarks, PoseError> {
        let input = crop(image, Some(roi), &TENSOR)?;
        let outputs = super::run_model(&self.model, input.tensor.clone())?;
        let presence = 1.0 / (1.0 + (-outputs[1].data[0]).exp());
        let raw = &outputs[0].data;
        let landmarks = (0..FACE_MESH_POINTS)
            .map(|i| {
                let (x, y) =
                    input.project(raw[i * 3] / INPUT as f32, raw[i * 3 + 1] / INPUT as f32);
                NormLandmark {
                    x,
                    y,
                    score: presence,
                }
            })
            .collect();
        Ok(FaceLandmarks {
            landmarks,
            presence,
        })
    }
}
