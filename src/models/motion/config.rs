//! Where the motion modules of an adapter sit in a UNet and how big each is.
//!
//! diffusers' `UNetMotionModel` runs one module after each (resnet, attention) layer of every
//! down and up block and after each mid-block attention, named like the adapter's weights:
//! `down_blocks.{i}.motion_modules.{j}`, `mid_block.motion_modules.{j}`,
//! `up_blocks.{i}.motion_modules.{j}`. Down block `i` uses the adapter's heads for block `i`,
//! up block `i` those of block `n-1-i` (the reversed list), the mid block those of the last block.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::error::MotionError;
use super::temporal_transformer::{PositionalEncoding, TemporalTransformerSpec};
use crate::models::unet::config::MidBlockPolicy;
use crate::models::unet::{PerBlock, UNetConfig};

/// Heads of every AnimateDiff SD1.5 motion module (v1, v2, v3, TemporalDiff); original
/// checkpoints carry no config, so this is what their modules are built with.
pub const ORIGINAL_HEADS: usize = 8;

/// Frames covered by the positional encoding when nothing says otherwise (diffusers' default).
pub const DEFAULT_MAX_FRAMES: usize = 32;

/// diffusers `MotionAdapter` `config.json` (the fields that shape the modules).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct MotionAdapterConfig {
    #[serde(default = "default_block_out_channels")]
    pub block_out_channels: Vec<usize>,
    #[serde(default = "default_motion_layers")]
    pub motion_layers_per_block: PerBlock<usize>,
    #[serde(default = "one_per_block")]
    pub motion_transformer_layers_per_block: PerBlock<usize>,
    #[serde(default = "one_per_block")]
    pub motion_transformer_layers_per_mid_block: PerBlock<usize>,
    #[serde(default = "default_heads")]
    pub motion_num_attention_heads: PerBlock<usize>,
    #[serde(default = "default_max_frames")]
    pub motion_max_seq_length: usize,
    #[serde(default = "yes")]
    pub use_motion_mid_block: bool,
    /// PIA's image-conditioning input conv; not supported.
    #[serde(default)]
    pub conv_in_channels: Option<usize>,
}

fn default_block_out_channels() -> Vec<usize> {
    vec![320, 640, 1280, 1280]
}
fn default_motion_layers() -> PerBlock<usize> {
    PerBlock::Same(2)
}
fn one_per_block() -> PerBlock<usize> {
    PerBlock::Same(1)
}
fn default_heads() -> PerBlock<usize> {
    PerBlock::Same(8)
}
fn default_max_frames() -> usize {
    DEFAULT_MAX_FRAMES
}
fn yes() -> bool {
    true
}

impl MotionAdapterConfig {
    pub fn from_file(path: &Path) -> Result<Self, MotionError> {
        let text = std::fs::read_to_string(path).map_err(|source| MotionError::ConfigRead {
            path: path.to_path_buf(),
            source,
        })?;
        let config: Self =
            serde_json::from_str(&text).map_err(|source| MotionError::ConfigParse {
                path: path.to_path_buf(),
                source,
            })?;
        config.check_supported(path)?;
        Ok(config)
    }

    fn check_supported(&self, path: &Path) -> Result<(), MotionError> {
        if let Some(channels) = self.conv_in_channels {
            return Err(MotionError::Unsupported {
                path: path.to_path_buf(),
                field: "conv_in_channels",
                value: channels.to_string(),
                supported: "null: PIA image-conditioned adapters are not supported",
            });
        }
        Ok(())
    }

    /// Heads per down block.
    pub fn heads(&self) -> Result<Vec<usize>, MotionError> {
        Ok(self
            .motion_num_attention_heads
            .resolve(self.block_out_channels.len(), "motion_num_attention_heads")?)
    }
}

