//! The frame renderers that plug into the pipeline: the SD frame renderer (its config and
//! the models it shares), pass-through, the temporal conditioning, AnimateDiff batches.

pub mod motion;
pub mod passthrough;
pub mod sd_config;
pub mod sd_renderer;
pub mod shared_models;
pub mod temporal;
