//! `UNet2DConditionModel` configuration, read from a diffusers `config.json`.
//!
//! Field names and defaults are diffusers'. Keys we do not know (`_class_name`,
//! `_diffusers_version`, ...) are ignored; known keys whose non-default values would change the
//! network in ways this implementation does not cover (class embeddings, SDXL's added
//! embeddings, dual cross-attention, ...) are rejected by [`UNetConfig::validate`] rather than
//! silently ignored.

use std::path::Path;

use serde::Deserialize;

use super::error::{Result, UNetError};

/// A diffusers config value given either once for all blocks or once per down block
/// (`attention_head_dim: 8` in SD1.5, `attention_head_dim: [5, 10, 20, 20]` in SD2.x).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum PerBlock<T> {
    Same(T),
    Each(Vec<T>),
}

impl<T: Clone> PerBlock<T> {
    /// One value per down block.
    pub fn resolve(&self, blocks: usize, field: &'static str) -> Result<Vec<T>> {
        match self {
            PerBlock::Same(v) => Ok(vec![v.clone(); blocks]),
            PerBlock::Each(vs) if vs.len() == blocks => Ok(vs.clone()),
            PerBlock::Each(vs) => Err(UNetError::InvalidConfig {
                field,
                reason: format!(
                    "has {} entries but there are {blocks} down blocks",
                    vs.len()
                ),
            }),
        }
    }
}

fn four() -> usize {
    4
}
fn yes() -> bool {
    true
}
fn one_usize() -> usize {
    1
}
fn one_f64() -> f64 {
    1.0
}
fn three() -> usize {
    3
}
fn silu() -> String {
    "silu".into()
}
fn default_str() -> String {
    "default".into()
}
fn positional() -> String {
    "positional".into()
}
fn default_down_block_types() -> Vec<String> {
    [
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ]
    .map(String::from)
    .to_vec()
}
fn default_up_block_types() -> Vec<String> {
    [
        "UpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
    ]
    .map(String::from)
    .to_vec()
}
fn default_mid_block_type() -> Option<String> {
    Some("UNetMidBlock2DCrossAttn".into())
}
fn default_block_out_channels() -> Vec<usize> {
    vec![320, 640, 1280, 1280]
}
fn default_layers_per_block() -> PerBlock<usize> {
    PerBlock::Same(2)
}
fn default_norm_num_groups() -> Option<usize> {
    Some(32)
}
fn default_norm_eps() -> f64 {
    1e-5
}
fn default_cross_attention_dim() -> PerBlock<usize> {
    PerBlock::Same(1280)
}
fn default_one_per_block() -> PerBlock<usize> {
    PerBlock::Same(1)
}
fn default_attention_head_dim() -> PerBlock<usize> {
    PerBlock::Same(8)
}
fn default_false_per_block() -> PerBlock<bool> {
    PerBlock::Same(false)
}

