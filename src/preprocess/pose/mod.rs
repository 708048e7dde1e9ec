//! Pose estimation with MediaPipe's models (body, hands, face) in OpenPose's keypoint format.
