//! Rendering: batch planning, the stage pipeline, blending.

pub mod blend;
