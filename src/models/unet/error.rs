//! Errors of the UNet and ControlNet models.

use std::path::PathBuf;

/// Everything that can go wrong while configuring, loading or running a UNet.
#[derive(Debug, thiserror::Error)]
pub enum UNetError {
    #[error("cannot read model config {path}: {source}")]
    ConfigRead {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot parse model config {path}: {source}")]
    ConfigParse {
        path: PathBuf,
        source: serde_json::Error,
    },
    /// A config field holds a value this implementation does not support (SD1.5/SD2.x-style
    /// models only); the message says what is supported.
    #[error("unsupported model config: `{field}` = {value} ({supported})")]
    Unsupported {
        field: &'static str,
        value: String,
        supported: &'static str,
    },
    /// A config field is inconsistent with the others (wrong list length, channel counts
    /// not divisible by the head or group count, ...).
    #[error("invalid model config: `{field}`: {reason}")]
    InvalidConfig { field: &'static str, reason: String },
    /// A forward input does not fit the model (channels, batch, residual shapes).
    #[error("invalid input `{input}`: {reason}")]
    InvalidInput { input: &'static str, reason: String },
    /// Tensor errors, including missing or mis-shaped weights (the message names the tensor).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, UNetError>;
