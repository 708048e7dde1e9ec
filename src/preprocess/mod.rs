//! preprocess
pub mod cache;
pub mod openpose;
pub mod pose;
pub mod softedge;
pub mod stages;
