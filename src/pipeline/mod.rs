//! The threaded stage pipeline a render runs on: decode → preprocess → render (per batch,
//! then detail and overlap blending) → encode, joined by bounded channels; the batch plan,
//! resumable work directories, progress and cancellation.

pub mod blend;
pub mod cost;
pub mod encode;
pub mod plan;
pub mod progress;
pub mod resume;
pub mod runner;
pub mod stages;
