//! AutoencoderTiny: madebyollin's TAESD, a distilled VAE with SD's latent space, matching
//! diffusers' `AutoencoderTiny` (`EncoderTiny`, `DecoderTiny`, `AutoencoderTinyBlock`).
//!
//! Plain 3×3 convs and ReLUs, no normalisation or attention: a few percent of the KL VAE's
//! compute. Convolutions run on [`crate::nn::conv3x3`] (stride-1 convs, the decoder's nearest 2×
//! upsampling fused into the conv after it) and [`crate::nn::conv2d`] (the encoder's stride-2
//! convs).
//!
//! Conventions follow diffusers: images are NCHW in [-1, 1] (the encoder maps them to TAESD's
//! [0, 1] and the decoder back); [`AutoencoderTiny::encode`] returns the latents themselves (no
//! posterior to sample); the caller multiplies them by [`AutoencoderTiny::scaling_factor`]
//! (1.0 for TAESD) and divides by it before [`AutoencoderTiny::decode`]. `latent_magnitude` /
//! `latent_shift` only serve diffusers' `scale_latents` (8-bit latent previews) and are not used.

use std::path::{Path, PathBuf};

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;
use serde::Deserialize;

use crate::nn::conv2d::Conv2d;
use crate::nn::conv3x3::{Conv3x3, Upsample2xConv3x3};

/// Errors while reading an AutoencoderTiny config or building the model from weights.
#[derive(Debug, thiserror::Error)]
pub enum AutoencoderTinyError {
    #[error("cannot read AutoencoderTiny config {path}: {source}")]
    ConfigIo {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot parse AutoencoderTiny config {path}: {source}")]
    ConfigParse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("unsupported AutoencoderTiny config: {0}")]
    Unsupported(String),
    #[error("building the tiny VAE from its weights: {0}")]
    Weights(#[from] candle_core::Error),
}

/// `config.json` of a diffusers `AutoencoderTiny` (`_class_name: AutoencoderTiny`). Defaults
/// are diffusers' (which are TAESD's).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AutoencoderTinyConfig {
    #[serde(default = "default_three")]
    pub in_channels: usize,
    #[serde(default = "default_three")]
    pub out_channels: usize,
    #[serde(default = "default_block_channels")]
    pub encoder_block_out_channels: Vec<usize>,
    #[serde(default = "default_block_channels")]
    pub decoder_block_out_channels: Vec<usize>,
    #[serde(default = "default_act_fn")]
    pub act_fn: String,
    #[serde(default = "default_upsample_fn")]
    pub upsample_fn: String,
    #[serde(default = "default_latent_channels")]
    pub latent_channels: usize,
    #[serde(default = "default_two")]
    pub upsampling_scaling_factor: usize,
    #[serde(default = "default_encoder_blocks")]
    pub num_encoder_blocks: Vec<usize>,
    #[serde(default = "default_decoder_blocks")]
    pub num_decoder_blocks: Vec<usize>,
    #[serde(default = "default_latent_magnitude")]
    pub latent_magnitude: f64,
    #[serde(default = "default_latent_shift")]
    pub latent_shift: f64,
    #[serde(default = "default_scaling_factor")]
    pub scaling_factor: f64,
    #[serde(default)]
    pub shift_factor: f64,
}

fn default_three() -> usize {
    3
}
fn default_two() -> usize {
    2
}
fn default_block_channels() -> Vec<usize> {
    vec![64; 4]
}
fn default_act_fn() -> String {
    "relu".into()
}
fn default_upsample_fn() -> String {
    "nearest".into()
}
fn default_latent_channels() -> usize {
    4
}
fn default_encoder_blocks() -> Vec<usize> {
    vec![1, 3, 3, 3]
}
fn default_decoder_blocks() -> Vec<usize> {
    vec![3, 3, 3, 1]
}
fn default_latent_magnitude() -> f64 {
    3.0
}
fn default_latent_shift() -> f64 {
    0.5
}
fn default_scaling_factor() -> f64 {
    1.0
}

/// The activations diffusers' `get_activation` offers that TAESD-style models use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Activation {
    Relu,
    Silu,
    Gelu,
}

