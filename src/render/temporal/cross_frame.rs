//! Cross-frame attention across UNet calls: every frame's self-attention also attends to the
//! keys/values the anchor frame and the previous frame had in the same layer at the same
//! denoising step (Rerender-A-Video's cross-frame attention; Text2Video-Zero attends to the
//! first frame only). Frames are rendered one after another, so the references are cached:
//!
//! * the anchor's keys/values are recorded once, in a pass over the anchor frame
//!   ([`CrossFrameAttention::begin_anchor`]), and kept for the whole render;
//! * the previous frame's are a single slot per (layer, step): a frame reads the slot, then
//!   overwrites it with its own, so at any time the cache holds one frame.
//!
//! Steps are keyed by their index in the *full* schedule (`first_step + i` for img2img), so a
//! frame denoised from a lower strength (fewer, later steps) meets the references at the same
//! noise level.
//!
//! Memory: per cached frame, Σ over self-attention layers of `2 (k, v) × batch × tokens ×
//! channels` values per step, stored as f16. For SD1.5 at 512² with guidance (batch 2) that is
//! 92 MB per step whole; layers above `max_reference_tokens` tokens are average-pooled over
//! 2×2 token blocks (keys are a linear, bias-free projection, so pooled keys are the keys of
//! the pooled hidden states), which with the default 1024 brings it to 53 MB per step, about
//! 1.1 GB per cached frame at 20 steps and 2.1 GB for anchor + previous.
//! [`CrossFrameAttention::cache_bytes`] reports the real figure.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use candle_core::{DType, Result, Tensor};

use crate::models::attention_hook::{KeyValues, SelfAttentionCall, SelfAttentionHook};
use crate::preset::temporal::CrossFrameSettings;

/// Keys and values of one layer at one step, pooled, stored as f16.
#[derive(Clone, Debug)]
struct CachedKv {
    keys: Tensor,
    values: Tensor,
}

impl CachedKv {
    fn bytes(&self) -> usize {
        (self.keys.elem_count() + self.values.elem_count()) * self.keys.dtype().size_in_bytes()
    }
}

/// (layer path, step index in the full schedule).
type CacheKey = (String, usize);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pass {
    /// Not inside a frame: the hook leaves attention unchanged.
    Idle,
    /// Recording the anchor's keys/values.
    Anchor,
    /// Rendering a frame: attend to the references, then become the previous frame.
    Frame,
}

struct State {
    pass: Pass,
    step: usize,
    anchor: HashMap<CacheKey, CachedKv>,
    previous: HashMap<CacheKey, CachedKv>,
}

/// The self-attention hook; see the module docs. One per render, shared by every frame.
pub struct CrossFrameAttention {
    use_anchor: bool,
    use_previous: bool,
    max_reference_tokens: usize,
    /// Latent height and width, to recover each layer's token grid for pooling.
    latent_size: (usize, usize),
    state: Mutex<State>,
}

