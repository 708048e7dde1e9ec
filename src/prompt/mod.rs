//! Prompts the way A1111 users write them: attention weights `(word:1.2)`, `(word)`, `[word]`,
//! `BREAK`, prompts longer than 77 tokens, textual-inversion triggers, clip skip.
//!
//! * [`parse`]: A1111's attention syntax (`parse_prompt_attention`).
//! * [`chunk`]: 75-token chunks with comma backtracking, BREAK and embedding placeholders
//!   (`tokenize_line`).
//! * [`encode`]: chunk-wise CLIP encoding with A1111's "Original" emphasis.

pub mod chunk;
pub mod encode;
pub mod parse;

use std::path::PathBuf;

pub use encode::PromptEncoder;
pub use parse::{parse_prompt_attention, WeightedText};

/// Errors of parsing or encoding prompts.
#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    #[error("prompt {prompt:?}: attention weight {weight:?} is not a number")]
    BadWeight { prompt: String, weight: String },
    #[error("clip skip {clip_skip} must be between 1 (last layer) and {layers} (the text encoder's layers)")]
    ClipSkip { clip_skip: usize, layers: usize },
    #[error("embedding {0}: its trigger word (the file name) tokenizes to nothing")]
    EmptyTrigger(PathBuf),
    #[error(transparent)]
    Tokenizer(#[from] crate::models::tokenizer::TokenizerError),
    #[error("{context}: {source}")]
    Tensor {
        context: &'static str,
        #[source]
        source: candle_core::Error,
    },
}
