//! A single-file checkpoint (A1111 / civitai `.safetensors`, LDM `.ckpt`): which components it
//! holds, and each component's weights under diffusers names.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use super::keys::{self, Transform};
use super::weights::{TensorFile, WeightMap, WeightSource};
use super::SingleFileError;

/// The text encoder flavour found in a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextEncoderKind {
    /// OpenAI CLIP ViT-L/14 (SD1.x): transformers layout under `cond_stage_model.transformer.`.
    OpenAiClip,
    /// OpenCLIP ViT-H/14 (SD2.x): OpenCLIP layout under `cond_stage_model.model.`.
    OpenClip,
}

/// Where a ControlNet's tensors are and how they are named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlNetLayout {
    /// Original layout, keys under this prefix (`control_model.` or none).
    Ldm { prefix: String },
    /// Already diffusers names (`controlnet_cond_embedding.conv_in.weight`, ...).
    Diffusers,
}

/// Where a VAE's tensors are and how they are named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VaeLayout {
    /// Original layout, keys under this prefix (`first_stage_model.` in full checkpoints,
    /// none in standalone VAE files such as `vae-ft-mse-840000-ema-pruned.safetensors`).
    Ldm { prefix: String },
    /// diffusers names at the root (`encoder.down_blocks.0...`).
    Diffusers,
}

/// What a single file contains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contents {
    pub unet: bool,
    pub vae: Option<VaeLayout>,
    pub text_encoder: Option<TextEncoderKind>,
    pub controlnet: Option<ControlNetLayout>,
    /// A "difference" ControlNet (its shared weights stored minus the base UNet's).
    pub controlnet_difference: bool,
}

impl Contents {
    /// Classifies tensor names (pure).
    pub fn detect<'a>(names: impl Iterator<Item = &'a str> + Clone) -> Self {
        let any = |prefix: &str| names.clone().any(|n| n.starts_with(prefix));
        let has = |name: &str| names.clone().any(|n| n == name);
        let vae = if any(keys::LDM_VAE_PREFIX) {
            Some(VaeLayout::Ldm {
                prefix: keys::LDM_VAE_PREFIX.into(),
            })
        } else if any("vae.encoder.") {
            Some(VaeLayout::Ldm {
                prefix: "vae.".into(),
            })
        } else if has("encoder.conv_in.weight") && any("decoder.up.") {
            Some(VaeLayout::Ldm {
                prefix: String::new(),
            })
        } else if has("encoder.conv_in.weight") && any("decoder.up_blocks.") {
            Some(VaeLayout::Diffusers)
        } else {
            None
        };
        let text_encoder = if any(keys::LDM_CLIP_PREFIX) {
            Some(TextEncoderKind::OpenAiClip)
        } else if any(keys::LDM_OPEN_CLIP_PREFIX) {
            Some(TextEncoderKind::OpenClip)
        } else {
            None
        };
        let controlnet = if any("control_model.input_hint_block.") {
            Some(ControlNetLayout::Ldm {
                prefix: keys::LDM_CONTROLNET_PREFIX.into(),
            })
        } else if any("input_hint_block.") {
            Some(ControlNetLayout::Ldm {
                prefix: String::new(),
            })
        } else if has("controlnet_cond_embedding.conv_in.weight") {
            Some(ControlNetLayout::Diffusers)
        } else {
            None
        };
        Self {
            unet: any(keys::LDM_UNET_PREFIX),
            vae,
            text_encoder,
            controlnet,
            controlnet_difference: has("difference"),
        }
    }

    /// Human-readable list for messages ("UNet, VAE, text encoder").
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.unet {
            parts.push("UNet");
        }
        if self.vae.is_some() {
            parts.push("VAE");
        }
        match self.text_encoder {
            Some(TextEncoderKind::OpenAiClip) => parts.push("CLIP text encoder"),
            Some(TextEncoderKind::OpenClip) => parts.push("OpenCLIP text encoder"),
            None => {}
        }
        if self.controlnet.is_some() {
            parts.push("ControlNet");
        }
        if parts.is_empty() {
            "no Stable Diffusion component".into()
        } else {
            parts.join(", ")
        }
    }
}

/// An opened single-file checkpoint.
#[derive(Debug, Clone)]
pub struct SingleFileCheckpoint {
    file: Arc<TensorFile>,
    contents: Contents,
}

/// The tensors under `prefix`, with the prefix removed, and their shapes.
pub type ShapeMap = BTreeMap<String, Vec<usize>>;

impl SingleFileCheckpoint {
    pub fn open(path: &Path) -> Result<Self, SingleFileError> {
        Ok(Self::from_file(TensorFile::open(path)?))
    }

    /// A weight file already opened (so it is not read twice).
    pub fn from_file(file: Arc<TensorFile>) -> Self {
        let contents = Contents::detect(file.shapes().keys().map(String::as_str));
        Self { file, contents }
    }

    pub fn path(&self) -> &Path {
        self.file.path()
    }

    pub fn file(&self) -> &Arc<TensorFile> {
        &self.file
    }

    pub fn contents(&self) -> &Contents {
        &self.contents
    }

