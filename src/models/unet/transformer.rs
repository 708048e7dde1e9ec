//! diffusers `Attention` (default processor), `BasicTransformerBlock` (with the GEGLU
//! [`FeedForward`] of `nn/`) and the spatial `Transformer2DModel` that wraps them.

use candle_core::{Module, Result, Tensor};
use candle_nn::{LayerNorm, VarBuilder};

use super::config::TransformerSpec;
use super::ForwardContext;
use crate::models::attention_hook::{KeyValues, SelfAttentionCall};
use crate::nn::attention::multi_head_attention;
use crate::nn::feed_forward::FeedForward;
use crate::nn::layers::{conv1x1_as_linear, layer_norm, linear, GroupNorm, Linear};

/// Multi-head attention with `to_q`/`to_k`/`to_v` (no bias) and `to_out.0` (bias).
#[derive(Debug, Clone)]
pub(crate) struct Attention {
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    heads: usize,
    /// Module path, reported to self-attention hooks.
    path: String,
}

impl Attention {
    pub(crate) fn load(
        vb: VarBuilder,
        query_dim: usize,
        context_dim: usize,
        heads: usize,
        head_dim: usize,
        path: String,
    ) -> Result<Self> {
        let inner = heads * head_dim;
        Ok(Self {
            to_q: linear(vb.pp("to_q"), query_dim, inner, false)?,
            to_k: linear(vb.pp("to_k"), context_dim, inner, false)?,
            to_v: linear(vb.pp("to_v"), context_dim, inner, false)?,
            to_out: linear(vb.pp("to_out.0"), inner, query_dim, true)?,
            heads,
            path,
        })
    }

    /// `residual + attention(x → context)`, with `context` `(b, tokens, context_dim)`.
    pub(crate) fn forward_cross(
        &self,
        x: &Tensor,
        context: &Tensor,
        residual: &Tensor,
        ctx: &ForwardContext,
    ) -> Result<Tensor> {
        let q = self.to_q.forward(x)?;
        let k = self.to_k.forward(context)?;
        let v = self.to_v.forward(context)?;
        let out = multi_head_attention(&q, &k, &v, self.heads, ctx.budget)?;
        self.to_out.forward_add(&out, Some(residual))
    }

    /// `residual + self-attention(x)`, with the keys/values a
    /// [`SelfAttentionHook`](crate::models::attention_hook::SelfAttentionHook) decides on.
    pub(crate) fn forward_self(
        &self,
        x: &Tensor,
        residual: &Tensor,
        ctx: &ForwardContext,
    ) -> Result<Tensor> {
        let q = self.to_q.forward(x)?;
        let k = self.to_k.forward(x)?;
        let v = self.to_v.forward(x)?;
        let (k, v) = match ctx.attention_hook {
            None => (k, v),
            Some(hook) => {
                let call = SelfAttentionCall {
                    layer: &self.path,
                    hidden_states: x,
                    keys: &k,
                    values: &v,
                    heads: self.heads,
                };
                match hook.self_attention(&call)? {
                    KeyValues::Unchanged => (k, v),
                    KeyValues::Append { keys, values } => {
                        self.check_hook_kv(&k, &keys, &values)?;
                        (
                            Tensor::cat(&[&k, &keys], 1)?,
                            Tensor::cat(&[&v, &values], 1)?,
                        )
                    }
                    KeyValues::Replace { keys, values } => {
                        self.check_hook_kv(&k, &keys, &values)?;
                        (keys, values)
                    }
                }
            }
        };
        let out = multi_head_attention(&q, &k, &v, self.heads, ctx.budget)?;
        self.to_out.forward_add(&out, Some(residual))
    }

    fn check_hook_kv(&self, own: &Tensor, keys: &Tensor, values: &Tensor) -> Result<()> {
        let (b, _, c) = own.dims3()?;
        let (kb, kn, kc) = keys.dims3()?;
        if (kb, kc) != (b, c) || values.dims3()? != (kb, kn, kc) {
            candle_core::bail!(
                "self-attention hook at {}: keys {:?} / values {:?} must be (batch {b}, tokens, {c})",
                self.path,
                keys.dims(),
                values.dims()
            );
        }
        Ok(())
    }
}

