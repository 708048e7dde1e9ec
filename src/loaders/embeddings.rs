//! Textual-inversion embeddings, loaded the way A1111 loads them
//! (`modules/textual_inversion/textual_inversion.py`, `create_embedding_from_data`):
//!
//! * the trigger word is the file name without extension (`easynegative.safetensors` →
//!   `easynegative`);
//! * a file holding `string_to_param` (A1111's own `.pt` training output, or a safetensors
//!   conversion of it with keys `string_to_param.*`) uses that single tensor;
//! * otherwise the file must hold exactly one tensor, whatever its name (`emb_params` in
//!   A1111-saved safetensors, `<token>` in diffusers' `learned_embeds.safetensors/.bin`);
//! * a 1-D tensor is one vector.
//!
//! `.pt` / `.bin` pickles are read with candle's restricted unpickler (no code runs); files
//! whose `string_to_param` is a pickled `torch.nn.ParameterDict` module (embeddings trained
//! with torch 1.11-era A1111) are not readable that way: convert them to safetensors.
//! Not supported: embeddings hidden in PNG/WebP images, SDXL embeddings (`clip_l` + `clip_g`).

use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor};

use crate::loaders::single_file::{is_pickle_path, TensorFile};

#[derive(Debug, thiserror::Error)]
pub enum EmbeddingError {
    #[error("embedding {path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("embedding {path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: candle_core::Error,
    },
    #[error("embedding {path} has vectors of width {got}, the text encoder's is {expected} (an embedding for another model family?)")]
    Width {
        path: PathBuf,
        got: usize,
        expected: usize,
    },
}

/// One embedding: a trigger word and the token vectors that replace it.
#[derive(Debug, Clone)]
pub struct TextualInversion {
    pub name: String,
    /// `[vectors, hidden]`, f32.
    pub vectors: Tensor,
    pub path: PathBuf,
}

impl TextualInversion {
    pub fn vector_count(&self) -> usize {
        self.vectors.dims()[0]
    }

    /// Loads `path`; `hidden` is the text encoder's width, checked against the vectors.
    pub fn load(path: &Path, hidden: usize) -> Result<Self, EmbeddingError> {
        let invalid = |message: String| EmbeddingError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let read = |source| EmbeddingError::Read {
            path: path.to_path_buf(),
            source,
        };
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| invalid("no file name to use as the trigger word".into()))?;
        let file = if is_pickle_path(path) {
            TensorFile::open_with_key(path, Some("string_to_param"))
                .or_else(|_| TensorFile::open_with_key(path, None))
        } else {
            TensorFile::open_with_key(path, None)
        }
        .map_err(|e| invalid(e.to_string()))?;
        let names: Vec<&String> = file.shapes().keys().collect();
        let chosen: Vec<&String> = {
            let params: Vec<&String> = names
                .iter()
                .copied()
                .filter(|n| n.starts_with("string_to_param."))
                .collect();
            if params.is_empty() {
                names.clone()
            } else {
                params
            }
        };
        if names
            .iter()
            .any(|n| n.as_str() == "clip_g" || n.as_str() == "clip_l")
        {
            return Err(invalid(
                "an SDXL embedding (clip_l + clip_g); SD1.x/2.x embeddings hold one tensor".into(),
            ));
        }
        let key = match chosen.as_slice() {
            [one] => (*one).clone(),
            [] => return Err(invalid("holds no tensor".into())),
            many => {
                return Err(invalid(format!(
                    "holds {} tensors ({}); an embedding file has exactly one term",
                    many.len(),
                    many.iter()
                        .take(4)
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )))
            }
        };
        let tensor = file
            .load(&key, &crate::device::host())
            .and_then(|t| t.to_dtype(DType::F32))
            .map_err(read)?;
        let vectors = match tensor.rank() {
            1 => tensor.unsqueeze(0).map_err(read)?,
            2 => tensor,
            _ => {
                return Err(invalid(format!(
                    "tensor {key} has shape {:?}, expected [vectors, width]",
                    tensor.dims()
                )))
            }
        };
        let (count, width) = vectors.dims2().map_err(read)?;
        if width != hidden {
            return Err(EmbeddingError::Width {
                path: path.to_path_buf(),
                got: width,
                expected: hidden,
            });
        }
        if count == 0 {
            return Err(invalid("holds zero vectors".into()));
        }
        Ok(Self {
            name,
            vectors,
            path: path.to_path_buf(),
        })
    }
}
