//! Errors of loading and running motion modules.

use std::path::PathBuf;

use crate::loaders::source::LoadError;
use crate::models::unet::UNetError;

#[derive(Debug, thiserror::Error)]
pub enum MotionError {
    #[error("cannot read motion module config {path}: {source}")]
    ConfigRead {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot parse motion module config {path}: {source}")]
    ConfigParse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("cannot read motion module weights {path}: {source}")]
    Read {
        path: PathBuf,
        source: candle_core::Error,
    },
    /// The file is not a motion module, or its modules do not fit the UNet.
    #[error("motion module {path}: {reason}")]
    Layout { path: PathBuf, reason: String },
    /// A motion-module variant this implementation does not run (e.g. PIA's extra input conv).
    #[error("motion module {path}: `{field}` = {value} is not supported ({supported})")]
    Unsupported {
        path: PathBuf,
        field: &'static str,
        value: String,
        supported: &'static str,
    },
    /// Missing or mis-shaped tensors while building the modules (the message names the tensor).
    #[error("motion module {path}: {source}")]
    Weights {
        path: PathBuf,
        source: candle_core::Error,
    },
    #[error(transparent)]
    Files(#[from] LoadError),
    #[error("UNet config: {0}")]
    UNet(#[from] UNetError),
}
