//! AutoencoderKL: the Stable Diffusion VAE, matching diffusers' `AutoencoderKL`.
//!
//! Written here rather than reusing candle-transformers' `stable_diffusion::vae` because that
//! one hides the posterior's mean/log-variance, does not clamp the log-variance as diffusers
//! does, and its mid-block attention materialises the full N×N score matrix (N = h·w of the
//! latent: 4096² at 512², 16384² at 1024²). Here attention is the UNet's memory-bounded kernel and
//! optional tiled encode/decode reproduces diffusers' `enable_tiling()` exactly. Convolutions
//! run on the GEMM kernels of [`crate::nn::conv3x3`] (upsampling fused into the following conv)
//! and normalisation on [`crate::nn::group_norm`]: at 512² the decode uses about 0.9× the CPU time
//! of diffusers on torch (`rotoscope bench`).
//!
//! [`Vae`] is the VAE a pipeline runs on: this one or the tiny
//! [`crate::models::autoencoder_tiny::AutoencoderTiny`] (TAESD), behind one latent interface.
//!
//! Conventions follow diffusers: images are NCHW in [-1, 1]; `decode` takes latents already
//! divided by [`AutoencoderKL::scaling_factor`]; the caller multiplies encoded samples by it.

use std::path::{Path, PathBuf};

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder};
use serde::Deserialize;

use crate::models::autoencoder_tiny::{
    AutoencoderTiny, AutoencoderTinyConfig, AutoencoderTinyError,
};
use crate::nn::attention::multi_head_attention;
use crate::nn::conv2d::Conv2d;
use crate::nn::conv3x3::{Conv3x3, DownsampleConv3x3, Upsample2xConv3x3};
use crate::nn::group_norm::GroupNorm;
use crate::nn::AttentionBudget;

/// Errors while reading a VAE config or building the model from weights.
#[derive(Debug, thiserror::Error)]
pub enum VaeError {
    #[error("cannot read VAE config {path}: {source}")]
    ConfigIo {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot parse VAE config {path}: {source}")]
    ConfigParse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("unsupported VAE config: {0}")]
    Unsupported(String),
    #[error("building the VAE from its weights: {0}")]
    Weights(#[from] candle_core::Error),
    #[error(transparent)]
    Tiny(#[from] AutoencoderTinyError),
}

/// `sample_size` is an int in SD configs but may be `[h, w]` in others.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum SampleSize {
    Square(usize),
    HeightWidth([usize; 2]),
}

impl SampleSize {
    /// The size diffusers uses for tiling (the first entry of a pair).
    pub fn tile_size(&self) -> usize {
        match self {
            SampleSize::Square(s) => *s,
            SampleSize::HeightWidth([h, _]) => *h,
        }
    }
}

/// `vae/config.json` of a diffusers folder. Defaults are those of diffusers' `AutoencoderKL`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct VaeConfig {
    #[serde(default = "default_three")]
    pub in_channels: usize,
    #[serde(default = "default_three")]
    pub out_channels: usize,
    #[serde(default = "default_down_blocks")]
    pub down_block_types: Vec<String>,
    #[serde(default = "default_up_blocks")]
    pub up_block_types: Vec<String>,
    #[serde(default = "default_block_out_channels")]
    pub block_out_channels: Vec<usize>,
    #[serde(default = "default_one")]
    pub layers_per_block: usize,
    #[serde(default = "default_act_fn")]
    pub act_fn: String,
    #[serde(default = "default_latent_channels")]
    pub latent_channels: usize,
    #[serde(default = "default_norm_num_groups")]
    pub norm_num_groups: usize,
    #[serde(default = "default_sample_size")]
    pub sample_size: SampleSize,
    #[serde(default = "default_scaling_factor")]
    pub scaling_factor: f64,
    #[serde(default)]
    pub shift_factor: Option<f64>,
    #[serde(default = "default_true")]
    pub use_quant_conv: bool,
    #[serde(default = "default_true")]
    pub use_post_quant_conv: bool,
    #[serde(default = "default_true")]
    pub mid_block_add_attention: bool,
}

fn default_three() -> usize {
    3
}
fn default_one() -> usize {
    1
}
fn default_down_blocks() -> Vec<String> {
    vec!["DownEncoderBlock2D".into()]
}
fn default_up_blocks() -> Vec<String> {
    vec!["UpDecoderBlock2D".into()]
}
fn default_block_out_channels() -> Vec<usize> {
    vec![64]
}
fn default_act_fn() -> String {
    "silu".into()
}
fn default_latent_channels() -> usize {
    4
}
fn default_norm_num_groups() -> usize {
    32
}
fn default_sample_size() -> SampleSize {
    SampleSize::Square(32)
}
fn default_scaling_factor() -> f64 {
    0.18215
}
fn default_true() -> bool {
    true
}

