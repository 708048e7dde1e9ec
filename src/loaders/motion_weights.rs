//! Motion-module weight files and their two naming schemes.
//!
//! * diffusers `MotionAdapter` (`save_pretrained`): `down_blocks.0.motion_modules.0.proj_in.weight`,
//!   `….transformer_blocks.0.attn1.to_q.weight`, `….norm1.weight`, `….pos_embed.pe`.
//! * the original AnimateDiff checkpoints (`mm_sd_v15_v2.ckpt`, TemporalDiff, …):
//!   `down_blocks.0.motion_modules.0.temporal_transformer.proj_in.weight`,
//!   `….transformer_blocks.0.attention_blocks.0.to_q.weight`, `….norms.0.weight`, `….ff_norm.weight`,
//!   `….attention_blocks.0.pos_encoder.pe`.
//!
//! Original names are mapped to diffusers names as diffusers' own conversion does
//! (`convert_animatediff_checkpoint_to_diffusers`): `.norms.0 → .norm1`, `.norms.1 → .norm2`,
//! `.ff_norm → .norm3`, `.attention_blocks.0 → .attn1`, `.attention_blocks.1 → .attn2`,
//! `.temporal_transformer` dropped, and the `pos_encoder.pe` buffers skipped (diffusers
//! recomputes the encoding; only its length is used here). Files are `.safetensors`
//! (memory-mapped) or PyTorch pickles (`.ckpt`, `.pt`, `.pth`, `.bin`), read lazily.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::pickle::PthTensors;
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;

use crate::models::motion::MotionError;

/// How the tensors of a motion-module file are named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Naming {
    Diffusers,
    Original,
}

/// A tensor file on disk.
enum TensorFile {
    Safetensors(MmapedSafetensors),
    Pickle(PthTensors),
}

impl TensorFile {
    fn open(path: &Path) -> Result<Self, MotionError> {
        let read_err = |source| MotionError::Read {
            path: path.to_path_buf(),
            source,
        };
        let extension = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or_default()
            .to_ascii_lowercase();
        match extension.as_str() {
            // SAFETY: mapped read-only; like every mmap-based loader this assumes the file is
            // not truncated or rewritten while the weights are being read.
            "safetensors" => Ok(Self::Safetensors(
                unsafe { MmapedSafetensors::new(path) }.map_err(read_err)?,
            )),
            "ckpt" | "pt" | "pth" | "bin" => {
                let plain = PthTensors::new(path, None).map_err(read_err)?;
                if plain.tensor_infos().keys().any(|k| k.contains("motion_modules.")) {
                    return Ok(Self::Pickle(plain));
                }
                // Lightning-style checkpoints nest the weights under "state_dict".
                match PthTensors::new(path, Some("state_dict")) {
                    Ok(nested) if !nested.tensor_infos().is_empty() => Ok(Self::Pickle(nested)),
                    _ => Ok(Self::Pickle(plain)),
                }
            }
            other => Err(MotionError::Layout {
                path: path.to_path_buf(),
                reason: format!(
                    "unknown weight file type `.{other}` (expected .safetensors, .ckpt, .pt, .pth or .bin)"
                ),
            }),
        }
    }

    fn names(&self) -> Vec<String> {
        match self {
            Self::Safetensors(st) => st.tensors().into_iter().map(|(name, _)| name).collect(),
            Self::Pickle(pth) => pth.tensor_infos().keys().cloned().collect(),
        }
    }

    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        match self {
            Self::Safetensors(st) => st.get(name).ok().map(|view| view.shape().to_vec()),
            Self::Pickle(pth) => pth
                .tensor_infos()
                .get(name)
                .map(|info| info.layout.shape().dims().to_vec()),
        }
    }

    fn load(&self, name: &str, device: &Device) -> candle_core::Result<Tensor> {
        match self {
            Self::Safetensors(st) => st.load(name, device),
            Self::Pickle(pth) => pth
                .get(name)?
                .ok_or_else(|| candle_core::Error::CannotFindTensor {
                    path: name.to_string(),
                })?
                .to_device(device),
        }
    }
}

/// diffusers name of an original-layout tensor; `None` for the positional-encoding buffers.
pub fn original_to_diffusers(name: &str) -> Option<String> {
    if name.contains("pos_encoder") {
        return None;
    }
    Some(
        name.replace(".norms.0", ".norm1")
            .replace(".norms.1", ".norm2")
            .replace(".ff_norm", ".norm3")
            .replace(".attention_blocks.0", ".attn1")
            .replace(".attention_blocks.1", ".attn2")
            .replace(".temporal_transformer", ""),
    )
}

