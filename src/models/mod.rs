//! models
pub mod attention_hook;
pub mod clip;
pub mod controlnet;
pub mod motion;
pub mod tokenizer;
pub mod unet;
pub mod vae;
