//! Hooks into the UNet forward pass for temporal consistency, so that cross-frame attention and
//! motion modules live outside the model code.
//!
//! * [`SelfAttentionHook`] is called in every self-attention (`attn1` of every
//!   `BasicTransformerBlock`). It sees the projected keys/values of the whole batch and may add
//!   keys/values (from other frames of the batch, or cached from an earlier call) or replace
//!   them. Cross-frame attention ("each frame attends to itself, the anchor frame and the
//!   previous frame", Rerender-A-Video style, or Text2Video-Zero's "attend to the first frame")
//!   is a hook; [`CrossFrameKeyValues`] is a ready-made one for frames that share the batch.
//!   To attend to a frame rendered in an *earlier* UNet call (an anchor from a previous batch),
//!   a hook stores `call.keys`/`call.values` per `call.layer` during the anchor's pass (interior
//!   mutability, e.g. a `Mutex<HashMap<String, (Tensor, Tensor)>>`) and returns them with
//!   [`KeyValues::Append`] in later passes. Note that keys depend on the denoising step, so a
//!   cache is per step.
//! * [`LayerOutputHook`] is called after each (resnet, attention) layer of every down and up
//!   block and after each mid-block attention: exactly where AnimateDiff's `UNetMotionModel`
//!   runs its motion modules. The position is named like the motion module's weights in a
//!   diffusers `MotionAdapter` (`down_blocks.{i}.motion_modules.{j}`,
//!   `mid_block.motion_modules.{j}`, `up_blocks.{i}.motion_modules.{j}`), so a motion-module
//!   hook looks up its temporal transformer by that name, reshapes the `(batch·frames, c, h, w)`
//!   tensor to frame sequences, runs it and returns the result.

use candle_core::{Result, Tensor};

/// What a self-attention layer hands to a [`SelfAttentionHook`].
#[derive(Debug, Clone, Copy)]
pub struct SelfAttentionCall<'a> {
    /// Module path of the attention in diffusers' state-dict naming, e.g.
    /// `down_blocks.0.attentions.1.transformer_blocks.0.attn1` or `mid_block.attentions.0.transformer_blocks.0.attn1`.
    pub layer: &'a str,
    /// The attention's (layer-normalised) input, `(batch, tokens, channels)`.
    pub hidden_states: &'a Tensor,
    /// Keys of every batch entry, `(batch, tokens, heads·head_dim)`.
    pub keys: &'a Tensor,
    /// Values of every batch entry, `(batch, tokens, heads·head_dim)`.
    pub values: &'a Tensor,
    /// Number of attention heads (keys are split into `heads` slices of the last dimension).
    pub heads: usize,
}

/// The keys/values a self-attention should use, as decided by a hook.
#[derive(Debug, Clone)]
pub enum KeyValues {
    /// Attend to the batch entry's own keys/values only (no change).
    Unchanged,
    /// Concatenate these after the entry's own keys/values along the token dimension;
    /// `(batch, extra_tokens, heads·head_dim)` each.
    Append { keys: Tensor, values: Tensor },
    /// Attend to these instead of the entry's own keys/values;
    /// `(batch, tokens', heads·head_dim)` each.
    Replace { keys: Tensor, values: Tensor },
}

/// Called in every self-attention of the UNet. Must be thread-safe so that one hook can serve
/// several UNet calls; use interior mutability for caches.
pub trait SelfAttentionHook: Send + Sync {
    fn self_attention(&self, call: &SelfAttentionCall<'_>) -> Result<KeyValues>;
}

/// Called after each layer where a motion module can sit (see the module docs). Return
/// `Some(new_hidden_states)` (same shape) to replace the layer's output, `None` to keep it.
pub trait LayerOutputHook: Send + Sync {
    fn after_layer(&self, position: &str, hidden_states: &Tensor) -> Result<Option<Tensor>>;
}

/// Cross-frame attention among the entries of one batch: entry `i` also (or only) attends to the
/// keys/values of entries `sources[i]`.
#[derive(Debug, Clone)]
pub struct CrossFrameKeyValues {
    /// For each batch entry, the batch entries whose keys/values it attends to; every entry must
    /// list the same number of sources.
    sources: Vec<Vec<u32>>,
    /// `true`: attend to the sources only; `false`: to itself and then the sources.
    replace: bool,
}

impl CrossFrameKeyValues {
    /// `sources[i]` lists the batch entries entry `i` attends to (besides itself unless
    /// `replace`). Fails if the lists differ in length or are empty.
    pub fn new(sources: Vec<Vec<usize>>, replace: bool) -> Result<Self> {
        let width = sources.first().map_or(0, Vec::len);
        if width == 0 || sources.iter().any(|s| s.len() != width) {
            candle_core::bail!("cross-frame attention: every batch entry needs the same non-zero number of source frames");
        }
        let batch = sources.len();
        if let Some(bad) = sources.iter().flatten().find(|&&s| s >= batch) {
            candle_core::bail!(
                "cross-frame attention: source frame {bad} outside the batch of {batch}"
            );
        }
        let sources = sources
            .into_iter()
            .map(|s| s.into_iter().map(|i| i as u32).collect())
            .collect();
        Ok(Self { sources, replace })
    }