/// One place of the UNet where a motion module can run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleSlot {
    /// `down_blocks.{i}.motion_modules.{j}` etc.
    pub position: String,
    pub channels: usize,
    /// Index into the per-block head list.
    pub heads_block: usize,
    /// Transformer blocks of a module at this slot: down/up blocks use the adapter's per-block
    /// depth, the mid block its mid depth.
    pub depth_block: DepthSource,
    /// Mid-block modules are optional (v1 adapters have none); down/up modules are not.
    pub required: bool,
}

/// Which depth setting applies to a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DepthSource {
    Block(usize),
    Mid(usize),
}

/// Every slot of a UNet, in forward order (down, mid, up).
pub fn unet_slots(unet: &UNetConfig) -> Result<Vec<ModuleSlot>, MotionError> {
    let encoder = unet.encoder_spec(MidBlockPolicy::UNet)?;
    let up = unet.up_block_specs()?;
    let n = encoder.down.len();
    let mut slots = Vec::new();
    for (i, block) in encoder.down.iter().enumerate() {
        for j in 0..block.layers {
            slots.push(ModuleSlot {
                position: format!("down_blocks.{i}.motion_modules.{j}"),
                channels: block.out_channels,
                heads_block: i,
                depth_block: DepthSource::Block(i),
                required: true,
            });
        }
    }
    if let Some(mid) = &encoder.mid {
        for j in 0..mid.attention_layers {
            slots.push(ModuleSlot {
                position: format!("mid_block.motion_modules.{j}"),
                channels: mid.channels,
                heads_block: n - 1,
                depth_block: DepthSource::Mid(j),
                required: false,
            });
        }
    }
    for (i, block) in up.iter().enumerate() {
        for j in 0..block.layers {
            slots.push(ModuleSlot {
                position: format!("up_blocks.{i}.motion_modules.{j}"),
                channels: block.out_channels,
                heads_block: n - 1 - i,
                depth_block: DepthSource::Block(n - 1 - i),
                required: true,
            });
        }
    }
    Ok(slots)
}

/// The modules to build: position → shape, and where the positional encoding comes from.
#[derive(Debug, Clone, PartialEq)]
pub struct MotionLayout {
    pub modules: BTreeMap<String, TemporalTransformerSpec>,
    pub encoding: PositionalEncoding,
    /// Longest frame sequence (context window) the modules accept.
    pub max_frames: usize,
}

impl MotionLayout {
    /// The layout diffusers' `UNetMotionModel.from_unet2d(unet, MotionAdapter(**config))`
    /// builds (used for synthetic weights; files use [`MotionLayout::from_tensor_names`]).
    pub fn from_config(
        unet: &UNetConfig,
        config: &MotionAdapterConfig,
        encoding: PositionalEncoding,
    ) -> Result<Self, MotionError> {
        let path = PathBuf::from("<config>");
        check_blocks(unet, &config.block_out_channels, &path)?;
        let n = config.block_out_channels.len();
        let adapter_layers = config
            .motion_layers_per_block
            .resolve(n, "motion_layers_per_block")?;
        let unet_layers = unet.layers_per_block.resolve(n, "layers_per_block")?;
        if adapter_layers != unet_layers {
            return Err(MotionError::Layout {
                path,
                reason: format!(
                    "motion_layers_per_block {adapter_layers:?} differs from the UNet's layers_per_block {unet_layers:?}"
                ),
            });
        }
        let heads = config.heads()?;
        let depth = config
            .motion_transformer_layers_per_block
            .resolve(n, "motion_transformer_layers_per_block")?;
        let norm_groups = norm_groups(unet)?;
        let slots = unet_slots(unet)?;
        let mid_layers = slots
            .iter()
            .filter(|s| matches!(s.depth_block, DepthSource::Mid(_)))
            .count();
        let mid_depth = config
            .motion_transformer_layers_per_mid_block
            .resolve(mid_layers, "motion_transformer_layers_per_mid_block")?;
        let mut modules = BTreeMap::new();
        for slot in slots {
            let depth = match slot.depth_block {
                DepthSource::Block(i) => depth[i],
                DepthSource::Mid(_) if !config.use_motion_mid_block => continue,
                DepthSource::Mid(j) => mid_depth[j],
            };
            modules.insert(
                slot.position,
                TemporalTransformerSpec {
                    channels: slot.channels,
                    heads: heads[slot.heads_block],
                    depth,
                    norm_groups,
                    max_frames: config.motion_max_seq_length,
                },
            );
        }
        Ok(Self {
            modules,
            encoding,
            max_frames: config.motion_max_seq_length,
        })
    }

