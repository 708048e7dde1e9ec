//! Prompts longer than CLIP's 77 tokens, A1111-style (`modules/sd_hijack_clip.py`,
//! `FrozenCLIPEmbedderWithCustomWordsBase.tokenize_line`):
//!
//! * every attention run is tokenized on its own (no special tokens, no truncation);
//! * tokens fill chunks of 75; each chunk is wrapped in BOS … EOS and padded with EOS to 77;
//! * when a chunk is full and a comma lies at most 20 tokens back (A1111's default
//!   `comma_padding_backtrack`), the tokens after that comma move to the next chunk, so a
//!   phrase is not cut in two;
//! * `BREAK` closes the current chunk;
//! * a textual-inversion trigger (matched on token ids, longest first) is replaced by as many
//!   placeholder tokens as the embedding has vectors, moved whole to the next chunk if it
//!   does not fit; its vectors are spliced in at encoding time.

use std::collections::HashMap;

use super::parse::WeightedText;

/// Tokens of a chunk, BOS and EOS excluded.
pub const CHUNK_LENGTH: usize = 75;
/// A1111's `comma_padding_backtrack` default.
pub const COMMA_BACKTRACK: usize = 20;

/// Special token ids of the tokenizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialIds {
    pub bos: u32,
    pub eos: u32,
    /// `,</w>`, if the vocabulary has it.
    pub comma: Option<u32>,
}

/// Where an embedding's vectors go: `offset` counts tokens after BOS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmbeddingFix {
    pub offset: usize,
    /// Index into the embedding list of [`EmbeddingIndex`].
    pub embedding: usize,
}

/// One 77-token chunk.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptChunk {
    pub tokens: Vec<u32>,
    pub multipliers: Vec<f64>,
    pub fixes: Vec<EmbeddingFix>,
}

impl PromptChunk {
    fn empty() -> Self {
        Self {
            tokens: Vec::new(),
            multipliers: Vec::new(),
            fixes: Vec::new(),
        }
    }
}

/// Textual-inversion triggers by their token ids (A1111's `EmbeddingDatabase.ids_lookup`).
#[derive(Debug, Clone, Default)]
pub struct EmbeddingIndex {
    /// First token id → (trigger ids, embedding index, vector count), longest trigger first.
    by_first: HashMap<u32, Vec<(Vec<u32>, usize, usize)>>,
}

impl EmbeddingIndex {
    /// Registers embedding `index` whose trigger tokenizes to `ids` and which has `vectors`
    /// vectors. Later registrations of equal length come after earlier ones (stable sort).
    pub fn register(&mut self, ids: Vec<u32>, index: usize, vectors: usize) {
        let Some(&first) = ids.first() else { return };
        let entries = self.by_first.entry(first).or_default();
        entries.push((ids, index, vectors));
        entries.sort_by(|a, b| b.0.len().cmp(&a.0.len()));
    }

    /// `find_embedding_at_position`: (embedding index, vectors, trigger length in tokens).
    fn find(&self, tokens: &[u32], offset: usize) -> Option<(usize, usize, usize)> {
        let candidates = self.by_first.get(tokens.get(offset)?)?;
        candidates.iter().find_map(|(ids, index, vectors)| {
            tokens
                .get(offset..offset + ids.len())
                .filter(|window| *window == ids.as_slice())
                .map(|_| (*index, *vectors, ids.len()))
        })
    }
}

/// The chunking state of `tokenize_line`.
struct Chunker {
    special: SpecialIds,
    chunks: Vec<PromptChunk>,
    chunk: PromptChunk,
    token_count: usize,
    last_comma: Option<usize>,
}

impl Chunker {
    fn next_chunk(&mut self, is_last: bool) {
        self.token_count += if is_last {
            self.chunk.tokens.len()
        } else {
            CHUNK_LENGTH
        };
        let mut chunk = std::mem::replace(&mut self.chunk, PromptChunk::empty());
        let to_add = CHUNK_LENGTH.saturating_sub(chunk.tokens.len());
        chunk
            .tokens
            .extend(std::iter::repeat_n(self.special.eos, to_add));
        chunk.multipliers.extend(std::iter::repeat_n(1.0, to_add));
        chunk.tokens.insert(0, self.special.bos);
        chunk.tokens.push(self.special.eos);
        chunk.multipliers.insert(0, 1.0);
        chunk.multipliers.push(1.0);
        self.last_comma = None;
        self.chunks.push(chunk);
    }
}

