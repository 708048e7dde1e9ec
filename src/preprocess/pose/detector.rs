//! The three SSD detectors (person, palm, face): crop or letterbox the input, run the model,
//! decode against the anchors, weighted NMS, map back to the image. One struct; the per-model
//! settings come from the MediaPipe graphs (see [`DetectorKind`]).

use std::path::Path;

use image::RgbImage;

use super::anchors::{generate_anchors, Anchor, SsdAnchorOptions};
use super::crop::{crop, Border, TensorSpec};
use super::detection::{
    decode_detections, project_detection, weighted_nms, DecodeOptions, Detection,
};
use super::roi::NormRect;
use super::PoseError;
use crate::tflite::TfliteModel;

/// Which MediaPipe detector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DetectorKind {
    /// `pose_detection.tflite`: 224², input in [−1, 1].
    Person,
    /// `palm_detection_full.tflite`: 192², input in [0, 1].
    Palm,
    /// `face_detection_short_range.tflite`: 128², input in [−1, 1].
    Face,
}

impl DetectorKind {
    pub fn file_name(self) -> &'static str {
        match self {
            DetectorKind::Person => "pose_detection.tflite",
            DetectorKind::Palm => "palm_detection_full.tflite",
            DetectorKind::Face => "face_detection_short_range.tflite",
        }
    }

    fn anchors(self) -> SsdAnchorOptions {
        match self {
            DetectorKind::Person => SsdAnchorOptions::pose_detection(),
            DetectorKind::Palm => SsdAnchorOptions::palm_detection(),
            DetectorKind::Face => SsdAnchorOptions::face_detection_short_range(),
        }
    }

    fn decode(self) -> DecodeOptions {
        match self {
            DetectorKind::Person => DecodeOptions::pose_detection(),
            DetectorKind::Palm => DecodeOptions::palm_detection(),
            DetectorKind::Face => DecodeOptions::face_detection_short_range(),
        }
    }

    fn tensor(self) -> TensorSpec {
        let (size, range) = match self {
            DetectorKind::Person => (224, (-1.0, 1.0)),
            DetectorKind::Palm => (192, (0.0, 1.0)),
            DetectorKind::Face => (128, (-1.0, 1.0)),
        };
        TensorSpec {
            width: size,
            height: size,
            keep_aspect_ratio: true,
            range,
            border: Border::Zero,
        }
    }
}

/// NMS overlap threshold of all three graphs.
const MIN_SUPPRESSION_THRESHOLD: f32 = 0.3;

pub struct Detector {
    kind: DetectorKind,
    model: TfliteModel,
    anchors: Vec<Anchor>,
    decode: DecodeOptions,
    tensor: TensorSpec,
}

impl Detector {
    pub fn load(models_dir: &Path, kind: DetectorKind) -> Result<Self, PoseError> {
        let path = models_dir.join(kind.file_name());
        let model = super::load_model(&path)?;
        let decode = kind.decode();
        let anchors = generate_anchors(&kind.anchors());
        let outputs = model.outputs();
        let shapes_ok = outputs.len() == 2
            && outputs
                .iter()
                .any(|o| o.shape == [1, decode.num_boxes, decode.num_coords])
            && outputs.iter().any(|o| o.shape == [1, decode.num_boxes, 1]);
        if !shapes_ok || anchors.len() != decode.num_boxes {
            return Err(PoseError::UnexpectedModel {
                path,
                detail: format!(
                    "expected outputs [1, {n}, {c}] and [1, {n}, 1], got {:?}",
                    outputs.iter().map(|o| &o.shape).collect::<Vec<_>>(),
                    n = decode.num_boxes,
                    c = decode.num_coords
                ),
            });
        }
        Ok(Detector {
            kind,
            model,
            anchors,
            decode,
            tensor: kind.tensor(),
        })
    }

    pub fn kind(&self) -> DetectorKind {
        self.kind
    }

    /// Detections in `roi` (the whole image, letterboxed, when `None`), best first, in
    /// coordinates normalised to the image.
    pub fn detect(
        &self,
        image: &RgbImage,
        roi: Option<&NormRect>,
    ) -> Result<Vec<Detection>, PoseError> {
        let input = crop(image, roi, &self.tensor)?;
        let outputs = super::run_model(&self.model, input.tensor.clone())?;
        let (boxes, scores) = if outputs[0].shape[2] == self.decode.num_coords {
            (&outputs[0], &outputs[1])
        } else {
            (&outputs[1], &outputs[0])
        };
        let raw = decode_detections(&boxes.data, &scores.data, &self.anchors, &self.decode);
        let mut detections = weighted_nms(raw, MIN_SUPPRESSION_THRESHOLD);
        for d in &mut detections {
            project_detection(d, |x, y| input.project(x, y));
        }
        Ok(detections)
    }
}
