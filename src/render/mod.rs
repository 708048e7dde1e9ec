//! Rendering: batch planning, the threaded stage pipeline, and the renderers that plug
//! into it.

pub mod motion;
pub mod passthrough;
pub mod sd_renderer;
pub mod temporal;
