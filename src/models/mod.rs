//! models
pub mod clip;
pub mod conv3x3;
pub mod group_norm;
pub mod loading;
pub mod tokenizer;
pub mod vae;
