//! preprocess
pub mod openpose;
pub mod pose;
pub mod tflite;

pub mod softedge;
