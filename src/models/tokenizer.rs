//! CLIP tokenizer from a diffusers `tokenizer/` folder, matching transformers' `CLIPTokenizer`
//! with diffusers' call (`padding="max_length", max_length=77, truncation=True`).
//!
//! SD repos ship `vocab.json` + `merges.txt` (+ `tokenizer_config.json`,
//! `special_tokens_map.json`); some also ship a `tokenizer.json`, which is used when present.
//! From vocab/merges the pipeline is built as transformers 5 builds it: NFC, whitespace runs
//! → " ", lowercase; CLIP's split regex; byte-level symbols; BPE with the "</w>" end-of-word
//! suffix. Special tokens (bos, eos, unk, pad) are matched in the raw text before BPE, which is
//! why SD2's pad token "!" turns every "!" of a prompt into id 0, exactly as transformers does.

use std::path::{Path, PathBuf};

use serde_json::Value;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::{
    replace::ReplacePattern, unicode::NFC, utils::Lowercase, NormalizerWrapper, Replace,
    Sequence as NormalizerSequence,
};
use tokenizers::pre_tokenizers::{
    byte_level::ByteLevel,
    sequence::Sequence as PreTokenizerSequence,
    split::{Split, SplitPattern},
    PreTokenizerWrapper,
};
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

/// CLIP's context length; used when `tokenizer_config.json` has no sensible `model_max_length`.
pub const CLIP_MAX_LENGTH: usize = 77;

/// CLIP's pre-tokenization regex (openai/CLIP `simple_tokenizer.py`, as in transformers).
const CLIP_SPLIT_PATTERN: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

/// Errors while building or running the tokenizer.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error(
        "tokenizer folder {dir} lacks {file} (need vocab.json + merges.txt, or tokenizer.json)"
    )]
    MissingFile { dir: PathBuf, file: &'static str },
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot parse {path}: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("invalid tokenizer in {path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("special token {role} = {token:?} is not in the vocabulary of {dir}")]
    UnknownSpecialToken {
        dir: PathBuf,
        role: &'static str,
        token: String,
    },
    #[error("tokenizing {text:?}: {message}")]
    Encode { text: String, message: String },
}

type Result<T> = std::result::Result<T, TokenizerError>;

/// A special token as configured in `tokenizer_config.json` / `special_tokens_map.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct SpecialToken {
    pub content: String,
    /// Matched after normalization (lowercasing) rather than in the raw text.
    pub normalized: bool,
}

/// Special tokens and length settings of a tokenizer folder.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenizerSettings {
    pub bos: SpecialToken,
    pub eos: SpecialToken,
    pub unk: SpecialToken,
    pub pad: SpecialToken,
    pub max_length: usize,
}

impl TokenizerSettings {
    /// CLIPTokenizer's defaults (SD1.5): everything but bos is `<|endoftext|>`.
    pub fn clip_defaults() -> Self {
        let token = |content: &str| SpecialToken {
            content: content.to_string(),
            normalized: false,
        };
        Self {
            bos: token("<|startoftext|>"),
            eos: token("<|endoftext|>"),
            unk: token("<|endoftext|>"),
            pad: token("<|endoftext|>"),
            max_length: CLIP_MAX_LENGTH,
        }
    }

    /// Applies the entries of a `tokenizer_config.json` or `special_tokens_map.json` object.
    /// A token given as a plain string is matched raw; one given as an object keeps its
    /// `normalized` flag (as transformers does).
    pub fn apply_json(&mut self, json: &Value) {
        let parse = |value: &Value| -> Option<SpecialToken> {
            match value {
                Value::String(s) => Some(SpecialToken {
                    content: s.clone(),
                    normalized: false,
                }),
                Value::Object(map) => Some(SpecialToken {
                    content: map.get("content")?.as_str()?.to_string(),
                    normalized: map
                        .get("normalized")
                        .and_then(Value::as_bool)
                        .unwrap_or(false),
                }),
                _ => None,
            }
        };
        for (key, slot) in [
            ("bos_token", &mut self.bos),
            ("eos_token", &mut self.eos),
            ("unk_token", &mut self.unk),
            ("pad_token", &mut self.pad),
        ] {
            if let Some(token) = json.get(key).and_then(parse) {
                *slot = token;
            }
        }
        // transformers writes ~1e30 for "no limit"; CLIP's position table is 77 long.
        if let Some(n) = json.get("model_max_length").and_then(Value::as_f64) {
            if (2.0..=1e6).contains(&n) {
                self.max_length = n as usize;
            }
        }
    }

