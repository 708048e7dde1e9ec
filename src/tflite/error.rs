//! Errors of the `.tflite` reader and interpreter. Each names the model file, and where it
//! applies the operator (index and kind) or tensor involved.

use std::path::PathBuf;

use super::flatbuffer::FlatbufferError;

#[derive(Debug, thiserror::Error)]
pub enum TfliteError {
    #[error("cannot read TFLite model {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("TFLite model {path} is malformed: {source}")]
    Malformed {
        path: PathBuf,
        #[source]
        source: FlatbufferError,
    },
    #[error(
        "TFLite model {path}: operator #{index} is {op}, which this interpreter does not support"
    )]
    UnsupportedOp {
        path: PathBuf,
        index: usize,
        op: String,
    },
    #[error("TFLite model {path}: operator #{index} ({op}): {detail}")]
    InvalidOp {
        path: PathBuf,
        index: usize,
        op: String,
        detail: String,
    },
    #[error("TFLite model {path}: tensor '{tensor}': {detail}")]
    InvalidTensor {
        path: PathBuf,
        tensor: String,
        detail: String,
    },
    #[error("TFLite model {path}: {detail}")]
    BadInput { path: PathBuf, detail: String },
    #[error("TFLite model {path}: {source}")]
    Candle {
        path: PathBuf,
        #[source]
        source: candle_core::Error,
    },
}
