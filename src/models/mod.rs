//! The networks: CLIP text encoder, UNet, ControlNet, VAE (KL and the tiny TAESD) and AnimateDiff motion modules,
//! built from the layers of [`crate::nn`], and the [`family`] description of SD1.x / SD2.x.
pub mod attention_hook;
pub mod autoencoder_tiny;
pub mod clip;
pub mod controlnet;
pub mod family;
pub mod motion;
pub mod tokenizer;
pub mod unet;
pub mod vae;
