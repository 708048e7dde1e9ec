//! CLIP text encoder (transformers' `CLIPTextModel`) configured from `text_encoder/config.json`.
//!
//! candle-transformers has two CLIP text models, but `stable_diffusion::clip::Config` cannot be
//! built from a config file (private fields, fixed presets), and `models::clip` only knows
//! quick_gelu; SD2's OpenCLIP encoder uses exact (erf) gelu, which candle's SD preset
//! approximates with tanh. This one reads any config, returns the final-layer-norm output,
//! and exposes earlier layers for clip-skip.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{Embedding, LayerNorm, Linear, VarBuilder};
use serde::Deserialize;

/// Errors while reading the config or building the model.
#[derive(Debug, thiserror::Error)]
pub enum ClipError {
    #[error("cannot read text encoder config {path}: {source}")]
    ConfigIo {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot parse text encoder config {path}: {source}")]
    ConfigParse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("unsupported text encoder config: {0}")]
    Unsupported(String),
    #[error("building the text encoder from its weights: {0}")]
    Weights(#[from] candle_core::Error),
}

/// The MLP activation named by `hidden_act`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Activation {
    /// `x · sigmoid(1.702 x)` (OpenAI CLIP, SD1.x).
    #[serde(rename = "quick_gelu")]
    QuickGelu,
    /// Exact erf gelu (OpenCLIP, SD2.x).
    #[serde(rename = "gelu")]
    Gelu,
    /// tanh approximation.
    #[serde(alias = "gelu_new", alias = "gelu_pytorch_tanh", rename = "gelu_tanh")]
    GeluTanh,
}

impl Activation {
    fn apply(&self, xs: &Tensor) -> Result<Tensor> {
        match self {
            Activation::QuickGelu => xs.mul(&candle_nn::ops::sigmoid(&(xs * 1.702)?)?),
            Activation::Gelu => xs.gelu_erf(),
            Activation::GeluTanh => xs.gelu(),
        }
    }
}

/// `text_encoder/config.json` (transformers `CLIPTextConfig`); defaults are transformers'.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ClipTextConfig {
    #[serde(default = "default_vocab_size")]
    pub vocab_size: usize,
    #[serde(default = "default_hidden_size")]
    pub hidden_size: usize,
    #[serde(default = "default_intermediate_size")]
    pub intermediate_size: usize,
    #[serde(default = "default_layers")]
    pub num_hidden_layers: usize,
    #[serde(default = "default_heads")]
    pub num_attention_heads: usize,
    #[serde(default = "default_max_positions")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_activation")]
    pub hidden_act: Activation,
    #[serde(default = "default_layer_norm_eps")]
    pub layer_norm_eps: f64,
    /// Width of CLIP's text projection (not used by SD's text conditioning).
    #[serde(default = "default_projection_dim")]
    pub projection_dim: usize,
}

fn default_vocab_size() -> usize {
    49408
}
fn default_hidden_size() -> usize {
    512
}
fn default_intermediate_size() -> usize {
    2048
}
fn default_layers() -> usize {
    12
}
fn default_heads() -> usize {
    8
}
fn default_max_positions() -> usize {
    77
}
fn default_activation() -> Activation {
    Activation::QuickGelu
}
fn default_layer_norm_eps() -> f64 {
    1e-5
}
fn default_projection_dim() -> usize {
    512
}

impl ClipTextConfig {
    /// SD1.5's text encoder (openai/clip-vit-large-patch14's text tower).
    pub fn sd15() -> Self {
        Self {
            vocab_size: 49408,
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            max_position_embeddings: 77,
            hidden_act: Activation::QuickGelu,
            layer_norm_eps: 1e-5,
            projection_dim: 768,
        }
    }

    /// Reads and validates `text_encoder/config.json`.
    pub fn from_file(path: impl AsRef<Path>) -> std::result::Result<Self, ClipError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ClipError::ConfigIo {
            path: path.to_path_buf(),
            source,
        })?;
        let config: Self =
            serde_json::from_str(&text).map_err(|source| ClipError::ConfigParse {
                path: path.to_path_buf(),
                source,
            })?;
        config
            .validate()
            .map_err(|e| ClipError::Unsupported(format!("{}: {e}", path.display())))?;
        Ok(config)
    }

    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return Err(format!(
                "hidden_size {} is not divisible by num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if self.num_hidden_layers == 0 {
            return Err("num_hidden_layers is 0".into());
        }
        Ok(())
    }
}

#[derive(Debug)]
struct SelfAttention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    heads: usize,
    head_dim: usize,
}

impl SelfAttention {
    fn new(cfg: &ClipTextConfig, vb: VarBuilder) -> Result<Self> {
        let d = cfg.hidden_size;
        Ok(Self {
            q_proj: candle_nn::linear(d, d, vb.pp("q_proj"))?,
            k_proj: candle_nn::linear(d, d, vb.pp("k_proj"))?,
            v_proj: candle_nn::linear(d, d, vb.pp("v_proj"))?,
            out_proj: candle_nn::linear(d, d, vb.pp("out_proj"))?,
            heads: cfg.num_attention_heads,
            head_dim: d / cfg.num_attention_heads,
        })
    }