/// diffusers `UNet2DConditionModel` config (`unet/config.json`).
///
/// Note diffusers' naming quirk: for these models `attention_head_dim` is the *number of
/// heads* per block (SD1.5: 8 heads of 40/80/160 channels; SD2.x: `[5, 10, 20, 20]` heads of 64).
#[derive(Debug, Clone, Deserialize)]
pub struct UNetConfig {
    #[serde(default = "four")]
    pub in_channels: usize,
    #[serde(default = "four")]
    pub out_channels: usize,
    #[serde(default)]
    pub center_input_sample: bool,
    #[serde(default = "yes")]
    pub flip_sin_to_cos: bool,
    #[serde(default)]
    pub freq_shift: f64,
    #[serde(default = "default_down_block_types")]
    pub down_block_types: Vec<String>,
    #[serde(default = "default_mid_block_type")]
    pub mid_block_type: Option<String>,
    #[serde(default = "default_up_block_types")]
    pub up_block_types: Vec<String>,
    #[serde(default = "default_false_per_block")]
    pub only_cross_attention: PerBlock<bool>,
    #[serde(default = "default_block_out_channels")]
    pub block_out_channels: Vec<usize>,
    #[serde(default = "default_layers_per_block")]
    pub layers_per_block: PerBlock<usize>,
    #[serde(default = "one_usize")]
    pub downsample_padding: usize,
    #[serde(default = "one_f64")]
    pub mid_block_scale_factor: f64,
    #[serde(default = "silu")]
    pub act_fn: String,
    #[serde(default = "default_norm_num_groups")]
    pub norm_num_groups: Option<usize>,
    #[serde(default = "default_norm_eps")]
    pub norm_eps: f64,
    #[serde(default = "default_cross_attention_dim")]
    pub cross_attention_dim: PerBlock<usize>,
    #[serde(default = "default_one_per_block")]
    pub transformer_layers_per_block: PerBlock<usize>,
    #[serde(default = "default_attention_head_dim")]
    pub attention_head_dim: PerBlock<usize>,
    /// diffusers rejects this for UNet2DConditionModel (see its issue #2011); so do we.
    #[serde(default)]
    pub num_attention_heads: Option<PerBlock<usize>>,
    #[serde(default)]
    pub use_linear_projection: bool,
    /// Only changes fp16 numerics (scores computed in f32); we always compute attention in f32.
    #[serde(default)]
    pub upcast_attention: bool,
    #[serde(default)]
    pub time_embedding_dim: Option<usize>,
    #[serde(default = "three")]
    pub conv_in_kernel: usize,
    #[serde(default = "three")]
    pub conv_out_kernel: usize,
    #[serde(default)]
    pub sample_size: Option<serde_json::Value>,

    // Recognised so that non-default values are rejected instead of silently ignored.
    #[serde(default)]
    pub dual_cross_attention: bool,
    #[serde(default)]
    pub class_embed_type: Option<String>,
    #[serde(default)]
    pub num_class_embeds: Option<usize>,
    #[serde(default)]
    pub addition_embed_type: Option<String>,
    #[serde(default)]
    pub encoder_hid_dim: Option<usize>,
    #[serde(default)]
    pub encoder_hid_dim_type: Option<String>,
    #[serde(default = "default_str")]
    pub resnet_time_scale_shift: String,
    #[serde(default)]
    pub resnet_skip_time_act: bool,
    #[serde(default = "one_f64")]
    pub resnet_out_scale_factor: f64,
    #[serde(default = "positional")]
    pub time_embedding_type: String,
    #[serde(default)]
    pub time_embedding_act_fn: Option<String>,
    #[serde(default)]
    pub timestep_post_act: Option<String>,
    #[serde(default)]
    pub time_cond_proj_dim: Option<usize>,
    #[serde(default = "default_str")]
    pub attention_type: String,
    #[serde(default)]
    pub class_embeddings_concat: bool,
    #[serde(default)]
    pub cross_attention_norm: Option<String>,
    #[serde(default)]
    pub reverse_transformer_layers_per_block: Option<serde_json::Value>,
}

/// Down block kinds of SD1.x/SD2.x UNets and ControlNets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BlockKind {
    /// `DownBlock2D` / `UpBlock2D`: resnets only.
    Plain,
    /// `CrossAttnDownBlock2D` / `CrossAttnUpBlock2D`: each resnet followed by a transformer.
    CrossAttn,
}

/// Everything a `Transformer2DModel` needs, resolved from the per-block config lists.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct TransformerSpec {
    pub heads: usize,
    pub head_dim: usize,
    pub depth: usize,
    pub cross_attention_dim: usize,
    pub only_cross_attention: bool,
    pub use_linear_projection: bool,
    pub norm_groups: usize,
}

/// One down block, resolved.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DownBlockSpec {
    pub kind: BlockKind,
    pub in_channels: usize,
    pub out_channels: usize,
    pub layers: usize,
    pub add_downsample: bool,
    pub transformer: TransformerSpec,
}

/// One up block, resolved.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct UpBlockSpec {
    pub kind: BlockKind,
    /// Channels of the skip tensor taken by the last resnet.
    pub in_channels: usize,
    /// Channels coming from the block below.
    pub prev_output_channels: usize,
    pub out_channels: usize,
    pub layers: usize,
    pub add_upsample: bool,
    pub transformer: TransformerSpec,
}

