//! AnimateDiff's temporal transformer: diffusers `AnimateDiffTransformer3D` (the
//! `temporal_transformer` of the original checkpoints). At every pixel it runs a small
//! transformer along the frame axis, so each frame sees the same pixel in the other frames of
//! its sequence:
//!
//! ```text
//! x (b·f, c, h, w) ─ GroupNorm over (c/g, f, h, w) ─ (b·h·w, f, c) ─ proj_in
//!   ─ blocks: [LayerNorm + pos ─ self-attention over f] ×2, LayerNorm ─ GEGLU feed-forward
//!   ─ proj_out ─ back to (b·f, c, h, w) ─ + x
//! ```
//!
//! Both attention layers of a block attend over frames (diffusers builds them with
//! `double_self_attention`; the originals call them `Temporal_Self, Temporal_Self`), and the
//! sinusoidal positional encoding is added to the normalised input of each.

use candle_core::{Device, Module, Result, Tensor};
use candle_nn::{LayerNorm, VarBuilder};

use crate::nn::attention::multi_head_attention;
use crate::nn::feed_forward::FeedForward;
use crate::nn::layers::{layer_norm, linear, GroupNorm, Linear};
use crate::nn::AttentionBudget;

/// Shape of one temporal transformer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TemporalTransformerSpec {
    /// Channels of the UNet layer it follows (also its inner width).
    pub channels: usize,
    pub heads: usize,
    /// Transformer blocks (`motion_transformer_layers_per_block`).
    pub depth: usize,
    /// The UNet's `norm_num_groups` (diffusers' `UNetMotionModel` uses the UNet's group count,
    /// not the adapter's `motion_norm_num_groups`).
    pub norm_groups: usize,
    /// Longest frame sequence the positional encoding covers.
    pub max_frames: usize,
}

/// Where the positional encoding comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PositionalEncoding {
    /// Each block's `pos_embed.pe` buffer as stored in the weights (diffusers layout: diffusers
    /// loads it from the file, e.g. rounded to fp16 in fp16 variants).
    Stored,
    /// Recomputed, as diffusers does when converting an original checkpoint.
    Computed,
}

/// AnimateDiff's sinusoidal encoding `(max_frames, dim)`: `pe[p, 2i] = sin(p·ω_i)`,
/// `pe[p, 2i+1] = cos(p·ω_i)`, `ω_i = exp(2i · −ln(10000)/dim)`, in f32 as torch computes it.
pub fn sinusoidal_encoding(max_frames: usize, dim: usize, device: &Device) -> Result<Tensor> {
    let scale = (-(10000f64.ln()) / dim as f64) as f32;
    let mut pe = vec![0f32; max_frames * dim];
    for p in 0..max_frames {
        for i in (0..dim).step_by(2) {
            let angle = p as f32 * (i as f32 * scale).exp();
            pe[p * dim + i] = angle.sin();
            if i + 1 < dim {
                pe[p * dim + i + 1] = angle.cos();
            }
        }
    }
    Tensor::from_vec(pe, (max_frames, dim), device)
}

/// Self-attention over frames: `to_q`/`to_k`/`to_v` without bias, `to_out.0` with bias.
#[derive(Debug, Clone)]
struct FrameAttention {
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    heads: usize,
}

impl FrameAttention {
    fn load(vb: VarBuilder, dim: usize, heads: usize) -> Result<Self> {
        Ok(Self {
            to_q: linear(vb.pp("to_q"), dim, dim, false)?,
            to_k: linear(vb.pp("to_k"), dim, dim, false)?,
            to_v: linear(vb.pp("to_v"), dim, dim, false)?,
            to_out: linear(vb.pp("to_out.0"), dim, dim, true)?,
            heads,
        })
    }

    /// `residual + attention(x)` for `x` `(sequences, frames, dim)`.
    fn forward(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        let q = self.to_q.forward_add(x, None)?;
        let k = self.to_k.forward_add(x, None)?;
        let v = self.to_v.forward_add(x, None)?;
        let out = multi_head_attention(&q, &k, &v, self.heads, AttentionBudget::default())?;
        self.to_out.forward_add(&out, Some(residual))
    }
}

/// diffusers `BasicTransformerBlock` as the motion modules configure it: two frame
/// self-attentions and a feed-forward, each pre-normed and residual, with the positional
/// encoding added to the attentions' normalised inputs.
#[derive(Debug, Clone)]
struct TemporalBlock {
    norm1: LayerNorm,
    attn1: FrameAttention,
    norm2: LayerNorm,
    attn2: FrameAttention,
    norm3: LayerNorm,
    ff: FeedForward,
    /// `(max_frames, dim)`.
    pos_embed: Tensor,
}