    /// `[B, T, D]` → `[B, heads, T, head_dim]`.
    fn split_heads(&self, xs: &Tensor) -> Result<Tensor> {
        let (b, t, _) = xs.dims3()?;
        xs.reshape((b, t, self.heads, self.head_dim))?
            .transpose(1, 2)?
            .contiguous()
    }

    fn forward(&self, xs: &Tensor, causal_mask: &Tensor) -> Result<Tensor> {
        let (b, t, d) = xs.dims3()?;
        let scale = (self.head_dim as f64).powf(-0.5);
        let q = self.split_heads(&self.q_proj.forward(xs)?)?;
        let k = self.split_heads(&self.k_proj.forward(xs)?)?;
        let v = self.split_heads(&self.v_proj.forward(xs)?)?;
        let scores = (q.matmul(&k.t()?)? * scale)?.broadcast_add(causal_mask)?;
        let weights = candle_nn::ops::softmax_last_dim(&scores)?;
        let out = weights.matmul(&v)?.transpose(1, 2)?.reshape((b, t, d))?;
        self.out_proj.forward(&out)
    }
}

#[derive(Debug)]
struct EncoderLayer {
    layer_norm1: LayerNorm,
    self_attn: SelfAttention,
    layer_norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    activation: Activation,
}

impl EncoderLayer {
    fn new(cfg: &ClipTextConfig, vb: VarBuilder) -> Result<Self> {
        let d = cfg.hidden_size;
        let eps = cfg.layer_norm_eps;
        Ok(Self {
            layer_norm1: candle_nn::layer_norm(d, eps, vb.pp("layer_norm1"))?,
            self_attn: SelfAttention::new(cfg, vb.pp("self_attn"))?,
            layer_norm2: candle_nn::layer_norm(d, eps, vb.pp("layer_norm2"))?,
            fc1: candle_nn::linear(d, cfg.intermediate_size, vb.pp("mlp.fc1"))?,
            fc2: candle_nn::linear(cfg.intermediate_size, d, vb.pp("mlp.fc2"))?,
            activation: cfg.hidden_act,
        })
    }

    fn forward(&self, xs: &Tensor, causal_mask: &Tensor) -> Result<Tensor> {
        let attended = self
            .self_attn
            .forward(&self.layer_norm1.forward(xs)?, causal_mask)?;
        let xs = (xs + attended)?;
        let hidden = self
            .activation
            .apply(&self.fc1.forward(&self.layer_norm2.forward(&xs)?)?)?;
        xs + self.fc2.forward(&hidden)?
    }
}