    /// Special tokens in the order transformers registers them; for a content listed twice
    /// the last entry's `normalized` flag wins.
    fn added_tokens(&self) -> Vec<AddedToken> {
        let mut tokens: Vec<AddedToken> = Vec::new();
        for t in [&self.bos, &self.eos, &self.unk, &self.pad] {
            tokens.retain(|a| a.content != t.content);
            tokens.push(AddedToken::from(t.content.clone(), true).normalized(t.normalized));
        }
        tokens
    }
}

/// Tokenizes prompts into the fixed-length id sequences the CLIP text encoder takes.
#[derive(Debug, Clone)]
pub struct ClipTokenizer {
    tokenizer: Tokenizer,
    bos_id: u32,
    eos_id: u32,
    pad_id: u32,
    max_length: usize,
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|source| TokenizerError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| TokenizerError::Json {
        path: path.to_path_buf(),
        source,
    })
}

fn invalid(path: &Path, message: impl ToString) -> TokenizerError {
    TokenizerError::Invalid {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

/// Builds transformers 5's `CLIPTokenizer` pipeline from `vocab.json` + `merges.txt`.
fn clip_bpe_tokenizer(vocab: &Path, merges: &Path, unk: &str) -> Result<Tokenizer> {
    let (vocab_map, merge_list) =
        BPE::read_file(&vocab.to_string_lossy(), &merges.to_string_lossy())
            .map_err(|e| invalid(vocab, format!("{e} (with {})", merges.display())))?;
    clip_bpe_from(vocab_map, merge_list, unk, vocab)
}

/// The pipeline of [`clip_bpe_tokenizer`] on a vocabulary and merges in memory; `origin`
/// names them in errors.
fn clip_bpe_from(
    vocab_map: tokenizers::models::bpe::Vocab,
    merge_list: tokenizers::models::bpe::Merges,
    unk: &str,
    vocab: &Path,
) -> Result<Tokenizer> {
    let bpe = BPE::builder()
        .vocab_and_merges(vocab_map, merge_list)
        .continuing_subword_prefix(String::new())
        .end_of_word_suffix("</w>".into())
        .unk_token(unk.to_string())
        .fuse_unk(false)
        .build()
        .map_err(|e| invalid(vocab, e))?;
    let normalizer = NormalizerSequence::new(vec![
        NormalizerWrapper::NFC(NFC),
        NormalizerWrapper::Replace(
            Replace::new(ReplacePattern::Regex(r"\s+".into()), " ")
                .map_err(|e| invalid(vocab, e))?,
        ),
        NormalizerWrapper::Lowercase(Lowercase),
    ]);
    let split = Split::new(
        SplitPattern::Regex(CLIP_SPLIT_PATTERN.into()),
        SplitDelimiterBehavior::Removed,
        true,
    )
    .map_err(|e| invalid(vocab, e))?;
    let pre_tokenizer = PreTokenizerSequence::new(vec![
        PreTokenizerWrapper::Split(split),
        PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, true)),
    ]);
    let mut tokenizer = Tokenizer::new(bpe);
    tokenizer
        .with_normalizer(Some(normalizer))
        .map_err(|e| invalid(vocab, e))?;
    tokenizer.with_pre_tokenizer(Some(pre_tokenizer));
    Ok(tokenizer)
}

