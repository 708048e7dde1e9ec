//! models
pub mod attention_hook;
pub mod controlnet;
pub mod unet;
