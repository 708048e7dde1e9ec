//! The batch renderer of `rotoscope render` for presets with `temporal.motion_module`
//! (AnimateDiff): one joint [`crate::diffusion::video_pipeline::sample_video`] per batch of
//! the render plan, over the context windows of [`crate::diffusion::context_windows`].

pub mod batch_renderer;

pub use batch_renderer::{motion_renderer_factory, MotionBatchRenderer, MotionRenderError};
