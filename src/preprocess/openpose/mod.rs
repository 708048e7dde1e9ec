//! OpenPose-format keypoints: the data types, ControlNet-exact drawing and the JSON format.
pub mod draw;
pub mod json;
pub mod json_stage;
pub mod keypoints;
pub mod raster;

pub use draw::{draw_pose_map, DrawParts};
pub use keypoints::{Body, BodyPart, Face, Hand, Keypoint, Person, PoseFrame};