impl Activation {
    fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "relu" => Some(Self::Relu),
            "silu" | "swish" => Some(Self::Silu),
            "gelu" => Some(Self::Gelu),
            _ => None,
        }
    }

    fn apply(self, xs: &Tensor) -> Result<Tensor> {
        match self {
            Self::Relu => xs.relu(),
            Self::Silu => candle_nn::ops::silu(xs),
            // torch's nn.GELU() is the exact (erf) form.
            Self::Gelu => xs.gelu_erf(),
        }
    }
}

impl AutoencoderTinyConfig {
    /// madebyollin/taesd's `config.json` (SD1.x / SD2.x latents).
    pub fn taesd() -> Self {
        Self {
            in_channels: 3,
            out_channels: 3,
            encoder_block_out_channels: default_block_channels(),
            decoder_block_out_channels: default_block_channels(),
            act_fn: default_act_fn(),
            upsample_fn: default_upsample_fn(),
            latent_channels: 4,
            upsampling_scaling_factor: 2,
            num_encoder_blocks: default_encoder_blocks(),
            num_decoder_blocks: default_decoder_blocks(),
            latent_magnitude: 3.0,
            latent_shift: 0.5,
            scaling_factor: 1.0,
            shift_factor: 0.0,
        }
    }

    /// Reads and validates an AutoencoderTiny `config.json`.
    pub fn from_file(path: impl AsRef<Path>) -> std::result::Result<Self, AutoencoderTinyError> {
        let path = path.as_ref();
        let text =
            std::fs::read_to_string(path).map_err(|source| AutoencoderTinyError::ConfigIo {
                path: path.to_path_buf(),
                source,
            })?;
        Self::from_json(&text, path)
    }

    /// Parses and validates the text of `config.json` read from `path` (named in errors).
    pub fn from_json(text: &str, path: &Path) -> std::result::Result<Self, AutoencoderTinyError> {
        let config: Self =
            serde_json::from_str(text).map_err(|source| AutoencoderTinyError::ConfigParse {
                path: path.to_path_buf(),
                source,
            })?;
        config
            .validate()
            .map_err(|e| AutoencoderTinyError::Unsupported(format!("{}: {e}", path.display())))?;
        Ok(config)
    }

    /// Checks that the config describes a model diffusers can run and this module implements.
    pub fn validate(&self) -> std::result::Result<(), String> {
        for (what, channels, blocks) in [
            (
                "encoder",
                &self.encoder_block_out_channels,
                &self.num_encoder_blocks,
            ),
            (
                "decoder",
                &self.decoder_block_out_channels,
                &self.num_decoder_blocks,
            ),
        ] {
            if channels.is_empty() {
                return Err(format!("{what}_block_out_channels is empty"));
            }
            if channels.len() != blocks.len() {
                return Err(format!(
                    "{what}_block_out_channels ({}) and num_{what}_blocks ({}) differ in length",
                    channels.len(),
                    blocks.len()
                ));
            }
            // Each stage's first conv (and every block) maps its own channel count to itself,
            // so diffusers only runs models whose stages all have the same width.
            if channels.windows(2).any(|w| w[0] != w[1]) || channels[0] == 0 {
                return Err(format!(
                    "{what}_block_out_channels {channels:?}: stages of different widths do not run in diffusers' {}",
                    if what == "encoder" { "EncoderTiny" } else { "DecoderTiny" }
                ));
            }
        }
        if self.encoder_block_out_channels.len() != self.decoder_block_out_channels.len() {
            return Err(format!(
                "{} encoder stages but {} decoder stages: encode and decode would scale differently",
                self.encoder_block_out_channels.len(),
                self.decoder_block_out_channels.len()
            ));
        }
        if Activation::parse(&self.act_fn).is_none() {
            return Err(format!(
                "act_fn {:?} (only \"relu\", \"silu\"/\"swish\", \"gelu\")",
                self.act_fn
            ));
        }
        if self.upsample_fn != "nearest" || self.upsampling_scaling_factor != 2 {
            return Err(format!(
                "upsampling {:?} × {} (only \"nearest\" × 2)",
                self.upsample_fn, self.upsampling_scaling_factor
            ));
        }
        if self.in_channels == 0 || self.out_channels == 0 || self.latent_channels == 0 {
            return Err("in_channels, out_channels and latent_channels must be positive".into());
        }
        if self.scaling_factor == 0.0 || !self.scaling_factor.is_finite() {
            return Err(format!("scaling_factor {}", self.scaling_factor));
        }
        Ok(())
    }

