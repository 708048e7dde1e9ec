//! Prompt → text conditioning, A1111-style: chunks encoded one by one by CLIP (with clip skip
//! and textual-inversion vectors) and concatenated along the sequence axis, each chunk's
//! hidden states scaled by the token weights and rescaled to the chunk's original mean.
//!
//! The weighting is A1111's default "Original" emphasis (`modules/sd_emphasis.py`
//! `EmphasisOriginal`): `z *= weight[token]`, then `z *= mean(z_before) / mean(z_after)`.
//! ComfyUI's default differs (it interpolates from the empty prompt's encoding,
//! `z = (z - z_empty) * w + z_empty`, without mean rescale); rotoscope follows A1111.
//!
//! A prompt and its negative prompt of different chunk counts are padded to the same length
//! with the empty prompt's encoding, as A1111's `pad_cond` does (option "pad prompt/negative
//! prompt"; without it A1111 runs the two through the UNet separately, which batched CFG
//! cannot).

use candle_core::{Device, Tensor};

use super::chunk::{chunk_prompt, EmbeddingIndex, PromptChunk, SpecialIds};
use super::parse::parse_prompt_attention;
use super::PromptError;
use crate::loaders::embeddings::TextualInversion;
use crate::models::clip::ClipTextEncoder;
use crate::models::tokenizer::ClipTokenizer;

/// Encodes prompts for one text encoder.
pub struct PromptEncoder<'a> {
    tokenizer: &'a ClipTokenizer,
    text_encoder: &'a ClipTextEncoder,
    embeddings: &'a [TextualInversion],
    index: EmbeddingIndex,
    special: SpecialIds,
    /// diffusers' count (0 = last layer), i.e. A1111's clip skip minus one.
    skip_layers: usize,
    device: Device,
}

fn tensor_err(context: &'static str) -> impl Fn(candle_core::Error) -> PromptError {
    move |source| PromptError::Tensor { context, source }
}

impl<'a> PromptEncoder<'a> {
    /// `clip_skip` in A1111's convention: 1 = last layer, 2 = penultimate, ...
    pub fn new(
        tokenizer: &'a ClipTokenizer,
        text_encoder: &'a ClipTextEncoder,
        embeddings: &'a [TextualInversion],
        clip_skip: usize,
        device: &Device,
    ) -> Result<Self, PromptError> {
        let layers = text_encoder.config().num_hidden_layers;
        if clip_skip == 0 || clip_skip > layers {
            return Err(PromptError::ClipSkip { clip_skip, layers });
        }
        let mut index = EmbeddingIndex::default();
        for (i, embedding) in embeddings.iter().enumerate() {
            let ids = tokenizer.tokenize(&embedding.name)?;
            if ids.is_empty() {
                return Err(PromptError::EmptyTrigger(embedding.path.clone()));
            }
            index.register(ids, i, embedding.vector_count());
        }
        Ok(Self {
            tokenizer,
            text_encoder,
            embeddings,
            index,
            special: SpecialIds {
                bos: tokenizer.bos_id(),
                eos: tokenizer.eos_id(),
                comma: tokenizer.token_to_id(",</w>"),
            },
            skip_layers: clip_skip - 1,
            device: device.clone(),
        })
    }

    /// The 77-token chunks of `prompt`.
    pub fn chunks(&self, prompt: &str) -> Result<Vec<PromptChunk>, PromptError> {
        let parsed = parse_prompt_attention(prompt)?;
        let tokenized = parsed
            .iter()
            .map(|run| self.tokenizer.tokenize(&run.text))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(chunk_prompt(&parsed, &tokenized, self.special, &self.index).0)
    }

