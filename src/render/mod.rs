//! Rendering: batch planning, the threaded stage pipeline, and the renderers that plug
//! into it.

pub mod pipeline;
pub mod plan;
pub mod progress;
pub mod stages;