/// `[1, 1, T, T]` additive mask: 0 on and below the diagonal, -inf above (causal attention).
fn causal_mask(t: usize, device: &Device) -> Result<Tensor> {
    let mask: Vec<f32> = (0..t)
        .flat_map(|i| (0..t).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Tensor::from_vec(mask, (1, 1, t, t), device)
}

/// The CLIP text transformer used to condition Stable Diffusion.
#[derive(Debug)]
pub struct ClipTextEncoder {
    token_embedding: Embedding,
    position_embedding: Tensor,
    layers: Vec<EncoderLayer>,
    final_layer_norm: LayerNorm,
    config: ClipTextConfig,
}

impl ClipTextEncoder {
    /// Builds the model from `text_encoder/model.safetensors` weights. Accepts both key layouts:
    /// `text_model.encoder...` (diffusers repos) and `encoder...` (saved by transformers 5).
    pub fn load(vb: VarBuilder, config: &ClipTextConfig) -> std::result::Result<Self, ClipError> {
        config.validate().map_err(ClipError::Unsupported)?;
        let vb = if vb.contains_tensor("text_model.embeddings.token_embedding.weight") {
            vb.pp("text_model")
        } else {
            vb
        };
        let d = config.hidden_size;
        let embeddings = vb.pp("embeddings");
        let token_embedding =
            candle_nn::embedding(config.vocab_size, d, embeddings.pp("token_embedding"))?;
        let position_embedding = embeddings.get(
            (config.max_position_embeddings, d),
            "position_embedding.weight",
        )?;
        let layers = (0..config.num_hidden_layers)
            .map(|i| EncoderLayer::new(config, vb.pp(format!("encoder.layers.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        let final_layer_norm =
            candle_nn::layer_norm(d, config.layer_norm_eps, vb.pp("final_layer_norm"))?;
        Ok(Self {
            token_embedding,
            position_embedding,
            layers,
            final_layer_norm,
            config: config.clone(),
        })
    }

    pub fn config(&self) -> &ClipTextConfig {
        &self.config
    }

    /// Token embeddings of `input_ids` `[B, T]` (u32 or i64): `[B, T, hidden]`, before the
    /// position embeddings are added. Textual-inversion vectors are spliced in at this stage.
    pub fn embed_tokens(&self, input_ids: &Tensor) -> Result<Tensor> {
        let ids = match input_ids.dtype() {
            DType::U32 | DType::I64 => input_ids.clone(),
            _ => input_ids.to_dtype(DType::U32)?,
        };
        self.token_embedding.forward(&ids)
    }

    /// Runs the first `layers` encoder layers on token embeddings `[B, T, hidden]`.
    fn hidden_state_after_embeds(&self, token_embeds: &Tensor, layers: usize) -> Result<Tensor> {
        let (_, t, _) = token_embeds.dims3()?;
        if t > self.config.max_position_embeddings {
            candle_core::bail!(
                "{t} tokens exceed the text encoder's {} positions",
                self.config.max_position_embeddings
            );
        }
        let positions = self.position_embedding.narrow(0, 0, t)?;
        let mut xs = token_embeds.broadcast_add(&positions)?;
        let mask = causal_mask(t, xs.device())?;
        for layer in &self.layers[..layers] {
            xs = layer.forward(&xs, &mask)?;
        }
        Ok(xs)
    }

    /// Runs the first `layers` encoder layers on `input_ids` `[B, T]` (u32 or i64).
    fn hidden_state_after(&self, input_ids: &Tensor, layers: usize) -> Result<Tensor> {
        self.hidden_state_after_embeds(&self.embed_tokens(input_ids)?, layers)
    }

    /// [`Self::forward_with_skip`] on token embeddings (from [`Self::embed_tokens`], possibly
    /// edited) instead of ids.
    pub fn forward_embeds_with_skip(
        &self,
        token_embeds: &Tensor,
        clip_skip: usize,
    ) -> Result<Tensor> {
        let total = self.layers.len();
        if clip_skip >= total {
            candle_core::bail!("clip_skip {clip_skip} must be below the {total} encoder layers");
        }
        let hidden = self.hidden_state_after_embeds(token_embeds, total - clip_skip)?;
        self.final_layer_norm.forward(&hidden)
    }

    /// Last hidden state after the final layer norm, `[B, T, hidden]`: SD's text conditioning.
    pub fn forward(&self, input_ids: &Tensor) -> Result<Tensor> {
        self.forward_with_skip(input_ids, 0)
    }

    /// diffusers' `clip_skip`: the output of layer `L - clip_skip` passed through the final
    /// layer norm (`clip_skip = 0` is [`Self::forward`], 1 uses the penultimate layer).
    pub fn forward_with_skip(&self, input_ids: &Tensor, clip_skip: usize) -> Result<Tensor> {
        let hidden = self.penultimate_or_earlier(input_ids, clip_skip)?;
        self.final_layer_norm.forward(&hidden)
    }

    /// Raw hidden state after layer `L - clip_skip` (no final layer norm), i.e. transformers'
    /// `hidden_states[-(clip_skip + 1)]`.
    pub fn penultimate_or_earlier(&self, input_ids: &Tensor, clip_skip: usize) -> Result<Tensor> {
        let total = self.layers.len();
        if clip_skip >= total {
            candle_core::bail!("clip_skip {clip_skip} must be below the {total} encoder layers");
        }
        self.hidden_state_after(input_ids, total - clip_skip)
    }

    /// Convenience: encodes token id rows (e.g. from `ClipTokenizer::encode_padded`).
    pub fn encode_ids(
        &self,
        ids: &[Vec<u32>],
        device: &Device,
        clip_skip: usize,
    ) -> Result<Tensor> {
        let t = ids.first().map(Vec::len).unwrap_or(0);
        if ids.iter().any(|row| row.len() != t) {
            candle_core::bail!("token id rows differ in length");
        }
        let flat: Vec<u32> = ids.iter().flatten().copied().collect();
        let input = Tensor::from_vec(flat, (ids.len(), t), device)?;
        self.forward_with_skip(&input, clip_skip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activation_names_match_transformers() {
        let parse = |s: &str| serde_json::from_str::<Activation>(&format!("\"{s}\"")).unwrap();
        assert_eq!(parse("quick_gelu"), Activation::QuickGelu);
        assert_eq!(parse("gelu"), Activation::Gelu);
        assert_eq!(parse("gelu_new"), Activation::GeluTanh);
        assert!(serde_json::from_str::<Activation>("\"relu\"").is_err());
    }

    #[test]
    fn causal_mask_blocks_future_tokens() {
        let m = causal_mask(3, &Device::Cpu).unwrap();
        let v: Vec<f32> = m.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(v[0], 0.0);
        assert_eq!(v[1], f32::NEG_INFINITY);
        assert_eq!(v[3], 0.0);
        assert_eq!(v[8], 0.0);
    }

    #[test]
    fn config_validation_rejects_bad_heads() {
        let cfg: ClipTextConfig =
            serde_json::from_str(r#"{"hidden_size": 30, "num_attention_heads": 4}"#).unwrap();
        assert!(cfg.validate().is_err());
        assert!(ClipTextConfig::sd15().validate().is_ok());
    }
}