/// `tokenize_line`: the chunks of a parsed prompt whose runs tokenized to `tokenized`
/// (one id list per run, in order), and the prompt's token count.
pub fn chunk_prompt(
    parsed: &[WeightedText],
    tokenized: &[Vec<u32>],
    special: SpecialIds,
    embeddings: &EmbeddingIndex,
) -> (Vec<PromptChunk>, usize) {
    let mut c = Chunker {
        special,
        chunks: Vec::new(),
        chunk: PromptChunk::empty(),
        token_count: 0,
        last_comma: None,
    };
    for (tokens, run) in tokenized.iter().zip(parsed) {
        if run.is_break() {
            c.next_chunk(false);
            continue;
        }
        let mut position = 0;
        while position < tokens.len() {
            let token = tokens[position];
            if Some(token) == special.comma {
                c.last_comma = Some(c.chunk.tokens.len());
            } else if let Some(comma) = c.last_comma {
                let len = c.chunk.tokens.len();
                if COMMA_BACKTRACK != 0 && len == CHUNK_LENGTH && len - comma <= COMMA_BACKTRACK {
                    let break_at = comma + 1;
                    let moved_tokens = c.chunk.tokens.split_off(break_at);
                    let moved_multipliers = c.chunk.multipliers.split_off(break_at);
                    c.next_chunk(false);
                    c.chunk.tokens = moved_tokens;
                    c.chunk.multipliers = moved_multipliers;
                }
            }
            if c.chunk.tokens.len() == CHUNK_LENGTH {
                c.next_chunk(false);
            }
            match embeddings.find(tokens, position) {
                None => {
                    c.chunk.tokens.push(token);
                    c.chunk.multipliers.push(run.weight);
                    position += 1;
                }
                Some((embedding, vectors, trigger_len)) => {
                    if c.chunk.tokens.len() + vectors > CHUNK_LENGTH {
                        c.next_chunk(false);
                    }
                    c.chunk.fixes.push(EmbeddingFix {
                        offset: c.chunk.tokens.len(),
                        embedding,
                    });
                    c.chunk.tokens.extend(std::iter::repeat_n(0, vectors));
                    c.chunk
                        .multipliers
                        .extend(std::iter::repeat_n(run.weight, vectors));
                    position += trigger_len;
                }
            }
        }
    }
    if !c.chunk.tokens.is_empty() || c.chunks.is_empty() {
        c.next_chunk(true);
    }
    (c.chunks, c.token_count)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPECIAL: SpecialIds = SpecialIds {
        bos: 900,
        eos: 901,
        comma: Some(5),
    };

    fn run(text: &str, weight: f64) -> WeightedText {
        WeightedText {
            text: text.into(),
            weight,
        }
    }

    #[test]
    fn short_prompt_is_one_padded_chunk() {
        let (chunks, count) = chunk_prompt(
            &[run("a b", 1.0), run("c", 1.5)],
            &[vec![1, 2], vec![3]],
            SPECIAL,
            &EmbeddingIndex::default(),
        );
        assert_eq!(count, 3);
        assert_eq!(chunks.len(), 1);
        let c = &chunks[0];
        assert_eq!(c.tokens.len(), 77);
        assert_eq!(&c.tokens[..5], &[900, 1, 2, 3, 901]);
        assert!(c.tokens[4..].iter().all(|&t| t == 901));
        assert_eq!(&c.multipliers[..5], &[1.0, 1.0, 1.0, 1.5, 1.0]);
    }

    #[test]
    fn empty_prompt_is_one_chunk() {
        let (chunks, count) = chunk_prompt(
            &[run("", 1.0)],
            &[vec![]],
            SPECIAL,
            &EmbeddingIndex::default(),
        );
        assert_eq!(count, 0);
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].tokens[0], 900);
        assert!(chunks[0].tokens[1..].iter().all(|&t| t == 901));
    }

    #[test]
    fn long_prompt_moves_the_words_after_the_last_comma() {
        // 70 words, a comma, then 10 more: the chunk fills at 75 with the comma 4 tokens back.
        let mut tokens: Vec<u32> = (10..80).collect();
        tokens.push(5);
        tokens.extend(100..110);
        let (chunks, count) = chunk_prompt(
            &[run("x", 1.0)],
            &[tokens],
            SPECIAL,
            &EmbeddingIndex::default(),
        );
        assert_eq!(chunks.len(), 2);
        assert_eq!(count, 75 + 10);
        // First chunk: 70 words + comma, then padding.
        assert_eq!(chunks[0].tokens[71], 5);
        assert_eq!(chunks[0].tokens[72], 901);
        // Second chunk starts with the 4 words that followed the comma.
        assert_eq!(&chunks[1].tokens[1..5], &[100, 101, 102, 103]);
        assert_eq!(chunks[1].tokens[11], 901);
    }

    #[test]
    fn break_and_embeddings() {
        let mut index = EmbeddingIndex::default();
        index.register(vec![7, 8], 0, 3);
        let parsed = [run("a", 1.0), run("BREAK", -1.0), run("b", 1.2)];
        let (chunks, _) = chunk_prompt(
            &parsed,
            &[vec![1], vec![], vec![2, 7, 8, 3]],
            SPECIAL,
            &index,
        );
        assert_eq!(chunks.len(), 2);
        assert_eq!(&chunks[0].tokens[..3], &[900, 1, 901]);
        assert_eq!(&chunks[1].tokens[..7], &[900, 2, 0, 0, 0, 3, 901]);
        assert_eq!(
            chunks[1].fixes,
            vec![EmbeddingFix {
                offset: 1,
                embedding: 0
            }]
        );
        assert_eq!(&chunks[1].multipliers[1..6], &[1.2; 5]);
    }
}
