//! Pose estimation with MediaPipe's models (body, hands, face) in OpenPose's keypoint format.
pub mod anchors;
pub mod detection;
pub mod roi;
pub mod smoothing;
