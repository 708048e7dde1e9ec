//! preprocess
pub mod tflite;
