//! AnimateDiff motion modules: temporal transformers inserted into the SD1.5 UNet so that
//! the frames of a batch are denoised together (diffusers `MotionAdapter` /
//! `UNetMotionModel`; TemporalDiff and the original `mm_sd_v15*.ckpt` use the same modules
//! under other names).
//!
//! * [`temporal_transformer`]: one module (`AnimateDiffTransformer3D`).
//! * [`config`]: where modules sit in the UNet and how big they are.
//! * [`weights`]: diffusers and original weight files (`.safetensors`, `.ckpt`).
//! * [`MotionModules`]: all modules of an adapter; [`MotionModules::hook`] plugs them into a
//!   UNet call through `UNetExtras::layer_hook`.

pub mod config;
mod error;
mod motion_modules;
pub mod temporal_transformer;

pub use config::{MotionAdapterConfig, MotionLayout};
pub use error::MotionError;
pub use motion_modules::{
    load_motion_modules, MotionHook, MotionLoadOptions, MotionModuleFiles, MotionModules,
};
pub use temporal_transformer::{PositionalEncoding, TemporalTransformer, TemporalTransformerSpec};