    /// Spatial factor between image and latent: one stride-2 conv per encoder stage after the
    /// first (8 for TAESD).
    pub fn downscale_factor(&self) -> usize {
        1 << self.encoder_block_out_channels.len().saturating_sub(1)
    }
}

/// A conv whose weight has no bias (`bias=False`) or a bias, as the config says.
fn conv3x3(vb: &VarBuilder, in_c: usize, out_c: usize, bias: bool) -> Result<Conv3x3> {
    let weight = vb.get((out_c, in_c, 3, 3), "weight")?;
    let bias = if bias {
        Some(vb.get(out_c, "bias")?)
    } else {
        None
    };
    Conv3x3::new(&weight, bias.as_ref())
}

/// diffusers' `AutoencoderTinyBlock`: `relu(conv(act(conv(act(conv(x))))) + skip(x))`.
#[derive(Debug)]
struct TinyBlock {
    conv1: Conv3x3,
    conv2: Conv3x3,
    conv3: Conv3x3,
    skip: Option<Conv2d>,
    act: Activation,
}

impl TinyBlock {
    fn new(in_c: usize, out_c: usize, act: Activation, vb: VarBuilder) -> Result<Self> {
        let skip = if in_c != out_c {
            let weight = vb.pp("skip").get((out_c, in_c, 1, 1), "weight")?;
            Some(Conv2d::new(&weight, None, 1, 0)?)
        } else {
            None
        };
        let vb = vb.pp("conv");
        Ok(Self {
            conv1: conv3x3(&vb.pp("0"), in_c, out_c, true)?,
            conv2: conv3x3(&vb.pp("2"), out_c, out_c, true)?,
            conv3: conv3x3(&vb.pp("4"), out_c, out_c, true)?,
            skip,
            act,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let h = self.act.apply(&self.conv1.forward(xs)?)?;
        let h = self.act.apply(&self.conv2.forward(&h)?)?;
        // The skip connection is added by the last conv as it writes its output; `fuse` is
        // always a ReLU.
        let h = match &self.skip {
            Some(skip) => self.conv3.forward_add(&h, &skip.forward(xs)?)?,
            None => self.conv3.forward_add(&h, xs)?,
        };
        h.relu()
    }
}

/// One entry of `EncoderTiny.layers` / `DecoderTiny.layers` that holds weights or acts.
#[derive(Debug)]
enum Layer {
    Conv(Conv3x3),
    /// The encoder's `Conv2d(c, c, 3, stride=2, padding=1, bias=False)`.
    StridedConv(Conv2d),
    /// `nn.Upsample(scale_factor=2, mode="nearest")` and the conv after it.
    UpsampleConv(Upsample2xConv3x3),
    Block(TinyBlock),
    Act(Activation),
}

impl Layer {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        match self {
            Layer::Conv(conv) => conv.forward(xs),
            Layer::StridedConv(conv) => conv.forward(xs),
            Layer::UpsampleConv(conv) => conv.forward(xs),
            Layer::Block(block) => block.forward(xs),
            Layer::Act(act) => act.apply(xs),
        }
    }
}

/// Builds `nn.Sequential` layers, tracking the index diffusers gives each entry (entries
/// without weights, activations and `nn.Upsample`, take an index too).
struct Sequential<'a> {
    vb: VarBuilder<'a>,
    index: usize,
    layers: Vec<Layer>,
}

impl<'a> Sequential<'a> {
    fn new(vb: VarBuilder<'a>) -> Self {
        Self {
            vb,
            index: 0,
            layers: Vec::new(),
        }
    }

