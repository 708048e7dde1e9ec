//! Rendering: batch planning, the threaded stage pipeline, and the renderers that plug
//! into it.

pub mod guidance;
pub mod image_pipeline;
pub mod model_cache;
pub mod motion;
pub mod pipeline;
pub mod plan;
pub mod progress;
pub mod resume;
pub mod sampler;
pub mod sd_renderer;
pub mod stages;
pub mod temporal;
