//! preprocess
pub mod openpose;
pub mod pose;
