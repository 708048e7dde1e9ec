//! Diffusion sampling: latents, the denoising loops for images and videos, context windows,
//! guidance, DeepCache and the schedulers.

pub mod context_windows;
pub mod deep_cache;
pub mod guidance;
pub mod image_pipeline;
pub mod latents;
pub mod sampler;
pub mod schedulers;
pub mod video_pipeline;

pub use video_pipeline::{
    decode_video, denoise_video, generate_video_latents, sample_video, VideoControl,
    VideoDenoiseRequest, VideoError, VideoInit, VideoRequest,
};