impl CrossFrameAttention {
    pub fn new(settings: &CrossFrameSettings, latent_height: usize, latent_width: usize) -> Self {
        Self {
            use_anchor: settings.anchor,
            use_previous: settings.previous,
            max_reference_tokens: settings.max_reference_tokens.max(1) as usize,
            latent_size: (latent_height, latent_width),
            state: Mutex::new(State {
                pass: Pass::Idle,
                step: 0,
                anchor: HashMap::new(),
                previous: HashMap::new(),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic inside the UNet leaves no half-written entry that matters: recover the lock.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Start the anchor pass: its keys/values replace any recorded before. `first_step` is
    /// the index of its first step in the full schedule.
    pub fn begin_anchor(&self, first_step: usize) {
        let mut s = self.state();
        s.anchor.clear();
        s.pass = Pass::Anchor;
        s.step = first_step;
    }

    /// Start rendering a frame whose first step has index `first_step` in the full schedule.
    pub fn begin_frame(&self, first_step: usize) {
        let mut s = self.state();
        s.pass = Pass::Frame;
        s.step = first_step;
    }

    /// Call after every denoising step of the current pass.
    pub fn next_step(&self) {
        self.state().step += 1;
    }

    /// The current pass is over.
    pub fn end_pass(&self) {
        self.state().pass = Pass::Idle;
    }

    /// Forget the previous frame (at a batch start: the state a resumed render can rebuild).
    pub fn clear_previous(&self) {
        self.state().previous.clear();
    }

    /// Make the anchor the previous frame (when the anchor's own rendering is used as a frame).
    pub fn previous_from_anchor(&self) {
        let mut s = self.state();
        s.previous = if self.use_previous {
            s.anchor.clone()
        } else {
            HashMap::new()
        };
    }

    /// Whether an anchor pass has been recorded.
    pub fn has_anchor(&self) -> bool {
        !self.state().anchor.is_empty()
    }

    /// Bytes held by the caches (anchor, previous).
    pub fn cache_bytes(&self) -> (usize, usize) {
        let s = self.state();
        let total = |m: &HashMap<CacheKey, CachedKv>| m.values().map(CachedKv::bytes).sum();
        (total(&s.anchor), total(&s.previous))
    }

    fn pooled(&self, call: &SelfAttentionCall<'_>) -> Result<CachedKv> {
        let tokens = call.keys.dim(1)?;
        let (h, w) = self.latent_size;
        let grid = token_grid(tokens, h, w).ok_or_else(|| {
            candle_core::Error::Msg(format!(
                "cross-frame attention at {}: {tokens} tokens do not match a level of the \
                 {h}x{w} latent",
                call.layer
            ))
        })?;
        let factor = pool_factor(grid, self.max_reference_tokens);
        let pool = |x: &Tensor| pool_tokens(x, grid, factor)?.to_dtype(DType::F16);
        Ok(CachedKv {
            keys: pool(call.keys)?,
            values: pool(call.values)?,
        })
    }
}

impl SelfAttentionHook for CrossFrameAttention {
    fn self_attention(&self, call: &SelfAttentionCall<'_>) -> Result<KeyValues> {
        let mut s = self.state();
        let key = (call.layer.to_string(), s.step);
        match s.pass {
            Pass::Idle => Ok(KeyValues::Unchanged),
            Pass::Anchor => {
                let own = self.pooled(call)?;
                s.anchor.insert(key, own);
                Ok(KeyValues::Unchanged)
            }
            Pass::Frame => {
                let batch = call.keys.dim(0)?;
                let mut references = Vec::with_capacity(2);
                if self.use_anchor {
                    references.extend(s.anchor.get(&key).cloned());
                }
                if self.use_previous {
                    references.extend(s.previous.get(&key).cloned());
                    let own = self.pooled(call)?;
                    s.previous.insert(key, own);
                }
                drop(s);
                if references.is_empty() {
                    return Ok(KeyValues::Unchanged);
                }
                if let Some(r) = references
                    .iter()
                    .find(|r| r.keys.dim(0).ok() != Some(batch))
                {
                    candle_core::bail!(
                        "cross-frame attention at {}: the reference was recorded with batch {:?}, \
                         this frame runs batch {batch} (guidance settings must not change)",
                        call.layer,
                        r.keys.dims()
                    );
                }
                let cat = |pick: fn(&CachedKv) -> &Tensor| -> Result<Tensor> {
                    let parts: Vec<&Tensor> = references.iter().map(pick).collect();
                    Tensor::cat(&parts, 1)?.to_dtype(call.keys.dtype())
                };
                Ok(KeyValues::Append {
                    keys: cat(|r| &r.keys)?,
                    values: cat(|r| &r.values)?,
                })
            }
        }
    }
}

/// SD1.5's self-attention layers per UNet level `(level, channels, layers)`: two transformers
/// in each of the first three down blocks, three in each of the matching up blocks, one in
/// the middle block (level 3).
const SD15_SELF_ATTENTION_LAYERS: [(u32, usize, usize); 4] =
    [(0, 320, 5), (1, 640, 5), (2, 1280, 5), (3, 1280, 1)];

/// Bytes one cached reference frame takes per denoising step for SD1.5 with a
/// `latent_height × latent_width` latent, `batch` (2 with guidance) and the pooling of
/// `max_reference_tokens` (f16 keys and values, as [`CrossFrameAttention`] stores them).
pub fn sd15_reference_bytes_per_step(
    latent_height: usize,
    latent_width: usize,
    batch: usize,
    max_reference_tokens: usize,
) -> usize {
    SD15_SELF_ATTENTION_LAYERS
        .iter()
        .map(|&(level, channels, layers)| {
            let (rows, cols) = level_grid(latent_height, latent_width, level);
            let factor = pool_factor((rows, cols), max_reference_tokens);
            let tokens = rows.div_ceil(factor) * cols.div_ceil(factor);
            2 * batch * tokens * channels * layers * DType::F16.size_in_bytes()
        })
        .sum()
}

/// The extra self-attention work of attending to `references` cached frames, as a fraction
/// of the plain self-attention work (SD1.5 layers; attention cost ∝ queries × keys).
pub fn sd15_extra_attention_fraction(
    latent_height: usize,
    latent_width: usize,
    references: usize,
    max_reference_tokens: usize,
) -> f64 {
    let (mut plain, mut extra) = (0.0, 0.0);
    for &(level, channels, layers) in &SD15_SELF_ATTENTION_LAYERS {
        let (rows, cols) = level_grid(latent_height, latent_width, level);
        let factor = pool_factor((rows, cols), max_reference_tokens);
        let queries = (rows * cols) as f64;
        let pooled = (rows.div_ceil(factor) * cols.div_ceil(factor)) as f64;
        let weight = (channels * layers) as f64 * queries;
        plain += weight * queries;
        extra += weight * pooled * references as f64;
    }
    if plain == 0.0 {
        0.0
    } else {
        extra / plain
    }
}

/// The token grid of UNet level `level` (each level halves the previous, rounding up).
fn level_grid(height: usize, width: usize, level: u32) -> (usize, usize) {
    let (mut h, mut w) = (height.max(1), width.max(1));
    for _ in 0..level {
        (h, w) = (h.div_ceil(2), w.div_ceil(2));
    }
    (h, w)
}

/// The token grid `(rows, cols)` of a UNet level with `tokens` tokens for a latent of
/// `height × width`: each level halves the previous one, rounding up (stride-2 convolutions
/// with padding 1). `None` if no level has that many tokens.
pub fn token_grid(tokens: usize, height: usize, width: usize) -> Option<(usize, usize)> {
    let (mut h, mut w) = (height.max(1), width.max(1));
    loop {
        if h * w == tokens {
            return Some((h, w));
        }
        if h * w < tokens || (h == 1 && w == 1) {
            return None;
        }
        (h, w) = (h.div_ceil(2), w.div_ceil(2));
    }
}

/// The smallest power-of-two pooling factor that brings a `rows × cols` grid to at most
/// `max_tokens` tokens.
pub fn pool_factor((rows, cols): (usize, usize), max_tokens: usize) -> usize {
    let mut factor = 1;
    while rows.div_ceil(factor) * cols.div_ceil(factor) > max_tokens.max(1) {
        factor *= 2;
    }
    factor
}

/// Average-pool tokens `(batch, rows·cols, channels)` over `factor × factor` blocks of the
/// grid; blocks past the edge repeat the last row/column.
pub fn pool_tokens(x: &Tensor, (rows, cols): (usize, usize), factor: usize) -> Result<Tensor> {
    if factor <= 1 {
        return Ok(x.clone());
    }
    let (out_rows, out_cols) = (rows.div_ceil(factor), cols.div_ceil(factor));
    let mut sum: Option<Tensor> = None;
    for dy in 0..factor {
        for dx in 0..factor {
            let index: Vec<u32> = (0..out_rows)
                .flat_map(|r| {
                    let y = (r * factor + dy).min(rows - 1);
                    (0..out_cols).map(move |c| (y * cols + (c * factor + dx).min(cols - 1)) as u32)
                })
                .collect();
            let index = Tensor::from_vec(index, out_rows * out_cols, x.device())?;
            let part = x.index_select(&index, 1)?;
            sum = Some(match sum {
                None => part,
                Some(s) => (s + part)?,
            });
        }
    }
    let sum = sum.expect("factor >= 2 gives at least one block offset");
    sum.affine(1.0 / (factor * factor) as f64, 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn token_grids_follow_the_unet_levels() {
        assert_eq!(token_grid(64 * 64, 64, 64), Some((64, 64)));
        assert_eq!(token_grid(32 * 32, 64, 64), Some((32, 32)));
        assert_eq!(token_grid(8 * 8, 64, 64), Some((8, 8)));
        // 912×512 pixels: 114×64 latents, then 57×32, 29×16, 15×8.
        assert_eq!(token_grid(16 * 29, 64, 114), Some((16, 29)));
        assert_eq!(token_grid(15 * 8, 64, 114), Some((8, 15)));
        assert_eq!(token_grid(100, 64, 64), None);
    }

    #[test]
    fn sd15_cache_size_matches_the_documented_figures() {
        // 512² with guidance: 92 MB per step unpooled, 53 MB with the default 1024 tokens.
        let whole = sd15_reference_bytes_per_step(64, 64, 2, usize::MAX);
        assert_eq!(
            whole,
            8 * (5 * 4096 * 320 + 5 * 1024 * 640 + 5 * 256 * 1280 + 64 * 1280)
        );
        assert_eq!(whole / 100_000, 924);
        let pooled = sd15_reference_bytes_per_step(64, 64, 2, 1024);
        assert_eq!(pooled / 100_000, 530);
        // Without guidance the batch halves.
        assert_eq!(sd15_reference_bytes_per_step(64, 64, 1, 1024) * 2, pooled);
    }

    #[test]
    fn extra_attention_counts_pooled_reference_keys() {
        // One level only matters at a 1×1 latent: 1 query, 1 key per reference.
        assert!((sd15_extra_attention_fraction(1, 1, 2, 1024) - 2.0).abs() < 1e-12);
        // Unpooled, every reference doubles the keys of every layer.
        let f = sd15_extra_attention_fraction(64, 64, 1, usize::MAX);
        assert!((f - 1.0).abs() < 1e-12);
        // Pooling the 4096-token level to 1024 keys cuts the extra work.
        assert!(sd15_extra_attention_fraction(64, 64, 1, 1024) < 0.5);
        assert_eq!(sd15_extra_attention_fraction(64, 64, 0, 1024), 0.0);
    }

    #[test]
    fn pool_factor_is_the_smallest_power_of_two_that_fits() {
        assert_eq!(pool_factor((64, 64), 1024), 2);
        assert_eq!(pool_factor((32, 32), 1024), 1);
        assert_eq!(pool_factor((64, 64), 256), 4);
        assert_eq!(pool_factor((64, 64), 4096), 1);
        assert_eq!(pool_factor((5, 3), 2), 4);
    }

    #[test]
    fn pooling_averages_blocks_and_repeats_edges() {
        // 3×3 grid, token value = 10·row + col, 1 channel.
        let data: Vec<f32> = (0..3)
            .flat_map(|r| (0..3).map(move |c| (10 * r + c) as f32))
            .collect();
        let x = Tensor::from_vec(data, (1, 9, 1), &Device::Cpu).unwrap();
        let pooled = pool_tokens(&x, (3, 3), 2).unwrap();
        let got: Vec<f32> = pooled.flatten_all().unwrap().to_vec1().unwrap();
        // Blocks: {0,1,10,11}, {2,2,12,12}, {20,21,20,21}, {22,22,22,22}.
        assert_eq!(got, vec![5.5, 7.0, 20.5, 22.0]);
    }

    fn call_with<'a>(layer: &'a str, kv: &'a Tensor) -> SelfAttentionCall<'a> {
        SelfAttentionCall {
            layer,
            hidden_states: kv,
            keys: kv,
            values: kv,
            heads: 1,
        }
    }

    fn appended(out: KeyValues) -> Vec<f32> {
        match out {
            KeyValues::Append { keys, .. } => keys.flatten_all().unwrap().to_vec1().unwrap(),
            other => panic!("expected Append, got {other:?}"),
        }
    }

    #[test]
    fn frames_attend_to_anchor_and_previous_at_the_same_step() {
        let settings = CrossFrameSettings {
            enabled: true,
            ..CrossFrameSettings::default()
        };
        // A 2×2 latent: one level of 4 tokens, 1 channel, batch 1.
        let hook = CrossFrameAttention::new(&settings, 2, 2);
        let kv = |v: f32| Tensor::full(v, (1, 4, 1), &Device::Cpu).unwrap();
        let layer = "down_blocks.0.attentions.0.transformer_blocks.0.attn1";

        // Anchor: two steps, values 1 and 2.
        hook.begin_anchor(0);
        for v in [1.0, 2.0] {
            let t = kv(v);
            assert!(matches!(
                hook.self_attention(&call_with(layer, &t)).unwrap(),
                KeyValues::Unchanged
            ));
            hook.next_step();
        }
        hook.end_pass();
        assert!(hook.has_anchor());

        // First frame: anchor only (no previous yet), then becomes the previous frame.
        hook.begin_frame(0);
        let t = kv(10.0);
        assert_eq!(
            appended(hook.self_attention(&call_with(layer, &t)).unwrap()),
            vec![1.0; 4]
        );
        hook.next_step();
        let t = kv(20.0);
        assert_eq!(
            appended(hook.self_attention(&call_with(layer, &t)).unwrap()),
            vec![2.0; 4]
        );
        hook.end_pass();

        // A frame starting at step 1 (lower strength) meets step-1 references.
        hook.begin_frame(1);
        let t = kv(30.0);
        let got = appended(hook.self_attention(&call_with(layer, &t)).unwrap());
        assert_eq!(got, [vec![2.0; 4], vec![20.0; 4]].concat());
        hook.end_pass();

        let (anchor_bytes, previous_bytes) = hook.cache_bytes();
        assert_eq!(
            anchor_bytes,
            2 * 2 * 4 * 2,
            "2 steps × (k, v) × 4 tokens × f16"
        );
        assert_eq!(previous_bytes, anchor_bytes);

        hook.clear_previous();
        assert_eq!(hook.cache_bytes().1, 0);
        hook.previous_from_anchor();
        assert_eq!(hook.cache_bytes().1, anchor_bytes);

        // Outside a pass nothing changes.
        let t = kv(0.0);
        assert!(matches!(
            hook.self_attention(&call_with(layer, &t)).unwrap(),
            KeyValues::Unchanged
        ));
    }

    #[test]
    fn large_layers_are_pooled_in_the_cache() {
        let settings = CrossFrameSettings {
            enabled: true,
            max_reference_tokens: 4,
            ..CrossFrameSettings::default()
        };
        let hook = CrossFrameAttention::new(&settings, 4, 4);
        let kv = Tensor::ones((2, 16, 3), DType::F32, &Device::Cpu).unwrap();
        hook.begin_anchor(0);
        hook.self_attention(&call_with("l", &kv)).unwrap();
        hook.end_pass();
        hook.begin_frame(0);
        match hook.self_attention(&call_with("l", &kv)).unwrap() {
            KeyValues::Append { keys, values } => {
                assert_eq!(keys.dims(), &[2, 4, 3]);
                assert_eq!(values.dtype(), DType::F32);
            }
            other => panic!("expected Append, got {other:?}"),
        }
    }
}
