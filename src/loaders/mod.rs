//! Loading models as users have them: model sources (local folders, the hub), the model
//! stack a preset names, single-file checkpoints, the tiny VAE's files (TAESD), LoRA, textual inversion, motion-module
//! weights, and the cache that keeps loaded weights from one job to the next.

pub mod embeddings;
pub mod lora;
pub mod model_cache;
pub mod model_stack;
pub mod motion_weights;
pub mod sd_models;
pub mod single_file;
pub mod source;
pub mod taesd;