    /// The var builder of the next entry, which is then counted.
    fn next(&mut self) -> VarBuilder<'a> {
        let vb = self.vb.pp(self.index.to_string());
        self.index += 1;
        vb
    }

    fn push(&mut self, layer: Layer) {
        self.layers.push(layer);
    }
}

/// diffusers' `EncoderTiny`.
#[derive(Debug)]
struct EncoderTiny {
    layers: Vec<Layer>,
}

impl EncoderTiny {
    fn new(cfg: &AutoencoderTinyConfig, act: Activation, vb: VarBuilder) -> Result<Self> {
        let mut seq = Sequential::new(vb.pp("layers"));
        for (i, (&c, &blocks)) in cfg
            .encoder_block_out_channels
            .iter()
            .zip(&cfg.num_encoder_blocks)
            .enumerate()
        {
            let vb = seq.next();
            if i == 0 {
                seq.push(Layer::Conv(conv3x3(&vb, cfg.in_channels, c, true)?));
            } else {
                let weight = vb.get((c, c, 3, 3), "weight")?;
                seq.push(Layer::StridedConv(Conv2d::new(&weight, None, 2, 1)?));
            }
            for _ in 0..blocks {
                let vb = seq.next();
                seq.push(Layer::Block(TinyBlock::new(c, c, act, vb)?));
            }
        }
        let last = cfg.encoder_block_out_channels[cfg.encoder_block_out_channels.len() - 1];
        let vb = seq.next();
        seq.push(Layer::Conv(conv3x3(&vb, last, cfg.latent_channels, true)?));
        Ok(Self { layers: seq.layers })
    }

    /// Images in [-1, 1] to latents.
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        // TAESD works on images in [0, 1].
        let mut xs = xs.affine(0.5, 0.5)?;
        for layer in &self.layers {
            xs = layer.forward(&xs)?;
        }
        Ok(xs)
    }
}

/// diffusers' `DecoderTiny`.
#[derive(Debug)]
struct DecoderTiny {
    layers: Vec<Layer>,
}

impl DecoderTiny {
    fn new(cfg: &AutoencoderTinyConfig, act: Activation, vb: VarBuilder) -> Result<Self> {
        let channels = &cfg.decoder_block_out_channels;
        let mut seq = Sequential::new(vb.pp("layers"));
        let vb = seq.next();
        seq.push(Layer::Conv(conv3x3(
            &vb,
            cfg.latent_channels,
            channels[0],
            true,
        )?));
        seq.next();
        seq.push(Layer::Act(act));
        for (i, (&c, &blocks)) in channels.iter().zip(&cfg.num_decoder_blocks).enumerate() {
            let is_final = i + 1 == channels.len();
            for _ in 0..blocks {
                let vb = seq.next();
                seq.push(Layer::Block(TinyBlock::new(c, c, act, vb)?));
            }
            if is_final {
                let vb = seq.next();
                seq.push(Layer::Conv(conv3x3(&vb, c, cfg.out_channels, true)?));
            } else {
                // nn.Upsample, then the conv it is fused into.
                seq.next();
                let vb = seq.next();
                let conv = conv3x3(&vb, c, c, false)?;
                seq.push(Layer::UpsampleConv(Upsample2xConv3x3::from_conv(&conv)?));
            }
        }
        Ok(Self { layers: seq.layers })
    }

    /// Latents to images in [-1, 1].
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        // TAESD's clamp: tanh(x / 3) · 3.
        let mut xs = (xs / 3.0)?.tanh()?.affine(3.0, 0.0)?;
        for layer in &self.layers {
            xs = layer.forward(&xs)?;
        }
        // [0, 1] → [-1, 1].
        xs.affine(2.0, -1.0)
    }
}

/// The tiny VAE (diffusers `AutoencoderTiny`).
#[derive(Debug)]
pub struct AutoencoderTiny {
    encoder: EncoderTiny,
    decoder: DecoderTiny,
    config: AutoencoderTinyConfig,
}

