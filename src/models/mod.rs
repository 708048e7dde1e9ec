//! models
pub mod attention_hook;
pub mod clip;
pub mod controlnet;
pub mod conv3x3;
pub mod group_norm;
pub mod embeddings;
pub mod loading;
pub mod model_stack;
pub mod lora;
pub mod single_file;
pub mod motion;
pub mod tokenizer;
pub mod unet;
pub mod vae;
