//! Video generation with AnimateDiff motion modules (preset `temporal.motion_module`).
//!
//! * [`settings`]: the preset section.
//! * [`context_windows`]: the window planner and per-frame averaging.
//! * [`video_sampler`]: the denoising loop over a batch of frames.
//! * [`video_pipeline`]: text encoding, VAE encode/decode and the loop — [`sample_video`] is
//!   what a batch renderer calls.
//! * [`batch_renderer`]: the renderer of `rotoscope render` for such presets (one joint
//!   [`sample_video`] per batch of the render plan).

pub mod batch_renderer;
pub mod context_windows;
pub mod settings;
pub mod video_pipeline;
pub mod video_sampler;

pub use batch_renderer::{motion_renderer_factory, MotionBatchRenderer, MotionRenderError};
pub use context_windows::{ContextOptions, ContextWeighting};
pub use settings::MotionModuleSettings;
pub use video_pipeline::{
    decode_video, generate_video_latents, sample_video, VideoInit, VideoRequest,
};
pub use video_sampler::{denoise_video, VideoControl, VideoDenoiseRequest, VideoError};
