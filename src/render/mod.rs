//! render
pub mod guidance;
pub mod image_pipeline;
pub mod sampler;