/// Pre-norm transformer block: self-attention, cross-attention, feed-forward, each residual.
#[derive(Debug, Clone)]
struct BasicTransformerBlock {
    norm1: LayerNorm,
    attn1: Attention,
    norm2: LayerNorm,
    attn2: Attention,
    norm3: LayerNorm,
    ff: FeedForward,
    only_cross_attention: bool,
}

impl BasicTransformerBlock {
    fn load(vb: VarBuilder, dim: usize, spec: &TransformerSpec, path: &str) -> Result<Self> {
        // With only_cross_attention, attn1 attends to the text as well.
        let attn1_context = if spec.only_cross_attention {
            spec.cross_attention_dim
        } else {
            dim
        };
        Ok(Self {
            norm1: layer_norm(vb.pp("norm1"), dim, 1e-5)?,
            attn1: Attention::load(
                vb.pp("attn1"),
                dim,
                attn1_context,
                spec.heads,
                spec.head_dim,
                format!("{path}.attn1"),
            )?,
            norm2: layer_norm(vb.pp("norm2"), dim, 1e-5)?,
            attn2: Attention::load(
                vb.pp("attn2"),
                dim,
                spec.cross_attention_dim,
                spec.heads,
                spec.head_dim,
                format!("{path}.attn2"),
            )?,
            norm3: layer_norm(vb.pp("norm3"), dim, 1e-5)?,
            ff: FeedForward::load(vb.pp("ff"), dim)?,
            only_cross_attention: spec.only_cross_attention,
        })
    }

    fn forward(&self, x: &Tensor, ctx: &ForwardContext) -> Result<Tensor> {
        // Residual adds happen inside the output projections.
        let n = self.norm1.forward(x)?;
        let x = if self.only_cross_attention {
            self.attn1
                .forward_cross(&n, ctx.encoder_hidden_states, x, ctx)?
        } else {
            self.attn1.forward_self(&n, x, ctx)?
        };
        let n = self.norm2.forward(&x)?;
        let x = self
            .attn2
            .forward_cross(&n, ctx.encoder_hidden_states, &x, ctx)?;
        self.ff.forward(&self.norm3.forward(&x)?, &x)
    }
}

/// Spatial transformer: GroupNorm → `proj_in` → transformer blocks on `(b, h·w, c)` tokens →
/// `proj_out` → + input. A 1×1 conv projection (SD1.x) and a linear one (SD2.x) are the same
/// map on tokens, so both are run as a linear layer.
#[derive(Debug, Clone)]
pub(crate) struct Transformer2DModel {
    norm: GroupNorm,
    proj_in: Linear,
    blocks: Vec<BasicTransformerBlock>,
    proj_out: Linear,
}

impl Transformer2DModel {
    /// `path` is this module's state-dict path, e.g. `down_blocks.0.attentions.1`.
    pub(crate) fn load(
        vb: VarBuilder,
        channels: usize,
        spec: &TransformerSpec,
        path: &str,
    ) -> Result<Self> {
        let inner = spec.heads * spec.head_dim;
        let (proj_in, proj_out) = if spec.use_linear_projection {
            (
                linear(vb.pp("proj_in"), channels, inner, true)?,
                linear(vb.pp("proj_out"), inner, channels, true)?,
            )
        } else {
            (
                conv1x1_as_linear(vb.pp("proj_in"), channels, inner)?,
                conv1x1_as_linear(vb.pp("proj_out"), inner, channels)?,
            )
        };
        let blocks = (0..spec.depth)
            .map(|i| {
                BasicTransformerBlock::load(
                    vb.pp(format!("transformer_blocks.{i}")),
                    inner,
                    spec,
                    &format!("{path}.transformer_blocks.{i}"),
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            norm: GroupNorm::load(vb.pp("norm"), spec.norm_groups, channels, 1e-6)?,
            proj_in,
            blocks,
            proj_out,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor, ctx: &ForwardContext) -> Result<Tensor> {
        // The projections read/write channels-first layouts directly (no transposes) and
        // proj_out adds the residual.
        let mut t = self
            .proj_in
            .forward_from_channels_first(&self.norm.forward(x)?)?;
        for block in &self.blocks {
            t = block.forward(&t, ctx)?;
        }
        self.proj_out.forward_to_channels_first_add(&t, x)
    }
}