impl VaeConfig {
    /// Stable Diffusion 1.x's VAE (`vae/config.json` of `stable-diffusion-v1-5`).
    pub fn sd15() -> Self {
        Self {
            in_channels: 3,
            out_channels: 3,
            down_block_types: vec!["DownEncoderBlock2D".into(); 4],
            up_block_types: vec!["UpDecoderBlock2D".into(); 4],
            block_out_channels: vec![128, 256, 512, 512],
            layers_per_block: 2,
            act_fn: "silu".into(),
            latent_channels: 4,
            norm_num_groups: 32,
            sample_size: SampleSize::Square(512),
            scaling_factor: 0.18215,
            shift_factor: None,
            use_quant_conv: true,
            use_post_quant_conv: true,
            mid_block_add_attention: true,
        }
    }

    /// Reads and validates `vae/config.json`.
    pub fn from_file(path: impl AsRef<Path>) -> std::result::Result<Self, VaeError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| VaeError::ConfigIo {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json(&text, path)
    }

    /// Parses and validates the text of `vae/config.json` read from `path` (named in errors).
    pub fn from_json(text: &str, path: &Path) -> std::result::Result<Self, VaeError> {
        let config: Self = serde_json::from_str(text).map_err(|source| VaeError::ConfigParse {
            path: path.to_path_buf(),
            source,
        })?;
        config
            .validate()
            .map_err(|e| VaeError::Unsupported(format!("{}: {e}", path.display())))?;
        Ok(config)
    }

    /// Checks that the config describes the architecture this module implements.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let blocks = self.block_out_channels.len();
        if blocks == 0 {
            return Err("block_out_channels is empty".into());
        }
        if self.down_block_types.len() != blocks || self.up_block_types.len() != blocks {
            return Err(format!(
                "down_block_types ({}) / up_block_types ({}) must have one entry per block_out_channels ({blocks})",
                self.down_block_types.len(),
                self.up_block_types.len()
            ));
        }
        if let Some(t) = self
            .down_block_types
            .iter()
            .find(|t| t.as_str() != "DownEncoderBlock2D")
        {
            return Err(format!("down block type {t:?} (only DownEncoderBlock2D)"));
        }
        if let Some(t) = self
            .up_block_types
            .iter()
            .find(|t| t.as_str() != "UpDecoderBlock2D")
        {
            return Err(format!("up block type {t:?} (only UpDecoderBlock2D)"));
        }
        if self.act_fn != "silu" {
            return Err(format!("act_fn {:?} (only \"silu\")", self.act_fn));
        }
        if let Some(c) = self
            .block_out_channels
            .iter()
            .find(|&&c| self.norm_num_groups == 0 || c % self.norm_num_groups != 0)
        {
            return Err(format!(
                "norm_num_groups {} does not divide block channels {c}",
                self.norm_num_groups
            ));
        }
        Ok(())
    }

    /// Spatial factor between image and latent (8 for SD).
    pub fn downscale_factor(&self) -> usize {
        1 << (self.block_out_channels.len() - 1)
    }
}

/// The posterior `N(mean, exp(logvar))` returned by [`AutoencoderKL::encode`].
#[derive(Debug, Clone)]
pub struct LatentDist {
    pub mean: Tensor,
    /// Clamped to [-30, 20] like diffusers' `DiagonalGaussianDistribution`.
    pub logvar: Tensor,
}

impl LatentDist {
    /// Splits encoder moments `[B, 2C, h, w]` into mean and clamped log-variance.
    pub fn from_moments(moments: &Tensor) -> Result<Self> {
        let channels = moments.dim(1)? / 2;
        let mean = moments.narrow(1, 0, channels)?.contiguous()?;
        let logvar = moments
            .narrow(1, channels, channels)?
            .clamp(-30f32, 20f32)?
            .contiguous()?;
        Ok(Self { mean, logvar })
    }

    /// `mean + exp(logvar / 2) * noise`: a sample drawn with the caller's noise (same shape as
    /// `mean`), so seeds reproduce diffusers' `latent_dist.sample(generator)`.
    pub fn sample(&self, noise: &Tensor) -> Result<Tensor> {
        let std = (&self.logvar * 0.5)?.exp()?;
        self.mean.add(&std.mul(noise)?)
    }

    /// The distribution's mode (its mean), as diffusers' `latent_dist.mode()`.
    pub fn mode(&self) -> &Tensor {
        &self.mean
    }
}

fn conv1x1(in_c: usize, out_c: usize, vb: VarBuilder) -> Result<Conv2d> {
    Conv2d::load(vb, in_c, out_c, 1, 1, 0)
}

