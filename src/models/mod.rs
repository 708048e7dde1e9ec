//! models
pub mod attention_hook;
pub mod clip;
pub mod controlnet;
pub mod conv3x3;
pub mod loading;
pub mod tokenizer;
pub mod unet;
pub mod vae;