    /// The Rerender-A-Video layout: the batch holds `groups` runs of `frames` frames (e.g. 2 runs
    /// for classifier-free guidance: unconditional frames, then conditional ones); every frame
    /// attends to itself, to the first frame of its run (the anchor) and to the previous frame
    /// (the anchor itself for the first frame).
    pub fn anchor_and_previous(frames: usize, groups: usize) -> Result<Self> {
        let mut sources = Vec::with_capacity(frames * groups);
        for g in 0..groups {
            let base = g * frames;
            for f in 0..frames {
                sources.push(vec![base, base + f.saturating_sub(1)]);
            }
        }
        Self::new(sources, false)
    }

    /// Text2Video-Zero: every frame attends to the first frame of its run only.
    pub fn anchor_only(frames: usize, groups: usize) -> Result<Self> {
        let sources = (0..groups)
            .flat_map(|g| std::iter::repeat_n(vec![g * frames], frames))
            .collect();
        Self::new(sources, true)
    }

    fn gather(&self, x: &Tensor) -> Result<Tensor> {
        let width = self.sources[0].len();
        let parts = (0..width)
            .map(|j| {
                let idx: Vec<u32> = self.sources.iter().map(|s| s[j]).collect();
                let idx = Tensor::from_vec(idx, self.sources.len(), x.device())?;
                x.index_select(&idx, 0)
            })
            .collect::<Result<Vec<_>>>()?;
        Tensor::cat(&parts, 1)
    }
}

impl SelfAttentionHook for CrossFrameKeyValues {
    fn self_attention(&self, call: &SelfAttentionCall<'_>) -> Result<KeyValues> {
        let batch = call.keys.dim(0)?;
        if batch != self.sources.len() {
            candle_core::bail!(
                "cross-frame attention at {}: batch of {batch} but sources given for {}",
                call.layer,
                self.sources.len()
            );
        }
        let keys = self.gather(call.keys)?;
        let values = self.gather(call.values)?;
        Ok(if self.replace {
            KeyValues::Replace { keys, values }
        } else {
            KeyValues::Append { keys, values }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn anchor_and_previous_per_run() {
        let h = CrossFrameKeyValues::anchor_and_previous(3, 2).unwrap();
        let expected: Vec<Vec<u32>> = vec![
            vec![0, 0],
            vec![0, 0],
            vec![0, 1],
            vec![3, 3],
            vec![3, 3],
            vec![3, 4],
        ];
        assert_eq!(h.sources, expected);
        let a = CrossFrameKeyValues::anchor_only(2, 2).unwrap();
        assert_eq!(a.sources, vec![vec![0], vec![0], vec![2], vec![2]]);
        assert!(CrossFrameKeyValues::new(vec![vec![0], vec![]], false).is_err());
        assert!(CrossFrameKeyValues::new(vec![vec![2], vec![0]], false).is_err());
    }

    #[test]
    fn gathers_sources_along_tokens() {
        // keys[b, t, c] = 100 b + t
        let keys: Vec<f32> = (0..3)
            .flat_map(|b| (0..2).map(move |t| (100 * b + t) as f32))
            .collect();
        let keys = Tensor::from_vec(keys, (3, 2, 1), &Device::Cpu).unwrap();
        let hook = CrossFrameKeyValues::anchor_and_previous(3, 1).unwrap();
        let call = SelfAttentionCall {
            layer: "x",
            hidden_states: &keys,
            keys: &keys,
            values: &keys,
            heads: 1,
        };
        match hook.self_attention(&call).unwrap() {
            KeyValues::Append { keys, .. } => {
                let k: Vec<Vec<f32>> = keys.squeeze(2).unwrap().to_vec2().unwrap();
                assert_eq!(k[2], vec![0.0, 1.0, 100.0, 101.0]);
                assert_eq!(k[1], vec![0.0, 1.0, 0.0, 1.0]);
            }
            other => panic!("expected Append, got {other:?}"),
        }
    }
}