/// diffusers' `ResnetBlock2D` without time embedding (the VAE's only resnet kind).
#[derive(Debug)]
struct ResnetBlock {
    norm1: GroupNorm,
    conv1: Conv3x3,
    norm2: GroupNorm,
    conv2: Conv3x3,
    conv_shortcut: Option<Conv2d>,
}

impl ResnetBlock {
    fn new(in_c: usize, out_c: usize, groups: usize, vb: VarBuilder) -> Result<Self> {
        let eps = 1e-6;
        let conv_shortcut = if in_c != out_c {
            Some(conv1x1(in_c, out_c, vb.pp("conv_shortcut"))?)
        } else {
            None
        };
        Ok(Self {
            norm1: GroupNorm::load(vb.pp("norm1"), groups, in_c, eps)?,
            conv1: Conv3x3::load(vb.pp("conv1"), in_c, out_c)?,
            norm2: GroupNorm::load(vb.pp("norm2"), groups, out_c, eps)?,
            conv2: Conv3x3::load(vb.pp("conv2"), out_c, out_c)?,
            conv_shortcut,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let h = self.norm1.forward_silu(xs)?;
        let h = self.conv1.forward(&h)?;
        let h = self.norm2.forward_silu(&h)?;
        // The skip connection is added by conv2 as it writes its output.
        match &self.conv_shortcut {
            Some(conv) => self.conv2.forward_add(&h, &conv.forward(xs)?),
            None => self.conv2.forward_add(&h, xs),
        }
    }
}

/// Loads a q/k/v/out projection, accepting the 1×1-conv-shaped weights of old checkpoints.
fn projection(channels: usize, vb: VarBuilder) -> Result<Linear> {
    let weight = match vb.get((channels, channels), "weight") {
        Ok(weight) => weight,
        Err(linear_err) => match vb.get((channels, channels, 1, 1), "weight") {
            Ok(conv) => conv.flatten_from(1)?,
            Err(_) => return Err(linear_err),
        },
    };
    let bias = vb.get(channels, "bias")?;
    Ok(Linear::new(weight, Some(bias)))
}

/// The VAE's single-head spatial self-attention (diffusers `Attention` with
/// `residual_connection=True`, one head of width C).
#[derive(Debug)]
struct SpatialAttention {
    group_norm: GroupNorm,
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    budget: AttentionBudget,
}

impl SpatialAttention {
    fn new(channels: usize, groups: usize, vb: VarBuilder) -> Result<Self> {
        // diffusers renamed query/key/value/proj_attn to to_q/to_k/to_v/to_out.0; accept both.
        let (q, k, v, out) = if vb.contains_tensor("to_q.weight") {
            ("to_q", "to_k", "to_v", "to_out.0")
        } else {
            ("query", "key", "value", "proj_attn")
        };
        Ok(Self {
            group_norm: GroupNorm::load(vb.pp("group_norm"), groups, channels, 1e-6)?,
            to_q: projection(channels, vb.pp(q))?,
            to_k: projection(channels, vb.pp(k))?,
            to_v: projection(channels, vb.pp(v))?,
            to_out: projection(channels, vb.pp(out))?,
            budget: AttentionBudget::default(),
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = xs.dims4()?;
        let tokens = self
            .group_norm
            .forward(xs)?
            .reshape((b, c, h * w))?
            .transpose(1, 2)?
            .contiguous()?;
        let q = self.to_q.forward(&tokens)?;
        let k = self.to_k.forward(&tokens)?;
        let v = self.to_v.forward(&tokens)?;
        // One head of width C: scale 1/√C, as diffusers.
        let attended = multi_head_attention(&q, &k, &v, 1, self.budget)?;
        let out = self
            .to_out
            .forward(&attended)?
            .transpose(1, 2)?
            .reshape((b, c, h, w))?;
        out + xs
    }
}

/// diffusers' `UNetMidBlock2D` as used by the VAE: resnet, [attention], resnet.
#[derive(Debug)]
struct MidBlock {
    resnet_in: ResnetBlock,
    attention: Option<SpatialAttention>,
    resnet_out: ResnetBlock,
}

impl MidBlock {
    fn new(channels: usize, groups: usize, add_attention: bool, vb: VarBuilder) -> Result<Self> {
        let attention = if add_attention {
            Some(SpatialAttention::new(
                channels,
                groups,
                vb.pp("attentions.0"),
            )?)
        } else {
            None
        };
        Ok(Self {
            resnet_in: ResnetBlock::new(channels, channels, groups, vb.pp("resnets.0"))?,
            attention,
            resnet_out: ResnetBlock::new(channels, channels, groups, vb.pp("resnets.1"))?,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let mut xs = self.resnet_in.forward(xs)?;
        if let Some(attention) = &self.attention {
            xs = attention.forward(&xs)?;
        }
        self.resnet_out.forward(&xs)
    }
}

/// `DownEncoderBlock2D`: resnets, then an optional stride-2 conv with asymmetric (0,1) padding.
#[derive(Debug)]
struct DownEncoderBlock {
    resnets: Vec<ResnetBlock>,
    downsample: Option<DownsampleConv3x3>,
}

impl DownEncoderBlock {
    fn new(
        in_c: usize,
        out_c: usize,
        layers: usize,
        groups: usize,
        add_downsample: bool,
        vb: VarBuilder,
    ) -> Result<Self> {
        let resnets = (0..layers)
            .map(|i| {
                let c = if i == 0 { in_c } else { out_c };
                ResnetBlock::new(c, out_c, groups, vb.pp(format!("resnets.{i}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let downsample = if add_downsample {
            Some(DownsampleConv3x3::load(
                vb.pp("downsamplers.0.conv"),
                out_c,
                out_c,
            )?)
        } else {
            None
        };
        Ok(Self {
            resnets,
            downsample,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let mut xs = xs.clone();
        for resnet in &self.resnets {
            xs = resnet.forward(&xs)?;
        }
        match &self.downsample {
            // diffusers' Downsample2D with padding=0: pad right and bottom by one, stride 2.
            Some(conv) => conv.forward(&xs),
            None => Ok(xs),
        }
    }
}

/// `UpDecoderBlock2D`: resnets, then optional nearest 2× upsampling and a 3×3 conv.
#[derive(Debug)]
struct UpDecoderBlock {
    resnets: Vec<ResnetBlock>,
    upsample: Option<Upsample2xConv3x3>,
}

impl UpDecoderBlock {
    fn new(
        in_c: usize,
        out_c: usize,
        layers: usize,
        groups: usize,
        add_upsample: bool,
        vb: VarBuilder,
    ) -> Result<Self> {
        let resnets = (0..layers)
            .map(|i| {
                let c = if i == 0 { in_c } else { out_c };
                ResnetBlock::new(c, out_c, groups, vb.pp(format!("resnets.{i}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let upsample = if add_upsample {
            let vb = vb.pp("upsamplers.0.conv");
            Some(Upsample2xConv3x3::new(
                &vb.get((out_c, out_c, 3, 3), "weight")?,
                &vb.get(out_c, "bias")?,
            )?)
        } else {
            None
        };
        Ok(Self { resnets, upsample })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let mut xs = xs.clone();
        for resnet in &self.resnets {
            xs = resnet.forward(&xs)?;
        }
        match &self.upsample {
            // diffusers' Upsample2D: nearest 2× then a 3×3 conv, fused here.
            Some(conv) => conv.forward(&xs),
            None => Ok(xs),
        }
    }
}

#[derive(Debug)]
struct Encoder {
    conv_in: Conv3x3,
    down_blocks: Vec<DownEncoderBlock>,
    mid_block: MidBlock,
    conv_norm_out: GroupNorm,
    conv_out: Conv3x3,
}

impl Encoder {
    fn new(cfg: &VaeConfig, vb: VarBuilder) -> Result<Self> {
        let channels = &cfg.block_out_channels;
        let groups = cfg.norm_num_groups;
        let conv_in = Conv3x3::load(vb.pp("conv_in"), cfg.in_channels, channels[0])?;
        let down_blocks = (0..channels.len())
            .map(|i| {
                let in_c = if i == 0 { channels[0] } else { channels[i - 1] };
                DownEncoderBlock::new(
                    in_c,
                    channels[i],
                    cfg.layers_per_block,
                    groups,
                    i + 1 != channels.len(),
                    vb.pp(format!("down_blocks.{i}")),
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let last = channels[channels.len() - 1];
        Ok(Self {
            conv_in,
            down_blocks,
            mid_block: MidBlock::new(
                last,
                groups,
                cfg.mid_block_add_attention,
                vb.pp("mid_block"),
            )?,
            conv_norm_out: GroupNorm::load(vb.pp("conv_norm_out"), groups, last, 1e-6)?,
            conv_out: Conv3x3::load(vb.pp("conv_out"), last, 2 * cfg.latent_channels)?,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let mut xs = self.conv_in.forward(xs)?;
        for block in &self.down_blocks {
            xs = block.forward(&xs)?;
        }
        let xs = self.mid_block.forward(&xs)?;
        let xs = self.conv_norm_out.forward_silu(&xs)?;
        self.conv_out.forward(&xs)
    }
}

#[derive(Debug)]
struct Decoder {
    conv_in: Conv3x3,
    mid_block: MidBlock,
    up_blocks: Vec<UpDecoderBlock>,
    conv_norm_out: GroupNorm,
    conv_out: Conv3x3,
}

impl Decoder {
    fn new(cfg: &VaeConfig, vb: VarBuilder) -> Result<Self> {
        let reversed: Vec<usize> = cfg.block_out_channels.iter().rev().copied().collect();
        let groups = cfg.norm_num_groups;
        let up_blocks = (0..reversed.len())
            .map(|i| {
                let in_c = if i == 0 { reversed[0] } else { reversed[i - 1] };
                UpDecoderBlock::new(
                    in_c,
                    reversed[i],
                    cfg.layers_per_block + 1,
                    groups,
                    i + 1 != reversed.len(),
                    vb.pp(format!("up_blocks.{i}")),
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let first = cfg.block_out_channels[0];
        Ok(Self {
            conv_in: Conv3x3::load(vb.pp("conv_in"), cfg.latent_channels, reversed[0])?,
            mid_block: MidBlock::new(
                reversed[0],
                groups,
                cfg.mid_block_add_attention,
                vb.pp("mid_block"),
            )?,
            up_blocks,
            conv_norm_out: GroupNorm::load(vb.pp("conv_norm_out"), groups, first, 1e-6)?,
            conv_out: Conv3x3::load(vb.pp("conv_out"), first, cfg.out_channels)?,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let xs = self.conv_in.forward(xs)?;
        let mut xs = self.mid_block.forward(&xs)?;
        for block in &self.up_blocks {
            xs = block.forward(&xs)?;
        }
        let xs = self.conv_norm_out.forward_silu(&xs)?;
        self.conv_out.forward(&xs)
    }
}

/// Tile geometry of diffusers' `enable_tiling()`: tiles of `sample_size` pixels
/// (`sample_size / downscale` latents) overlapping by a quarter, blended linearly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TileLayout {
    pub sample_tile: usize,
    pub latent_tile: usize,
}

impl TileLayout {
    const OVERLAP_FACTOR: f64 = 0.25;

    pub fn from_config(cfg: &VaeConfig) -> Self {
        let sample_tile = cfg.sample_size.tile_size();
        Self {
            sample_tile,
            latent_tile: sample_tile / cfg.downscale_factor(),
        }
    }

    /// (stride between tile origins in the input, blend width in the output, kept rows per tile)
    /// for tiles of `input_tile` input and `output_tile` output size, with Python's `int()`.
    fn steps(input_tile: usize, output_tile: usize) -> (usize, usize, usize) {
        let stride = (input_tile as f64 * (1.0 - Self::OVERLAP_FACTOR)) as usize;
        let blend = (output_tile as f64 * Self::OVERLAP_FACTOR) as usize;
        (stride.max(1), blend, output_tile - blend)
    }
}

/// `b`'s first rows (`dim` 2) or columns (`dim` 3) fade in from `a`'s last ones:
/// `b[y] = a[len_a - e + y] · (1 - y/e) + b[y] · y/e` for `y < e = min(len_a, len_b, extent)`.
fn blend_edge(a: &Tensor, b: &Tensor, extent: usize, dim: usize) -> Result<Tensor> {
    let len_a = a.dim(dim)?;
    let len_b = b.dim(dim)?;
    let e = extent.min(len_a).min(len_b);
    if e == 0 {
        return Ok(b.clone());
    }
    let ramp: Vec<f32> = (0..e).map(|y| (y as f64 / e as f64) as f32).collect();
    let inverse: Vec<f32> = (0..e).map(|y| (1.0 - y as f64 / e as f64) as f32).collect();
    let mut shape = vec![1usize; 4];
    shape[dim] = e;
    let ramp = Tensor::from_vec(ramp, shape.as_slice(), b.device())?;
    let inverse = Tensor::from_vec(inverse, shape.as_slice(), b.device())?;
    let blended = a
        .narrow(dim, len_a - e, e)?
        .broadcast_mul(&inverse)?
        .add(&b.narrow(dim, 0, e)?.broadcast_mul(&ramp)?)?;
    if e == len_b {
        Ok(blended)
    } else {
        Tensor::cat(&[&blended, &b.narrow(dim, e, len_b - e)?], dim)
    }
}

/// Runs `f` on overlapping tiles of `xs` and blends the results exactly as diffusers'
/// `tiled_decode` / `_tiled_encode` do (including their in-place blending order).
fn run_tiled(
    xs: &Tensor,
    input_tile: usize,
    output_tile: usize,
    f: impl Fn(&Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    let (_, _, h, w) = xs.dims4()?;
    let (stride, blend, keep) = TileLayout::steps(input_tile, output_tile);
    let mut rows: Vec<Vec<Tensor>> = Vec::new();
    for top in (0..h).step_by(stride) {
        let mut row: Vec<Tensor> = Vec::new();
        for left in (0..w).step_by(stride) {
            let tile = xs.narrow(2, top, input_tile.min(h - top))?.narrow(
                3,
                left,
                input_tile.min(w - left),
            )?;
            let mut out = f(&tile)?;
            if let Some(above) = rows.last() {
                out = blend_edge(&above[row.len()], &out, blend, 2)?;
            }
            if let Some(before) = row.last() {
                out = blend_edge(before, &out, blend, 3)?;
            }
            row.push(out);
        }
        rows.push(row);
    }
    let mut result_rows = Vec::with_capacity(rows.len());
    for row in &rows {
        let cropped = row
            .iter()
            .map(|t| {
                let (_, _, th, tw) = t.dims4()?;
                t.narrow(2, 0, keep.min(th))?.narrow(3, 0, keep.min(tw))
            })
            .collect::<Result<Vec<_>>>()?;
        result_rows.push(Tensor::cat(&cropped, 3)?);
    }
    Tensor::cat(&result_rows, 2)
}

/// The SD VAE (diffusers `AutoencoderKL`).
#[derive(Debug)]
pub struct AutoencoderKL {
    encoder: Encoder,
    decoder: Decoder,
    quant_conv: Option<Conv2d>,
    post_quant_conv: Option<Conv2d>,
    config: VaeConfig,
}

impl AutoencoderKL {
    /// Builds the model from diffusers-named weights (`encoder.*`, `decoder.*`, `quant_conv`, ...).
    pub fn load(vb: VarBuilder, config: &VaeConfig) -> std::result::Result<Self, VaeError> {
        config.validate().map_err(VaeError::Unsupported)?;
        let latent = config.latent_channels;
        let quant_conv = if config.use_quant_conv {
            Some(conv1x1(2 * latent, 2 * latent, vb.pp("quant_conv"))?)
        } else {
            None
        };
        let post_quant_conv = if config.use_post_quant_conv {
            Some(conv1x1(latent, latent, vb.pp("post_quant_conv"))?)
        } else {
            None
        };
        Ok(Self {
            encoder: Encoder::new(config, vb.pp("encoder"))?,
            decoder: Decoder::new(config, vb.pp("decoder"))?,
            quant_conv,
            post_quant_conv,
            config: config.clone(),
        })
    }

    pub fn config(&self) -> &VaeConfig {
        &self.config
    }

    /// Sets the memory bound of the mid-block attention (default [`AttentionBudget::default`]).
    /// Results do not depend on it.
    pub fn with_attention_budget(mut self, budget: AttentionBudget) -> Self {
        for mid in [&mut self.encoder.mid_block, &mut self.decoder.mid_block] {
            if let Some(attention) = mid.attention.as_mut() {
                attention.budget = budget;
            }
        }
        self
    }

    /// Multiply encoded latents by this before diffusion; divide by it before [`Self::decode`].
    pub fn scaling_factor(&self) -> f64 {
        self.config.scaling_factor
    }

    fn check_input(&self, xs: &Tensor, channels: usize, what: &str) -> Result<()> {
        let (_, c, _, _) = xs.dims4()?;
        if c != channels {
            candle_core::bail!(
                "VAE {what} expects {channels} channels, got shape {:?}",
                xs.dims()
            );
        }
        if xs.dtype() != DType::F32 {
            candle_core::bail!("VAE {what} expects f32 input, got {:?}", xs.dtype());
        }
        Ok(())
    }

    fn moments(&self, image: &Tensor) -> Result<Tensor> {
        let h = self.encoder.forward(image)?;
        match &self.quant_conv {
            Some(conv) => conv.forward(&h),
            None => Ok(h),
        }
    }

    fn decode_tile(&self, latents: &Tensor) -> Result<Tensor> {
        let z = match &self.post_quant_conv {
            Some(conv) => conv.forward(latents)?,
            None => latents.clone(),
        };
        self.decoder.forward(&z)
    }

    /// Encodes images `[B, 3, H, W]` in [-1, 1] to the latent posterior (`H, W` multiples of
    /// the downscale factor).
    pub fn encode(&self, image: &Tensor) -> Result<LatentDist> {
        self.check_input(image, self.config.in_channels, "encode")?;
        LatentDist::from_moments(&self.moments(image)?)
    }

    /// Decodes latents `[B, C, h, w]` (already divided by the scaling factor) to images in
    /// roughly [-1, 1].
    pub fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        self.check_input(latents, self.config.latent_channels, "decode")?;
        self.decode_tile(latents)
    }

    /// Like [`Self::encode`] but over overlapping tiles (diffusers' `enable_tiling()`), so
    /// memory is bounded by the tile size; used when the image exceeds one tile.
    pub fn encode_tiled(&self, image: &Tensor) -> Result<LatentDist> {
        self.check_input(image, self.config.in_channels, "encode")?;
        let tiles = TileLayout::from_config(&self.config);
        let (_, _, h, w) = image.dims4()?;
        if h <= tiles.sample_tile && w <= tiles.sample_tile {
            return self.encode(image);
        }
        let moments = run_tiled(image, tiles.sample_tile, tiles.latent_tile, |t| {
            self.moments(t)
        })?;
        LatentDist::from_moments(&moments)
    }

    /// Like [`Self::decode`] but over overlapping tiles (diffusers' `enable_tiling()`).
    pub fn decode_tiled(&self, latents: &Tensor) -> Result<Tensor> {
        self.check_input(latents, self.config.latent_channels, "decode")?;
        let tiles = TileLayout::from_config(&self.config);
        let (_, _, h, w) = latents.dims4()?;
        if h <= tiles.latent_tile && w <= tiles.latent_tile {
            return self.decode(latents);
        }
        run_tiled(latents, tiles.latent_tile, tiles.sample_tile, |t| {
            self.decode_tile(t)
        })
    }
}

/// What a VAE's encoder gives for a batch of images: the KL VAE's diagonal Gaussian
/// posterior, or the tiny VAE's latents as a point (no log-variance, nothing to sample).
#[derive(Debug, Clone)]
pub struct VaeEncoding {
    /// The posterior's mean (diffusers' `latent_dist.mode()`), or the tiny VAE's latents
    /// (`AutoencoderTiny.encode(x).latents`). Not scaled.
    pub mean: Tensor,
    /// The KL posterior's clamped log-variance; `None` for a deterministic encoder.
    pub logvar: Option<Tensor>,
}

impl From<LatentDist> for VaeEncoding {
    fn from(dist: LatentDist) -> Self {
        Self {
            mean: dist.mean,
            logvar: Some(dist.logvar),
        }
    }
}

impl VaeEncoding {
    /// The posterior to sample, if the encoder has one (diffusers' `retrieve_latents` samples
    /// `latent_dist` and returns `latents` as they are).
    pub fn posterior(&self) -> Option<LatentDist> {
        self.logvar.as_ref().map(|logvar| LatentDist {
            mean: self.mean.clone(),
            logvar: logvar.clone(),
        })
    }

    /// Encodings of consecutive batches joined along the batch dimension (all of one VAE).
    pub fn cat(parts: &[VaeEncoding]) -> Result<Self> {
        let means: Vec<&Tensor> = parts.iter().map(|p| &p.mean).collect();
        let logvars: Option<Vec<&Tensor>> = parts.iter().map(|p| p.logvar.as_ref()).collect();
        Ok(Self {
            mean: Tensor::cat(&means, 0)?,
            logvar: match logvars {
                Some(l) if !l.is_empty() => Some(Tensor::cat(&l, 0)?),
                _ => None,
            },
        })
    }
}

/// The config of either VAE a pipeline runs on.
#[derive(Debug, Clone, PartialEq)]
pub enum AnyVaeConfig {
    Kl(VaeConfig),
    Tiny(AutoencoderTinyConfig),
}

impl AnyVaeConfig {
    /// Reads a VAE `config.json`, by its `_class_name` an `AutoencoderTiny` or (any other name,
    /// or none, as diffusers' SD pipelines assume) an `AutoencoderKL`.
    pub fn from_file(path: impl AsRef<Path>) -> std::result::Result<Self, VaeError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| VaeError::ConfigIo {
            path: path.to_path_buf(),
            source,
        })?;
        #[derive(Deserialize)]
        struct ClassName {
            #[serde(rename = "_class_name", default)]
            class_name: Option<String>,
        }
        let class: ClassName =
            serde_json::from_str(&text).map_err(|source| VaeError::ConfigParse {
                path: path.to_path_buf(),
                source,
            })?;
        if class.class_name.as_deref() == Some(AUTOENCODER_TINY_CLASS) {
            Ok(Self::Tiny(AutoencoderTinyConfig::from_json(&text, path)?))
        } else {
            Ok(Self::Kl(VaeConfig::from_json(&text, path)?))
        }
    }

    pub fn latent_channels(&self) -> usize {
        match self {
            Self::Kl(c) => c.latent_channels,
            Self::Tiny(c) => c.latent_channels,
        }
    }

    pub fn downscale_factor(&self) -> usize {
        match self {
            Self::Kl(c) => c.downscale_factor(),
            Self::Tiny(c) => c.downscale_factor(),
        }
    }

    /// The KL config, if this is one.
    pub fn as_kl(&self) -> Option<&VaeConfig> {
        match self {
            Self::Kl(c) => Some(c),
            Self::Tiny(_) => None,
        }
    }
}

/// diffusers' `_class_name` of the tiny VAE.
pub const AUTOENCODER_TINY_CLASS: &str = "AutoencoderTiny";

/// The VAE of a pipeline: SD's `AutoencoderKL` or the tiny `AutoencoderTiny` (TAESD), with the
/// same latent interface. Latents are scaled as diffusers' pipelines scale them: encoded
/// latents (a KL posterior sample, or the tiny VAE's latents) times [`Self::scaling_factor`]
/// go into diffusion, and latents divided by it into [`Self::decode`].
#[derive(Debug)]
// One per loaded model stack, never moved in a loop: the size difference does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Vae {
    Kl(AutoencoderKL),
    Tiny(AutoencoderTiny),
}

impl From<AutoencoderKL> for Vae {
    fn from(vae: AutoencoderKL) -> Self {
        Self::Kl(vae)
    }
}

impl From<AutoencoderTiny> for Vae {
    fn from(vae: AutoencoderTiny) -> Self {
        Self::Tiny(vae)
    }
}

impl Vae {
    /// Builds either VAE from diffusers-named weights.
    pub fn load(vb: VarBuilder, config: &AnyVaeConfig) -> std::result::Result<Self, VaeError> {
        Ok(match config {
            AnyVaeConfig::Kl(c) => Self::Kl(AutoencoderKL::load(vb, c)?),
            AnyVaeConfig::Tiny(c) => Self::Tiny(AutoencoderTiny::load(vb, c)?),
        })
    }

    pub fn config(&self) -> AnyVaeConfig {
        match self {
            Self::Kl(v) => AnyVaeConfig::Kl(v.config().clone()),
            Self::Tiny(v) => AnyVaeConfig::Tiny(v.config().clone()),
        }
    }

    /// Channels of the latents (4 for SD).
    pub fn latent_channels(&self) -> usize {
        match self {
            Self::Kl(v) => v.config().latent_channels,
            Self::Tiny(v) => v.config().latent_channels,
        }
    }

    /// Spatial factor between pixels and latents (8 for SD and TAESD).
    pub fn downscale_factor(&self) -> usize {
        match self {
            Self::Kl(v) => v.config().downscale_factor(),
            Self::Tiny(v) => v.config().downscale_factor(),
        }
    }

    /// Multiply encoded latents by this before diffusion; divide by it before [`Self::decode`]
    /// (0.18215 for SD1.x's KL VAE, 1.0 for TAESD).
    pub fn scaling_factor(&self) -> f64 {
        match self {
            Self::Kl(v) => v.scaling_factor(),
            Self::Tiny(v) => v.scaling_factor(),
        }
    }

    /// Encodes images `[B, 3, H, W]` in [-1, 1] (not scaled; see [`VaeEncoding`]).
    pub fn encode(&self, image: &Tensor) -> Result<VaeEncoding> {
        match self {
            Self::Kl(v) => Ok(v.encode(image)?.into()),
            Self::Tiny(v) => Ok(VaeEncoding {
                mean: v.encode(image)?,
                logvar: None,
            }),
        }
    }

    /// Decodes latents `[B, C, h, w]`, already divided by the scaling factor, to images in
    /// roughly [-1, 1].
    pub fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        match self {
            Self::Kl(v) => v.decode(latents),
            Self::Tiny(v) => v.decode(latents),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn tile_steps_follow_diffusers_int_truncation() {
        // SD1.5: 512 px / 64 latent tiles → stride 48 latents, blend 128 px, keep 384 px.
        assert_eq!(TileLayout::steps(64, 512), (48, 128, 384));
        assert_eq!(TileLayout::steps(512, 64), (384, 16, 48));
        assert_eq!(TileLayout::steps(16, 32), (12, 8, 24));
    }

    #[test]
    fn blend_edge_ramps_linearly() {
        let dev = Device::Cpu;
        let a = Tensor::ones((1, 1, 4, 2), DType::F32, &dev).unwrap();
        let b = Tensor::zeros((1, 1, 3, 2), DType::F32, &dev).unwrap();
        let out = blend_edge(&a, &b, 2, 2).unwrap();
        let rows: Vec<f32> = out
            .narrow(3, 0, 1)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(rows, vec![1.0, 0.5, 0.0]);
    }

    #[test]
    fn config_defaults_and_validation() {
        let cfg: VaeConfig = serde_json::from_str(r#"{"block_out_channels": [64]}"#).unwrap();
        assert_eq!(cfg.scaling_factor, 0.18215);
        assert!(cfg.validate().is_ok());
        let bad: VaeConfig =
            serde_json::from_str(r#"{"block_out_channels": [48], "norm_num_groups": 32}"#).unwrap();
        assert!(bad.validate().unwrap_err().contains("does not divide"));
        let list: VaeConfig = serde_json::from_str(r#"{"sample_size": [256, 128]}"#).unwrap();
        assert_eq!(list.sample_size.tile_size(), 256);
        assert_eq!(VaeConfig::sd15().downscale_factor(), 8);
    }
}