    /// Infers the modules from the (diffusers-named) tensors of a weight file: which slots
    /// have a module and how many transformer blocks each has. Every down/up slot of the UNet
    /// must have one; a tensor outside the UNet's slots is an error (an adapter made for
    /// another UNet).
    pub fn from_tensor_names<'a>(
        unet: &UNetConfig,
        names: impl IntoIterator<Item = &'a str>,
        heads: &[usize],
        max_frames: usize,
        encoding: PositionalEncoding,
        path: &Path,
    ) -> Result<Self, MotionError> {
        let layout_err = |reason: String| MotionError::Layout {
            path: path.to_path_buf(),
            reason,
        };
        let slots = unet_slots(unet)?;
        let blocks = unet.block_out_channels.len();
        if heads.len() != blocks {
            return Err(layout_err(format!(
                "{} head counts given for a UNet with {blocks} blocks",
                heads.len()
            )));
        }
        let mut depth: BTreeMap<&str, usize> = BTreeMap::new();
        for name in names {
            let Some(slot) = slots.iter().find(|s| {
                name.strip_prefix(s.position.as_str())
                    .is_some_and(|r| r.starts_with('.'))
            }) else {
                return Err(layout_err(format!(
                    "tensor `{name}` is not a motion module of this UNet (the adapter was made for a UNet with other blocks or layers)"
                )));
            };
            let rest = &name[slot.position.len() + 1..];
            let blocks_seen = depth.entry(slot.position.as_str()).or_insert(0);
            if let Some(k) = rest
                .strip_prefix("transformer_blocks.")
                .and_then(|r| r.split('.').next())
                .and_then(|k| k.parse::<usize>().ok())
            {
                *blocks_seen = (*blocks_seen).max(k + 1);
            }
        }
        let missing: Vec<&str> = slots
            .iter()
            .filter(|s| s.required && !depth.contains_key(s.position.as_str()))
            .map(|s| s.position.as_str())
            .collect();
        if !missing.is_empty() {
            return Err(layout_err(format!(
                "no motion module for {} (the UNet has a layer there; the adapter was made for another UNet)",
                missing.join(", ")
            )));
        }
        let norm_groups = norm_groups(unet)?;
        let mut modules = BTreeMap::new();
        for slot in &slots {
            let Some(&blocks_in_module) = depth.get(slot.position.as_str()) else {
                continue;
            };
            if blocks_in_module == 0 {
                return Err(layout_err(format!(
                    "{} has no transformer blocks",
                    slot.position
                )));
            }
            modules.insert(
                slot.position.clone(),
                TemporalTransformerSpec {
                    channels: slot.channels,
                    heads: heads[slot.heads_block],
                    depth: blocks_in_module,
                    norm_groups,
                    max_frames,
                },
            );
        }
        Ok(Self {
            modules,
            encoding,
            max_frames,
        })
    }
}

fn norm_groups(unet: &UNetConfig) -> Result<usize, MotionError> {
    Ok(unet.encoder_spec(MidBlockPolicy::UNet)?.norm_groups)
}

/// The adapter's `block_out_channels` must be the UNet's (diffusers checks the block count).
pub(crate) fn check_blocks(
    unet: &UNetConfig,
    adapter_channels: &[usize],
    path: &Path,
) -> Result<(), MotionError> {
    if adapter_channels != unet.block_out_channels.as_slice() {
        return Err(MotionError::Layout {
            path: path.to_path_buf(),
            reason: format!(
                "made for a UNet with block_out_channels {adapter_channels:?}, this UNet has {:?}",
                unet.block_out_channels
            ),
        });
    }
    Ok(())
}