/// The mid block: one resnet, then `attention_layers` × (transformer, resnet).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MidBlockSpec {
    pub channels: usize,
    /// 0 for ControlNet's `UNetMidBlock2D` variant (a single resnet).
    pub attention_layers: usize,
    pub output_scale_factor: f64,
    pub transformer: TransformerSpec,
}

/// Parts shared by the UNet and the ControlNet (which is a UNet's encoder half).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct EncoderSpec {
    pub time_embed_dim: usize,
    pub norm_groups: usize,
    pub norm_eps: f64,
    pub down: Vec<DownBlockSpec>,
    pub mid: Option<MidBlockSpec>,
}

fn unsupported(
    field: &'static str,
    value: impl std::fmt::Debug,
    supported: &'static str,
) -> UNetError {
    UNetError::Unsupported {
        field,
        value: format!("{value:?}"),
        supported,
    }
}

impl UNetConfig {
    /// Reads and validates a diffusers `config.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| UNetError::ConfigRead {
            path: path.to_path_buf(),
            source,
        })?;
        let config: Self =
            serde_json::from_str(&text).map_err(|source| UNetError::ConfigParse {
                path: path.to_path_buf(),
                source,
            })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks that the config describes a network this implementation can run exactly.
    pub fn validate(&self) -> Result<()> {
        self.encoder_spec(MidBlockPolicy::UNet)?;
        self.up_block_specs()?;
        Ok(())
    }

    fn check_supported(&self) -> Result<()> {
        if !matches!(self.act_fn.as_str(), "silu" | "swish") {
            return Err(unsupported("act_fn", &self.act_fn, "silu"));
        }
        if self.norm_num_groups.is_none() {
            return Err(unsupported(
                "norm_num_groups",
                None::<usize>,
                "a group count",
            ));
        }
        if self.num_attention_heads.is_some() {
            return Err(unsupported(
                "num_attention_heads",
                &self.num_attention_heads,
                "null; diffusers uses attention_head_dim as the head count",
            ));
        }
        let checks: [(bool, &'static str, String, &'static str); 17] = [
            (
                self.dual_cross_attention,
                "dual_cross_attention",
                "true".into(),
                "false",
            ),
            (
                self.class_embed_type.is_some(),
                "class_embed_type",
                format!("{:?}", self.class_embed_type),
                "null",
            ),
            (
                self.num_class_embeds.is_some(),
                "num_class_embeds",
                format!("{:?}", self.num_class_embeds),
                "null",
            ),
            (
                self.addition_embed_type.is_some(),
                "addition_embed_type",
                format!("{:?}", self.addition_embed_type),
                "null",
            ),
            (
                self.encoder_hid_dim.is_some(),
                "encoder_hid_dim",
                format!("{:?}", self.encoder_hid_dim),
                "null",
            ),
            (
                self.encoder_hid_dim_type.is_some(),
                "encoder_hid_dim_type",
                format!("{:?}", self.encoder_hid_dim_type),
                "null",
            ),
            (
                self.resnet_time_scale_shift != "default",
                "resnet_time_scale_shift",
                self.resnet_time_scale_shift.clone(),
                "\"default\"",
            ),
            (
                self.resnet_skip_time_act,
                "resnet_skip_time_act",
                "true".into(),
                "false",
            ),
            (
                self.resnet_out_scale_factor != 1.0,
                "resnet_out_scale_factor",
                self.resnet_out_scale_factor.to_string(),
                "1.0",
            ),
            (
                self.time_embedding_type != "positional",
                "time_embedding_type",
                self.time_embedding_type.clone(),
                "\"positional\"",
            ),
            (
                self.time_embedding_act_fn.is_some(),
                "time_embedding_act_fn",
                format!("{:?}", self.time_embedding_act_fn),
                "null",
            ),
            (
                self.timestep_post_act.is_some(),
                "timestep_post_act",
                format!("{:?}", self.timestep_post_act),
                "null",
            ),
            (
                self.time_cond_proj_dim.is_some(),
                "time_cond_proj_dim",
                format!("{:?}", self.time_cond_proj_dim),
                "null",
            ),
            (
                self.attention_type != "default",
                "attention_type",
                self.attention_type.clone(),
                "\"default\"",
            ),
            (
                self.class_embeddings_concat,
                "class_embeddings_concat",
                "true".into(),
                "false",
            ),
            (
                self.cross_attention_norm.is_some(),
                "cross_attention_norm",
                format!("{:?}", self.cross_attention_norm),
                "null",
            ),
            (
                self.reverse_transformer_layers_per_block
                    .as_ref()
                    .is_some_and(|v| !v.is_null()),
                "reverse_transformer_layers_per_block",
                format!("{:?}", self.reverse_transformer_layers_per_block),
                "null",
            ),
        ];
        for (bad, field, value, supported) in checks {
            if bad {
                return Err(UNetError::Unsupported {
                    field,
                    value,
                    supported,
                });
            }
        }
        for (field, k) in [
            ("conv_in_kernel", self.conv_in_kernel),
            ("conv_out_kernel", self.conv_out_kernel),
        ] {
            if k % 2 == 0 {
                return Err(unsupported(field, k, "an odd kernel size"));
            }
        }
        Ok(())
    }

    /// Resolves the down path and mid block (shared with ControlNet).
    pub(crate) fn encoder_spec(&self, mid_policy: MidBlockPolicy) -> Result<EncoderSpec> {
        self.check_supported()?;
        let n = self.block_out_channels.len();
        if n == 0 {
            return Err(UNetError::InvalidConfig {
                field: "block_out_channels",
                reason: "is empty".into(),
            });
        }
        if self.down_block_types.len() != n {
            return Err(UNetError::InvalidConfig {
                field: "down_block_types",
                reason: format!(
                    "has {} entries but block_out_channels has {n}",
                    self.down_block_types.len()
                ),
            });
        }
        let norm_groups = self.norm_num_groups.unwrap_or(32);
        let layers = self.layers_per_block.resolve(n, "layers_per_block")?;
        let heads = self.attention_head_dim.resolve(n, "attention_head_dim")?;
        let cross_dims = self.cross_attention_dim.resolve(n, "cross_attention_dim")?;
        let depths = self
            .transformer_layers_per_block
            .resolve(n, "transformer_layers_per_block")?;
        let only_cross = self
            .only_cross_attention
            .resolve(n, "only_cross_attention")?;
        for &c in &self.block_out_channels {
            if c == 0 || c % norm_groups != 0 {
                return Err(UNetError::InvalidConfig {
                    field: "norm_num_groups",
                    reason: format!("{norm_groups} groups do not divide {c} channels"),
                });
            }
        }
        let transformer = |i: usize| -> Result<TransformerSpec> {
            let channels = self.block_out_channels[i];
            if heads[i] == 0 || !channels.is_multiple_of(heads[i]) {
                return Err(UNetError::InvalidConfig {
                    field: "attention_head_dim",
                    reason: format!("{} heads do not divide {channels} channels", heads[i]),
                });
            }
            Ok(TransformerSpec {
                heads: heads[i],
                head_dim: channels / heads[i],
                depth: depths[i],
                cross_attention_dim: cross_dims[i],
                only_cross_attention: only_cross[i],
                use_linear_projection: self.use_linear_projection,
                norm_groups,
            })
        };
        let mut down = Vec::with_capacity(n);
        for (i, kind) in self.down_block_types.iter().enumerate() {
            let kind = match kind.as_str() {
                "DownBlock2D" => BlockKind::Plain,
                "CrossAttnDownBlock2D" => BlockKind::CrossAttn,
                _ => {
                    return Err(unsupported(
                        "down_block_types",
                        kind,
                        "DownBlock2D or CrossAttnDownBlock2D",
                    ))
                }
            };
            down.push(DownBlockSpec {
                kind,
                in_channels: if i == 0 {
                    self.block_out_channels[0]
                } else {
                    self.block_out_channels[i - 1]
                },
                out_channels: self.block_out_channels[i],
                layers: layers[i],
                add_downsample: i + 1 < n,
                transformer: transformer(i)?,
            });
        }
        let mid_transformer = TransformerSpec {
            only_cross_attention: false,
            ..transformer(n - 1)?
        };
        let mid_kind = self.mid_block_type.as_deref();
        let attention_layers = match (mid_kind, mid_policy) {
            (None, MidBlockPolicy::UNet) => None,
            (Some("UNetMidBlock2DCrossAttn"), _) => Some(1),
            (Some("UNetMidBlock2D"), MidBlockPolicy::ControlNet) => Some(0),
            (other, MidBlockPolicy::UNet) => {
                return Err(unsupported(
                    "mid_block_type",
                    other,
                    "UNetMidBlock2DCrossAttn or null",
                ))
            }
            (other, MidBlockPolicy::ControlNet) => {
                return Err(unsupported(
                    "mid_block_type",
                    other,
                    "UNetMidBlock2DCrossAttn or UNetMidBlock2D",
                ))
            }
        };
        let mid = attention_layers.map(|attention_layers| MidBlockSpec {
            channels: self.block_out_channels[n - 1],
            attention_layers,
            output_scale_factor: self.mid_block_scale_factor,
            transformer: mid_transformer,
        });
        Ok(EncoderSpec {
            time_embed_dim: self
                .time_embedding_dim
                .unwrap_or(self.block_out_channels[0] * 4),
            norm_groups,
            norm_eps: self.norm_eps,
            down,
            mid,
        })
    }

    /// Resolves the up path, mirroring the down path as diffusers does.
    pub(crate) fn up_block_specs(&self) -> Result<Vec<UpBlockSpec>> {
        let encoder = self.encoder_spec(MidBlockPolicy::UNet)?;
        let n = self.block_out_channels.len();
        if self.up_block_types.len() != n {
            return Err(UNetError::InvalidConfig {
                field: "up_block_types",
                reason: format!(
                    "has {} entries but block_out_channels has {n}",
                    self.up_block_types.len()
                ),
            });
        }
        let reversed: Vec<usize> = self.block_out_channels.iter().rev().copied().collect();
        let mut up = Vec::with_capacity(n);
        for (i, kind) in self.up_block_types.iter().enumerate() {
            let kind = match kind.as_str() {
                "UpBlock2D" => BlockKind::Plain,
                "CrossAttnUpBlock2D" => BlockKind::CrossAttn,
                _ => {
                    return Err(unsupported(
                        "up_block_types",
                        kind,
                        "UpBlock2D or CrossAttnUpBlock2D",
                    ))
                }
            };
            // Per-block settings of the mirrored down block.
            let mirrored = &encoder.down[n - 1 - i];
            up.push(UpBlockSpec {
                kind,
                in_channels: reversed[(i + 1).min(n - 1)],
                prev_output_channels: if i == 0 { reversed[0] } else { reversed[i - 1] },
                out_channels: reversed[i],
                layers: mirrored.layers + 1,
                add_upsample: i + 1 < n,
                transformer: mirrored.transformer,
            });
        }
        Ok(up)
    }
}