    /// Shapes of the tensors under `prefix`, keyed without it.
    pub fn shapes_under(&self, prefix: &str) -> ShapeMap {
        self.file
            .shapes()
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix(prefix)?.to_string(), v.clone())))
            .collect()
    }

    fn missing(&self, component: &'static str) -> SingleFileError {
        SingleFileError::MissingComponent {
            path: self.path().to_path_buf(),
            component,
            found: self.contents.describe(),
        }
    }

    /// Builds a map by sending every key under `prefix` through `rename`.
    fn mapped(
        &self,
        label: String,
        prefix: &str,
        mut rename: impl FnMut(&str) -> Vec<(String, Transform)>,
    ) -> WeightMap {
        let mut map = WeightMap::new(label);
        for key in self.file.shapes().keys() {
            let Some(local) = key.strip_prefix(prefix) else {
                continue;
            };
            for (name, transform) in rename(local) {
                if let Some(source) = WeightSource::new(&self.file, key, transform) {
                    map.insert(name, source);
                }
            }
        }
        map
    }

    fn label(&self, component: &str) -> String {
        format!("{component} of {}", self.path().display())
    }

    /// The UNet's weights; `layers_per_block` as in its diffusers config.
    pub fn unet_weights(&self, layers_per_block: usize) -> Result<WeightMap, SingleFileError> {
        if !self.contents.unet {
            return Err(self.missing("UNet"));
        }
        Ok(self.mapped(self.label("UNet"), keys::LDM_UNET_PREFIX, |k| {
            keys::unet_ldm_to_diffusers(k, layers_per_block)
                .map(|n| (n, Transform::Identity))
                .into_iter()
                .collect()
        }))
    }

    /// The VAE's weights; `up_blocks` = number of decoder blocks in its diffusers config.
    pub fn vae_weights(&self, up_blocks: usize) -> Result<WeightMap, SingleFileError> {
        match &self.contents.vae {
            None => Err(self.missing("VAE")),
            Some(VaeLayout::Diffusers) => Ok(WeightMap::identity(self.label("VAE"), &self.file)),
            Some(VaeLayout::Ldm { prefix }) => Ok(self.mapped(self.label("VAE"), prefix, |k| {
                keys::vae_ldm_to_diffusers(k, up_blocks)
                    .into_iter()
                    .collect()
            })),
        }
    }

    /// The text encoder's weights in transformers' `CLIPTextModel` layout. `layers` and
    /// `width` (hidden size) come from its config; OpenCLIP layers beyond `layers` are
    /// dropped, as diffusers does for SD2.
    pub fn text_encoder_weights(
        &self,
        layers: usize,
        width: usize,
    ) -> Result<WeightMap, SingleFileError> {
        match self.contents.text_encoder {
            None => Err(self.missing("text encoder")),
            Some(TextEncoderKind::OpenAiClip) => {
                Ok(
                    self.mapped(self.label("text encoder"), keys::LDM_CLIP_PREFIX, |k| {
                        keys::clip_ldm_to_diffusers(k)
                            .map(|n| (n, Transform::Identity))
                            .into_iter()
                            .collect()
                    }),
                )
            }
            Some(TextEncoderKind::OpenClip) => Ok(self.mapped(
                self.label("text encoder"),
                keys::LDM_OPEN_CLIP_PREFIX,
                |k| keys::open_clip_ldm_to_diffusers(k, layers, width),
            )),
        }
    }

    /// Index of the last conv of the ControlNet's `input_hint_block` (its `conv_out`).
    pub fn controlnet_hint_last(&self) -> Option<usize> {
        let Some(ControlNetLayout::Ldm { prefix }) = &self.contents.controlnet else {
            return None;
        };
        self.shapes_under(&format!("{prefix}input_hint_block."))
            .keys()
            .filter_map(|k| k.split('.').next()?.parse::<usize>().ok())
            .max()
    }

    /// The ControlNet's weights; `layers_per_block` as in its diffusers config.
    pub fn controlnet_weights(
        &self,
        layers_per_block: usize,
    ) -> Result<WeightMap, SingleFileError> {
        match &self.contents.controlnet {
            None => Err(self.missing("ControlNet")),
            Some(ControlNetLayout::Diffusers) => {
                Ok(WeightMap::identity(self.label("ControlNet"), &self.file))
            }
            Some(ControlNetLayout::Ldm { prefix }) => {
                let hint_last = self.controlnet_hint_last().unwrap_or(0);
                Ok(self.mapped(self.label("ControlNet"), prefix, |k| {
                    keys::controlnet_ldm_to_diffusers(k, layers_per_block, hint_last)
                        .map(|n| (n, Transform::Identity))
                        .into_iter()
                        .collect()
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_components() {
        let full = [
            "model.diffusion_model.input_blocks.0.0.weight",
            "first_stage_model.encoder.conv_in.weight",
            "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight",
        ];
        let c = Contents::detect(full.iter().copied());
        assert!(c.unet);
        assert_eq!(
            c.vae,
            Some(VaeLayout::Ldm {
                prefix: "first_stage_model.".into()
            })
        );
        assert_eq!(c.text_encoder, Some(TextEncoderKind::OpenAiClip));
        assert_eq!(c.controlnet, None);

        let cn = ["control_model.input_hint_block.0.weight", "difference"];
        let c = Contents::detect(cn.iter().copied());
        assert!(c.controlnet_difference);
        assert_eq!(
            c.controlnet,
            Some(ControlNetLayout::Ldm {
                prefix: "control_model.".into()
            })
        );
        assert_eq!(c.describe(), "ControlNet");

        let vae = [
            "encoder.conv_in.weight",
            "decoder.up.0.block.0.conv1.weight",
        ];
        assert_eq!(
            Contents::detect(vae.iter().copied()).vae,
            Some(VaeLayout::Ldm {
                prefix: String::new()
            })
        );
        let sd2 = ["cond_stage_model.model.token_embedding.weight"];
        assert_eq!(
            Contents::detect(sd2.iter().copied()).text_encoder,
            Some(TextEncoderKind::OpenClip)
        );
    }
}