impl ClipTokenizer {
    /// Loads a diffusers `tokenizer/` folder (`tokenizer.json`, or `vocab.json` + `merges.txt`,
    /// with `tokenizer_config.json` / `special_tokens_map.json` for special tokens and length).
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let mut settings = TokenizerSettings::clip_defaults();
        for name in ["tokenizer_config.json", "special_tokens_map.json"] {
            let path = dir.join(name);
            if path.is_file() {
                settings.apply_json(&read_json(&path)?);
            }
        }
        let tokenizer_json = dir.join("tokenizer.json");
        let tokenizer = if tokenizer_json.is_file() {
            Tokenizer::from_file(&tokenizer_json).map_err(|e| invalid(&tokenizer_json, e))?
        } else {
            let vocab = dir.join("vocab.json");
            let merges = dir.join("merges.txt");
            for (path, file) in [(&vocab, "vocab.json"), (&merges, "merges.txt")] {
                if !path.is_file() {
                    return Err(TokenizerError::MissingFile {
                        dir: dir.to_path_buf(),
                        file,
                    });
                }
            }
            clip_bpe_tokenizer(&vocab, &merges, &settings.unk.content)?
        };
        Self::finish(tokenizer, settings, dir)
    }

    /// A tokenizer whose vocabulary is CLIP's special tokens only, with CLIP's settings: for
    /// SD models built in process (the `rotoscope bench` frame cases), whose text
    /// conditioning is made without tokenizing a prompt.
    pub fn special_tokens_only() -> Result<Self> {
        let settings = TokenizerSettings::clip_defaults();
        let mut vocab = tokenizers::models::bpe::Vocab::default();
        for token in [&settings.bos, &settings.eos, &settings.unk, &settings.pad] {
            let next = vocab.len() as u32;
            vocab.entry(token.content.clone()).or_insert(next);
        }
        let origin = Path::new("<special tokens only>");
        let tokenizer = clip_bpe_from(vocab, Vec::new(), &settings.unk.content, origin)?;
        Self::finish(tokenizer, settings, origin)
    }

    /// Special tokens and lengths on a built pipeline; `dir` names it in errors.
    fn finish(mut tokenizer: Tokenizer, settings: TokenizerSettings, dir: &Path) -> Result<Self> {
        // tokenizer.json padding/truncation settings would fight the explicit ones below.
        tokenizer
            .with_truncation(None)
            .map_err(|e| invalid(dir, e))?;
        tokenizer.with_padding(None);
        tokenizer
            .add_special_tokens(settings.added_tokens())
            .map_err(|e| invalid(dir, e))?;
        let id = |role: &'static str, token: &SpecialToken| {
            tokenizer.token_to_id(&token.content).ok_or_else(|| {
                TokenizerError::UnknownSpecialToken {
                    dir: dir.to_path_buf(),
                    role,
                    token: token.content.clone(),
                }
            })
        };
        let bos_id = id("bos_token", &settings.bos)?;
        let eos_id = id("eos_token", &settings.eos)?;
        let pad_id = id("pad_token", &settings.pad)?;
        Ok(Self {
            tokenizer,
            bos_id,
            eos_id,
            pad_id,
            max_length: settings.max_length,
        })
    }

    /// Sequence length of [`Self::encode_padded`] (77 for SD).
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    pub fn bos_id(&self) -> u32 {
        self.bos_id
    }

    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }

    /// `<|endoftext|>` for SD1.5, `!` (id 0) for SD2.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// Token ids of `text` without special tokens and without truncation, as A1111 tokenizes
    /// each prompt fragment before chunking (`tokenizer(texts, truncation=False,
    /// add_special_tokens=False)`).
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| TokenizerError::Encode {
                text: text.to_string(),
                message: e.to_string(),
            })?;
        Ok(encoding.get_ids().to_vec())
    }

    /// The id of a vocabulary entry (e.g. `",</w>"`), if present.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.tokenizer.token_to_id(token)
    }

    /// `[bos] + tokens + [eos]`, the tokens truncated so the whole fits in `max_length`.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| TokenizerError::Encode {
                text: text.to_string(),
                message: e.to_string(),
            })?;
        let content = encoding.get_ids();
        let keep = content.len().min(self.max_length.saturating_sub(2));
        let mut ids = Vec::with_capacity(self.max_length);
        ids.push(self.bos_id);
        ids.extend_from_slice(&content[..keep]);
        ids.push(self.eos_id);
        Ok(ids)
    }

    /// [`Self::encode`] padded with the pad token to exactly `max_length` ids.
    pub fn encode_padded(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = self.encode(text)?;
        ids.resize(self.max_length, self.pad_id);
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_follow_transformers_precedence() {
        let mut s = TokenizerSettings::clip_defaults();
        s.apply_json(&serde_json::json!({
            "bos_token": {"content": "<|startoftext|>", "normalized": true},
            "eos_token": {"content": "<|endoftext|>", "normalized": true},
            "pad_token": "!",
            "model_max_length": 77
        }));
        assert_eq!(s.pad.content, "!");
        assert!(!s.pad.normalized);
        let added = s.added_tokens();
        let eos = added.iter().find(|t| t.content == "<|endoftext|>").unwrap();
        // unk (a plain-string default) comes after eos, so its flag wins.
        assert!(!eos.normalized);
        assert_eq!(added.len(), 3);
    }

    #[test]
    fn absurd_model_max_length_falls_back_to_clip_context() {
        let mut s = TokenizerSettings::clip_defaults();
        s.apply_json(&serde_json::json!({"model_max_length": 1e30}));
        assert_eq!(s.max_length, CLIP_MAX_LENGTH);
    }

    #[test]
    fn special_tokens_only_knows_clips_special_ids_and_length() {
        let t = ClipTokenizer::special_tokens_only().unwrap();
        assert_eq!(t.max_length(), CLIP_MAX_LENGTH);
        assert_ne!(t.bos_id(), t.eos_id());
        assert_eq!(t.pad_id(), t.eos_id());
        assert_eq!(t.token_to_id("<|startoftext|>"), Some(t.bos_id()));
    }
}