    /// One chunk through CLIP with its embeddings and weights: `[1, 77, hidden]`.
    pub fn encode_chunk(&self, chunk: &PromptChunk) -> Result<Tensor, PromptError> {
        let mut tokens = chunk.tokens.clone();
        // SD2 pads with "!" rather than EOS: everything after the first EOS becomes padding.
        let pad = self.tokenizer.pad_id();
        if pad != self.special.eos {
            if let Some(first_eos) = tokens.iter().position(|&t| t == self.special.eos) {
                for t in &mut tokens[first_eos + 1..] {
                    *t = pad;
                }
            }
        }
        let len = tokens.len();
        let ids =
            Tensor::from_vec(tokens, (1, len), &self.device).map_err(tensor_err("token ids"))?;
        let mut embeds = self
            .text_encoder
            .embed_tokens(&ids)
            .map_err(tensor_err("token embeddings"))?;
        for fix in &chunk.fixes {
            let Some(embedding) = self.embeddings.get(fix.embedding) else {
                continue;
            };
            // A1111's EmbeddingsWithFixes: vectors start after BOS, cut at the chunk's end.
            let start = fix.offset + 1;
            let count = embedding.vector_count().min(len.saturating_sub(start));
            if count == 0 {
                continue;
            }
            let vectors = embedding
                .vectors
                .narrow(0, 0, count)
                .and_then(|v| v.to_device(&self.device))
                .and_then(|v| v.to_dtype(embeds.dtype()))
                .and_then(|v| v.unsqueeze(0))
                .map_err(tensor_err("textual inversion vectors"))?;
            embeds = embeds
                .slice_assign(
                    &[
                        0..1,
                        start..start + count,
                        0..embeds.dim(2).map_err(tensor_err("embeddings"))?,
                    ],
                    &vectors,
                )
                .map_err(tensor_err("textual inversion splice"))?;
        }
        let z = self
            .text_encoder
            .forward_embeds_with_skip(&embeds, self.skip_layers)
            .map_err(tensor_err("text encoder"))?;
        apply_emphasis(&z, &chunk.multipliers).map_err(tensor_err("prompt weights"))
    }

    /// `prompt` → `[1, 77·chunks, hidden]`.
    pub fn encode(&self, prompt: &str) -> Result<Tensor, PromptError> {
        let encoded = self
            .chunks(prompt)?
            .iter()
            .map(|chunk| self.encode_chunk(chunk))
            .collect::<Result<Vec<_>, _>>()?;
        Tensor::cat(&encoded, 1).map_err(tensor_err("chunk concatenation"))
    }

    /// Prompt and negative prompt, padded to the same length with the empty prompt's encoding.
    pub fn encode_pair(
        &self,
        prompt: &str,
        negative: &str,
    ) -> Result<(Tensor, Tensor), PromptError> {
        let cond = self.encode(prompt)?;
        let uncond = self.encode(negative)?;
        let (c, u) = (
            cond.dim(1).map_err(tensor_err("prompt"))?,
            uncond.dim(1).map_err(tensor_err("negative prompt"))?,
        );
        if c == u {
            return Ok((cond, uncond));
        }
        let empty = self.encode("")?;
        let step = empty.dim(1).map_err(tensor_err("empty prompt"))?;
        let pad = |t: Tensor, missing: usize| -> Result<Tensor, PromptError> {
            let repeats = missing / step;
            let mut parts = vec![t];
            parts.extend(std::iter::repeat_n(empty.clone(), repeats));
            Tensor::cat(&parts, 1).map_err(tensor_err("padding"))
        };
        if c > u {
            Ok((cond, pad(uncond, c - u)?))
        } else {
            Ok((pad(cond, u - c)?, uncond))
        }
    }
}

/// A1111's `EmphasisOriginal.after_transformers` on one chunk `[1, T, hidden]`.
pub fn apply_emphasis(z: &Tensor, multipliers: &[f64]) -> candle_core::Result<Tensor> {
    if multipliers.iter().all(|&m| m == 1.0) {
        // z·1 and mean/mean = 1 leave z unchanged: skip the arithmetic.
        return Ok(z.clone());
    }
    let (_, t, _) = z.dims3()?;
    if multipliers.len() != t {
        candle_core::bail!("{} weights for {t} tokens", multipliers.len());
    }
    let original_mean = z.mean_all()?;
    let weights: Vec<f32> = multipliers.iter().map(|&m| m as f32).collect();
    let weights = Tensor::from_vec(weights, (1, t, 1), z.device())?.to_dtype(z.dtype())?;
    let weighted = z.broadcast_mul(&weights)?;
    let new_mean = weighted.mean_all()?;
    let ratio = (original_mean / new_mean)?;
    weighted.broadcast_mul(&ratio)
}
