//! Rendering: batch planning, the threaded stage pipeline, and the renderers that plug
//! into it.

pub mod plan;
