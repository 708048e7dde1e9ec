//! preprocess

pub mod softedge;
