//! Stable Diffusion 1.x / 2.x denoising UNet (diffusers `UNet2DConditionModel`), written for
//! this project rather than taken from candle-transformers, which lacks ControlNet residuals,
//! attention hooks and memory-bounded attention.
//!
//! * [`config`]: diffusers `config.json`.
//! * [`crate::nn::attention`]: memory-bounded (chunked) attention, from the layer library.
//! * `resnet`, `transformer`, `blocks`: the building blocks, with diffusers' weight names.
//! * [`UNet2DConditionModel`]: the model; [`UNetExtras`] carries ControlNet residuals and the
//!   temporal hooks of [`crate::models::attention_hook`].
//! * [`deep_cache`]: where DeepCache splits the UNet (`forward_cached`).

pub(crate) mod blocks;
pub mod config;
pub mod deep_cache;
pub(crate) mod embeddings;
mod error;
pub(crate) mod resnet;
pub(crate) mod transformer;
mod unet_2d_condition;

pub use config::{PerBlock, UNetConfig};
pub use error::{Result, UNetError};
pub use unet_2d_condition::{UNet2DConditionModel, UNetExtras};

use crate::models::attention_hook::{LayerOutputHook, SelfAttentionHook};
use crate::nn::AttentionBudget;
use candle_core::Tensor;

/// Per-call state shared by every block of one forward pass.
pub(crate) struct ForwardContext<'a> {
    /// `silu(time_embedding)`, `(batch, time_embed_dim)`.
    pub temb_act: &'a Tensor,
    pub encoder_hidden_states: &'a Tensor,
    pub attention_hook: Option<&'a dyn SelfAttentionHook>,
    pub layer_hook: Option<&'a dyn LayerOutputHook>,
    pub budget: AttentionBudget,
}
