//! rotoscope: motion clips → frame-consistent styled animation with SD1.5 + ControlNet.
//!
//! Data flows one way (docs/ARCHITECTURE.md, "Data flow"; the module tree is in "Module tree"):
//! decode → preprocess → plan batches → render → detail → blend → encode.

pub mod alloc;
pub mod app;
pub mod bench;
pub mod cancel;
pub mod cli;
pub mod detail;
pub mod device;
pub mod diffusion;
pub mod flow;
pub mod loaders;
pub mod models;
pub mod nn;
pub mod noise;
pub mod pipeline;
pub mod pool;
pub mod preprocess;
pub mod preset;
pub mod prompt;
pub mod render;
pub mod score;
pub mod tflite;
pub mod video;
