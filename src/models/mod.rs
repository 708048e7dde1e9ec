//! models
pub mod attention_hook;
pub mod controlnet;
pub mod unet;
pub mod clip;
pub mod loading;
pub mod tokenizer;
pub mod vae;
