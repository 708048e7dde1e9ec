//! Hand landmarks (`hand_landmark_full.tflite`) on a hand ROI, as
//! `mediapipe/modules/hand_landmark/hand_landmark_cpu.pbtxt`: 224² crop in [0, 1]; outputs
//! 21 × (x, y, z) in crop pixels, the hand presence probability, handedness and world
//! landmarks.

use std::path::Path;

use image::RgbImage;

use super::crop::{crop, Border, TensorSpec};
use super::roi::NormRect;
use super::{NormLandmark, PoseError};
use crate::preprocess::openpose::keypoints::HAND_POINTS;
use crate::tflite::TfliteModel;

pub const MODEL_FILE: &str = "hand_landmark_full.tflite";
const INPUT: usize = 224;

const TENSOR: TensorSpec = TensorSpec {
    width: INPUT,
    height: INPUT,
    keep_aspect_ratio: true,
    range: (0.0, 1.0),
    border: Border::Replicate,
};

/// One hand in image-normalised coordinates; every landmark's score is `presence`.
#[derive(Debug, Clone)]
pub struct HandLandmarks {
    pub landmarks: [NormLandmark; HAND_POINTS],
    pub presence: f32,
    /// The model's probability that this is a right hand *as seen in the image* (MediaPipe
    /// assumes mirrored selfie input, so it labels it "Left"); informational only — which
    /// hand is which comes from the body.
    pub handedness: f32,
}

pub struct HandLandmarker {
    model: TfliteModel,
}

impl HandLandmarker {
    pub fn load(models_dir: &Path) -> Result<Self, PoseError> {
        let path = models_dir.join(MODEL_FILE);
        let model = super::load_model(&path)?;
        let shapes: Vec<&Vec<usize>> = model.outputs().iter().map(|o| &o.shape).collect();
        let ok = shapes.len() == 4
            && *shapes[0] == [1, HAND_POINTS * 3]
            && *shapes[1] == [1, 1]
            && *shapes[2] == [1, 1];
        if !ok {
            return Err(PoseError::UnexpectedModel {
                path,
                detail: format!("expected [1, 63], [1, 1], [1, 1], [1, 63]; got {shapes:?}"),
            });
        }
        Ok(HandLandmarker { model })
    }

    pub fn run(&self, image: &RgbImage, roi: &NormRect) -> Result<HandLandmarks, PoseError> {
        let input = crop(image, Some(roi), &TENSOR)?;
        let outputs = super::run_model(&self.model, input.tensor.clone())?;
        let presence = outputs[1].data[0];
        let raw = &outputs[0].data;
        Ok(HandLandmarks {
            landmarks: std::array::from_fn(|i| {
                let (x, y) =
                    input.project(raw[i * 3] / INPUT as f32, raw[i * 3 + 1] / INPUT as f32);
                NormLandmark {
                    x,
                    y,
                    score: presence,
                }
            }),
            presence,
            handedness: outputs[2].data[0],
        })
    }
}