/// An opened motion-module file, seen under diffusers names.
pub struct MotionWeights {
    path: PathBuf,
    file: TensorFile,
    /// diffusers name → name in the file.
    names: BTreeMap<String, String>,
    naming: Naming,
    /// Frames covered by the stored positional encodings (`pos_embed.pe` or `pos_encoder.pe`).
    stored_encoding_frames: Option<usize>,
}

impl MotionWeights {
    pub fn open(path: &Path) -> Result<Self, MotionError> {
        let file = TensorFile::open(path)?;
        let stored = file.names();
        let naming = if stored.iter().any(|n| n.contains(".temporal_transformer.")) {
            Naming::Original
        } else if stored
            .iter()
            .any(|n| n.contains(".motion_modules.") && n.contains(".transformer_blocks."))
        {
            Naming::Diffusers
        } else {
            return Err(MotionError::Layout {
                path: path.to_path_buf(),
                reason: format!(
                    "no AnimateDiff motion-module tensors among its {} tensors",
                    stored.len()
                ),
            });
        };
        let mut names = BTreeMap::new();
        let mut encoding_name = None;
        for name in stored {
            if name.ends_with("pos_encoder.pe") || name.ends_with("pos_embed.pe") {
                encoding_name.get_or_insert_with(|| name.clone());
            }
            let renamed = match naming {
                Naming::Diffusers => Some(name.clone()),
                Naming::Original => original_to_diffusers(&name),
            };
            if let Some(renamed) = renamed {
                names.insert(renamed, name);
            }
        }
        // Encodings are (1, frames, channels).
        let stored_encoding_frames = encoding_name
            .and_then(|n| file.shape(&n))
            .and_then(|shape| shape.get(1).copied());
        Ok(Self {
            path: path.to_path_buf(),
            file,
            names,
            naming,
            stored_encoding_frames,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn naming(&self) -> Naming {
        self.naming
    }

    /// Tensor names in diffusers' layout.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.keys().map(String::as_str)
    }

    /// Whether the (diffusers-named) tensors include the positional encodings.
    pub fn has_stored_encodings(&self) -> bool {
        self.names.keys().any(|n| n.ends_with(".pos_embed.pe"))
    }

    pub fn stored_encoding_frames(&self) -> Option<usize> {
        self.stored_encoding_frames
    }

    /// An f32 `VarBuilder` over the diffusers names (tensors are read when asked for).
    pub fn into_var_builder(self, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(RenamedTensors(self)), DType::F32, device.clone())
    }
}

/// Serves a file's tensors under diffusers names.
struct RenamedTensors(MotionWeights);

impl SimpleBackend for RenamedTensors {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let tensor = self.get_unchecked(name, dtype, dev)?;
        if tensor.shape() != &shape {
            return Err(candle_core::Error::UnexpectedShape {
                msg: format!("shape mismatch for {name}"),
                expected: shape,
                got: tensor.shape().clone(),
            });
        }
        Ok(tensor)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let stored =
            self.0
                .names
                .get(name)
                .ok_or_else(|| candle_core::Error::CannotFindTensor {
                    path: name.to_string(),
                })?;
        self.0.file.load(stored, dev)?.to_dtype(dtype)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.0.names.contains_key(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn original_names_map_like_diffusers_conversion() {
        let cases = [
            (
                "down_blocks.0.motion_modules.1.temporal_transformer.transformer_blocks.0.attention_blocks.1.to_out.0.weight",
                Some("down_blocks.0.motion_modules.1.transformer_blocks.0.attn2.to_out.0.weight"),
            ),
            (
                "mid_block.motion_modules.0.temporal_transformer.transformer_blocks.1.norms.0.bias",
                Some("mid_block.motion_modules.0.transformer_blocks.1.norm1.bias"),
            ),
            (
                "up_blocks.3.motion_modules.2.temporal_transformer.transformer_blocks.0.ff_norm.weight",
                Some("up_blocks.3.motion_modules.2.transformer_blocks.0.norm3.weight"),
            ),
            (
                "up_blocks.0.motion_modules.0.temporal_transformer.proj_in.weight",
                Some("up_blocks.0.motion_modules.0.proj_in.weight"),
            ),
            (
                "down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.0.pos_encoder.pe",
                None,
            ),
        ];
        for (original, diffusers) in cases {
            assert_eq!(original_to_diffusers(original).as_deref(), diffusers);
        }
    }
}