impl AutoencoderTiny {
    /// Builds the model from diffusers-named weights (`encoder.layers.*`, `decoder.layers.*`).
    pub fn load(
        vb: VarBuilder,
        config: &AutoencoderTinyConfig,
    ) -> std::result::Result<Self, AutoencoderTinyError> {
        config
            .validate()
            .map_err(AutoencoderTinyError::Unsupported)?;
        let act = Activation::parse(&config.act_fn).ok_or_else(|| {
            AutoencoderTinyError::Unsupported(format!("act_fn {:?}", config.act_fn))
        })?;
        Ok(Self {
            encoder: EncoderTiny::new(config, act, vb.pp("encoder"))?,
            decoder: DecoderTiny::new(config, act, vb.pp("decoder"))?,
            config: config.clone(),
        })
    }

    pub fn config(&self) -> &AutoencoderTinyConfig {
        &self.config
    }

    /// Multiply encoded latents by this before diffusion; divide by it before [`Self::decode`]
    /// (1.0 for TAESD).
    pub fn scaling_factor(&self) -> f64 {
        self.config.scaling_factor
    }

    fn check_input(&self, xs: &Tensor, channels: usize, what: &str) -> Result<()> {
        let (_, c, h, w) = xs.dims4()?;
        if c != channels {
            candle_core::bail!(
                "tiny VAE {what} expects {channels} channels, got shape {:?}",
                xs.dims()
            );
        }
        if h == 0 || w == 0 {
            candle_core::bail!("tiny VAE {what}: empty input {:?}", xs.dims());
        }
        if xs.dtype() != DType::F32 {
            candle_core::bail!("tiny VAE {what} expects f32 input, got {:?}", xs.dtype());
        }
        Ok(())
    }

    /// Encodes images `[B, 3, H, W]` in [-1, 1] to latents `[B, C, H/8, W/8]` (diffusers'
    /// `encode(x).latents`; `H, W` multiples of the downscale factor).
    pub fn encode(&self, image: &Tensor) -> Result<Tensor> {
        self.check_input(image, self.config.in_channels, "encode")?;
        self.encoder.forward(image)
    }

    /// Decodes latents `[B, C, h, w]` (already divided by the scaling factor) to images in
    /// roughly [-1, 1] (diffusers' `decode(z).sample`).
    pub fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        self.check_input(latents, self.config.latent_channels, "decode")?;
        self.decoder.forward(latents)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taesd_config_parses_with_diffusers_defaults() {
        // madebyollin/taesd's config.json.
        let text = r#"{"_class_name": "AutoencoderTiny", "_diffusers_version": "0.20.0.dev0",
            "act_fn": "relu", "decoder_block_out_channels": [64, 64, 64, 64],
            "encoder_block_out_channels": [64, 64, 64, 64], "force_upcast": false,
            "in_channels": 3, "latent_channels": 4, "latent_magnitude": 3, "latent_shift": 0.5,
            "num_decoder_blocks": [3, 3, 3, 1], "num_encoder_blocks": [1, 3, 3, 3],
            "out_channels": 3, "scaling_factor": 1.0, "upsampling_scaling_factor": 2}"#;
        let cfg: AutoencoderTinyConfig = serde_json::from_str(text).unwrap();
        assert_eq!(cfg, AutoencoderTinyConfig::taesd());
        assert!(cfg.validate().is_ok());
        assert_eq!(cfg.downscale_factor(), 8);
        let defaults: AutoencoderTinyConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(defaults, cfg);
    }

    #[test]
    fn validation_rejects_what_diffusers_cannot_run() {
        let mut cfg = AutoencoderTinyConfig::taesd();
        cfg.encoder_block_out_channels = vec![32, 64, 64, 64];
        assert!(cfg.validate().unwrap_err().contains("different widths"));
        let mut cfg = AutoencoderTinyConfig::taesd();
        cfg.num_decoder_blocks = vec![3, 3, 1];
        assert!(cfg.validate().unwrap_err().contains("differ in length"));
        let mut cfg = AutoencoderTinyConfig::taesd();
        cfg.act_fn = "mish".into();
        assert!(cfg.validate().unwrap_err().contains("act_fn"));
        let mut cfg = AutoencoderTinyConfig::taesd();
        cfg.upsample_fn = "bilinear".into();
        assert!(cfg.validate().unwrap_err().contains("upsampling"));
    }
}
