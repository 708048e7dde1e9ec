//! Diffusion sampling: latents, the denoising loops for images and videos, context windows,
//! guidance and the schedulers.

pub mod context_windows;
pub mod guidance;
pub mod image_pipeline;
pub mod latents;
pub mod sampler;
pub mod schedulers;
pub mod video_pipeline;
pub mod video_sampler;

pub use video_pipeline::{
    decode_video, generate_video_latents, sample_video, VideoInit, VideoRequest,
};
pub use video_sampler::{denoise_video, VideoControl, VideoDenoiseRequest, VideoError};
