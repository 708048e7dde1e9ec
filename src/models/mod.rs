//! models
pub mod attention_hook;
pub mod clip;
pub mod controlnet;
pub(crate) mod conv2d;
pub mod conv3x3;
pub(crate) mod cpu;
pub mod embeddings;
pub mod group_norm;
pub mod loading;
pub mod lora;
pub mod model_stack;
pub mod motion;
pub mod single_file;
pub mod tensor_diff;
pub mod tokenizer;
pub mod unet;
pub mod vae;