impl TemporalBlock {
    fn load(
        vb: VarBuilder,
        spec: &TemporalTransformerSpec,
        encoding: PositionalEncoding,
    ) -> Result<Self> {
        let dim = spec.channels;
        let pos_embed = match encoding {
            PositionalEncoding::Stored => vb
                .get((1, spec.max_frames, dim), "pos_embed.pe")?
                .squeeze(0)?,
            PositionalEncoding::Computed => {
                sinusoidal_encoding(spec.max_frames, dim, vb.device())?.to_dtype(vb.dtype())?
            }
        };
        Ok(Self {
            norm1: layer_norm(vb.pp("norm1"), dim, 1e-5)?,
            attn1: FrameAttention::load(vb.pp("attn1"), dim, spec.heads)?,
            norm2: layer_norm(vb.pp("norm2"), dim, 1e-5)?,
            attn2: FrameAttention::load(vb.pp("attn2"), dim, spec.heads)?,
            norm3: layer_norm(vb.pp("norm3"), dim, 1e-5)?,
            ff: FeedForward::load(vb.pp("ff"), dim)?,
            pos_embed,
        })
    }

    /// `x` `(sequences, frames, dim)`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let frames = x.dim(1)?;
        let pe = self.pos_embed.narrow(0, 0, frames)?.unsqueeze(0)?;
        let n = self.norm1.forward(x)?.broadcast_add(&pe)?;
        let x = self.attn1.forward(&n, x)?;
        let n = self.norm2.forward(&x)?.broadcast_add(&pe)?;
        let x = self.attn2.forward(&n, &x)?;
        self.ff.forward(&self.norm3.forward(&x)?, &x)
    }
}

/// One motion module (`AnimateDiffTransformer3D`).
#[derive(Debug, Clone)]
pub struct TemporalTransformer {
    norm: GroupNorm,
    proj_in: Linear,
    blocks: Vec<TemporalBlock>,
    proj_out: Linear,
    spec: TemporalTransformerSpec,
}

impl TemporalTransformer {
    /// Loads from diffusers names relative to `vb` (`norm`, `proj_in`,
    /// `transformer_blocks.{k}.…`, `proj_out`).
    pub fn load(
        vb: VarBuilder,
        spec: TemporalTransformerSpec,
        encoding: PositionalEncoding,
    ) -> Result<Self> {
        let c = spec.channels;
        if spec.heads == 0 || !c.is_multiple_of(spec.heads) {
            candle_core::bail!(
                "motion module {}: {} heads do not divide {c} channels",
                vb.prefix(),
                spec.heads
            );
        }
        let blocks = (0..spec.depth)
            .map(|k| TemporalBlock::load(vb.pp(format!("transformer_blocks.{k}")), &spec, encoding))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            norm: GroupNorm::load(vb.pp("norm"), spec.norm_groups, c, 1e-6)?,
            proj_in: linear(vb.pp("proj_in"), c, c, true)?,
            blocks,
            proj_out: linear(vb.pp("proj_out"), c, c, true)?,
            spec,
        })
    }

    pub fn spec(&self) -> &TemporalTransformerSpec {
        &self.spec
    }

    /// `x` `(batch·frames, c, h, w)`, the frames of each batch entry consecutive (diffusers'
    /// `(b f) c h w` order) → same shape, `x` plus the temporal transformer's output.
    pub fn forward(&self, x: &Tensor, frames: usize) -> Result<Tensor> {
        let (bf, c, h, w) = x.dims4()?;
        if frames == 0 || bf % frames != 0 {
            candle_core::bail!("motion module: batch of {bf} is not a multiple of {frames} frames");
        }
        if frames > self.spec.max_frames {
            candle_core::bail!(
                "motion module: {frames} frames in one sequence, its positional encoding covers {} \
                 (use a context length of at most {})",
                self.spec.max_frames,
                self.spec.max_frames
            );
        }
        if c != self.spec.channels {
            candle_core::bail!(
                "motion module: input has {c} channels, the module {}",
                self.spec.channels
            );
        }
        let b = bf / frames;
        let hw = h * w;
        // (b, f, c, hw) → (b, c, f, hw): the group norm spans all frames of a sequence.
        let grouped = x
            .reshape((b, frames, c, hw))?
            .transpose(1, 2)?
            .contiguous()?;
        let normed = self.norm.forward(&grouped)?;
        // (b, c, f, hw) → (b, hw, f, c) → one frame sequence per pixel.
        let tokens = normed
            .permute((0, 3, 2, 1))?
            .contiguous()?
            .reshape((b * hw, frames, c))?;
        let mut t = self.proj_in.forward_add(&tokens, None)?;
        for block in &self.blocks {
            t = block.forward(&t)?;
        }
        let out = self.proj_out.forward_add(&t, None)?;
        // (b, hw, f, c) → (b, f, c, hw) → (b·f, c, h, w).
        let out = out
            .reshape((b, hw, frames, c))?
            .permute((0, 2, 3, 1))?
            .contiguous()?
            .reshape((bf, c, h, w))?;
        out + x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sinusoidal_encoding_interleaves_sin_and_cos() {
        let pe = sinusoidal_encoding(3, 4, &Device::Cpu).unwrap();
        let pe: Vec<Vec<f32>> = pe.to_vec2().unwrap();
        // Position 0: sin 0 = 0, cos 0 = 1.
        assert_eq!(pe[0], vec![0.0, 1.0, 0.0, 1.0]);
        // ω_0 = 1, ω_1 = 10000^(-2/4) = 0.01.
        let expected = [2f32.sin(), 2f32.cos(), 0.02f32.sin(), 0.02f32.cos()];
        for (a, b) in pe[2].iter().zip(expected) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
    }
}