/// Which mid-block types are acceptable: a UNet may have none, a ControlNet may use the
/// attention-free `UNetMidBlock2D`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MidBlockPolicy {
    UNet,
    ControlNet,
}

#[cfg(test)]
mod tests {
    use super::*;

    const SD15: &str = r#"{
        "_class_name": "UNet2DConditionModel", "_diffusers_version": "0.6.0",
        "act_fn": "silu", "attention_head_dim": 8, "block_out_channels": [320, 640, 1280, 1280],
        "center_input_sample": false, "cross_attention_dim": 768,
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        "downsample_padding": 1, "flip_sin_to_cos": true, "freq_shift": 0, "in_channels": 4,
        "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32,
        "out_channels": 4, "sample_size": 64,
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]
    }"#;

    const SD21: &str = r#"{
        "_class_name": "UNet2DConditionModel", "_diffusers_version": "0.10.0.dev0",
        "act_fn": "silu", "attention_head_dim": [5, 10, 20, 20], "block_out_channels": [320, 640, 1280, 1280],
        "center_input_sample": false, "cross_attention_dim": 1024,
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        "downsample_padding": 1, "dual_cross_attention": false, "flip_sin_to_cos": true, "freq_shift": 0,
        "in_channels": 4, "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-05,
        "norm_num_groups": 32, "num_class_embeds": null, "only_cross_attention": false, "out_channels": 4,
        "sample_size": 96,
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
        "upcast_attention": true, "use_linear_projection": true
    }"#;

    fn parse(json: &str) -> UNetConfig {
        let c: UNetConfig = serde_json::from_str(json).unwrap();
        c.validate().unwrap();
        c
    }

    #[test]
    fn sd15_resolves_to_eight_heads_of_growing_size() {
        let c = parse(SD15);
        let enc = c.encoder_spec(MidBlockPolicy::UNet).unwrap();
        assert_eq!(enc.time_embed_dim, 1280);
        let head_dims: Vec<_> = enc
            .down
            .iter()
            .map(|b| (b.transformer.heads, b.transformer.head_dim))
            .collect();
        assert_eq!(head_dims, vec![(8, 40), (8, 80), (8, 160), (8, 160)]);
        assert_eq!(enc.down[3].kind, BlockKind::Plain);
        assert!(!enc.down[3].add_downsample);
        assert_eq!(enc.mid.as_ref().unwrap().attention_layers, 1);
        let up = c.up_block_specs().unwrap();
        let channels: Vec<_> = up
            .iter()
            .map(|b| (b.prev_output_channels, b.in_channels, b.out_channels))
            .collect();
        assert_eq!(
            channels,
            vec![
                (1280, 1280, 1280),
                (1280, 640, 1280),
                (1280, 320, 640),
                (640, 320, 320)
            ]
        );
        assert!(up.iter().all(|b| b.layers == 3));
        assert_eq!(up[3].transformer.cross_attention_dim, 768);
    }

    #[test]
    fn sd21_resolves_to_constant_head_size() {
        let c = parse(SD21);
        let enc = c.encoder_spec(MidBlockPolicy::UNet).unwrap();
        assert!(enc
            .down
            .iter()
            .all(|b| b.transformer.head_dim == 64 && b.transformer.use_linear_projection));
        assert_eq!(enc.mid.unwrap().transformer.heads, 20);
        let up = c.up_block_specs().unwrap();
        assert_eq!(up[1].transformer.heads, 20);
        assert_eq!(up[3].transformer.heads, 5);
    }

    #[test]
    fn rejects_what_it_cannot_run() {
        let bad = SD15.replace("\"act_fn\": \"silu\"", "\"act_fn\": \"gelu\"");
        let c: UNetConfig = serde_json::from_str(&bad).unwrap();
        assert!(matches!(
            c.validate(),
            Err(UNetError::Unsupported {
                field: "act_fn",
                ..
            })
        ));
        let bad = SD15.replace(
            "\"attention_head_dim\": 8",
            "\"attention_head_dim\": [8, 8]",
        );
        let c: UNetConfig = serde_json::from_str(&bad).unwrap();
        assert!(matches!(
            c.validate(),
            Err(UNetError::InvalidConfig {
                field: "attention_head_dim",
                ..
            })
        ));
        let bad = SD15.replace("\"attention_head_dim\": 8", "\"attention_head_dim\": 7");
        let c: UNetConfig = serde_json::from_str(&bad).unwrap();
        assert!(c.validate().is_err());
        let bad = SD15.replace(
            "\"in_channels\": 4,",
            "\"in_channels\": 4, \"class_embed_type\": \"timestep\",",
        );
        let c: UNetConfig = serde_json::from_str(&bad).unwrap();
        assert!(matches!(
            c.validate(),
            Err(UNetError::Unsupported {
                field: "class_embed_type",
                ..
            })
        ));
    }

    #[test]
    fn from_file_names_the_file() {
        let err = UNetConfig::from_file("/nonexistent/unet/config.json").unwrap_err();
        assert!(err.to_string().contains("/nonexistent/unet/config.json"));
    }
}
