//! rotoscope: motion clips → frame-consistent styled animation with SD1.5 + ControlNet.
//!
//! Data flows one way (see DESIGN.md §2):
//! decode → preprocess → plan batches → render → detail → blend → encode.

pub mod alloc;
pub mod bench;
pub mod cli;
pub mod detail;
pub mod flow;
pub mod models;
pub mod noise;
pub mod pool;
pub mod preprocess;
pub mod preset;
pub mod prompt;
pub mod render;
pub mod schedulers;
pub mod score;
pub mod video;
