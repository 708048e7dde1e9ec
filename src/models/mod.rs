//! models
pub mod clip;
pub mod loading;
pub mod tokenizer;
pub mod vae;
