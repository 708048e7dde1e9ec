//! CLIP tokenizer and text encoder against transformers: tests/fixtures/clip
//! (scripts/fixtures/clip.py).

mod tensor_common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, IndexOp, Tensor};
use rotoscope::loaders::source::load_safetensors_vb;
use rotoscope::models::clip::{Activation, ClipTextConfig, ClipTextEncoder};
use rotoscope::models::tokenizer::{ClipTokenizer, TokenizerError};
use serde::Deserialize;

use tensor_common::max_abs_diff;

const TOLERANCE: f32 = 1e-4;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/clip")
}

#[derive(Deserialize)]
struct PromptRecord {
    prompt: String,
    ids: Vec<u32>,
    ids_sd2: Vec<u32>,
}

fn prompts() -> Vec<PromptRecord> {
    let text = std::fs::read_to_string(fixtures().join("prompts.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn reference() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixtures().join("reference.safetensors"), &Device::Cpu).unwrap()
}

fn load_encoder(name: &str) -> ClipTextEncoder {
    let dir = fixtures().join(name);
    let config = ClipTextConfig::from_file(dir.join("config.json")).unwrap();
    let vb = load_safetensors_vb(&[dir.join("model.safetensors")], &Device::Cpu).unwrap();
    ClipTextEncoder::load(vb, &config).unwrap()
}

fn assert_close(name: &str, got: &Tensor, want: &Tensor) {
    let diff = max_abs_diff(got, want);
    println!("{name}: max abs err {diff:.3e}");
    assert!(
        diff <= TOLERANCE,
        "{name}: max abs err {diff} > {TOLERANCE}"
    );
}

fn check_tokenizer(folder: &str, expected: impl Fn(&PromptRecord) -> &Vec<u32>) {
    let tokenizer = ClipTokenizer::from_dir(fixtures().join(folder)).unwrap();
    assert_eq!(tokenizer.max_length(), 77);
    for record in prompts() {
        let ids = tokenizer.encode_padded(&record.prompt).unwrap();
        assert_eq!(
            &ids,
            expected(&record),
            "{folder}: prompt {:?}",
            record.prompt
        );
    }
}

#[test]
fn sd15_tokenizer_ids_match_transformers() {
    check_tokenizer("tokenizer", |r| &r.ids);
}

#[test]
fn sd2_tokenizer_pads_with_exclamation_mark() {
    check_tokenizer("tokenizer_sd2", |r| &r.ids_sd2);
    let tokenizer = ClipTokenizer::from_dir(fixtures().join("tokenizer_sd2")).unwrap();
    assert_eq!(tokenizer.pad_id(), 0);
}

#[test]
fn tokenizer_json_folder_matches_transformers() {
    check_tokenizer("tokenizer_json", |r| &r.ids);
}

#[test]
fn long_prompts_are_truncated_to_75_tokens_plus_markers() {
    let tokenizer = ClipTokenizer::from_dir(fixtures().join("tokenizer")).unwrap();
    let long = prompts()
        .into_iter()
        .find(|r| r.prompt.len() > 300)
        .unwrap();
    let ids = tokenizer.encode(&long.prompt).unwrap();
    assert_eq!(ids.len(), 77);
    assert_eq!(ids[0], tokenizer.bos_id());
    assert_eq!(ids[76], tokenizer.eos_id());
}

#[test]
fn tokenizer_folder_without_vocabulary_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixtures().join("tokenizer/tokenizer_config.json"),
        dir.path().join("tokenizer_config.json"),
    )
    .unwrap();
    let err = ClipTokenizer::from_dir(dir.path()).unwrap_err();
    assert!(
        matches!(
            err,
            TokenizerError::MissingFile {
                file: "vocab.json",
                ..
            }
        ),
        "{err}"
    );
}

fn check_encoder(name: &str, activation: Activation) {
    let encoder = load_encoder(name);
    assert_eq!(encoder.config().hidden_act, activation);
    let r = reference();
    let ids = &r["input_ids"];
    let last = encoder.forward(ids).unwrap();
    assert_close(
        &format!("{name} last"),
        &last,
        &r[&format!("{name}.last_hidden_state")],
    );
    let skip1 = encoder.forward_with_skip(ids, 1).unwrap();
    assert_close(
        &format!("{name} clip_skip=1"),
        &skip1,
        &r[&format!("{name}.clip_skip_1")],
    );
    let penultimate = encoder.penultimate_or_earlier(ids, 1).unwrap();
    assert_close(
        &format!("{name} penultimate"),
        &penultimate,
        &r[&format!("{name}.penultimate_hidden_state")],
    );
}

#[test]
fn quick_gelu_encoder_matches_transformers() {
    check_encoder("text_encoder", Activation::QuickGelu);
}

#[test]
fn gelu_encoder_without_text_model_prefix_matches_transformers() {
    check_encoder("text_encoder_gelu", Activation::Gelu);
}

#[test]
fn tokenizer_and_encoder_together() {
    // u32 ids from our tokenizer give the same states as the fixture's i64 ids.
    let tokenizer = ClipTokenizer::from_dir(fixtures().join("tokenizer")).unwrap();
    let encoder = load_encoder("text_encoder");
    let r = reference();
    let prompt = &prompts()[0].prompt;
    let ids = tokenizer.encode_padded(prompt).unwrap();
    let states = encoder.encode_ids(&[ids], &Device::Cpu, 0).unwrap();
    let want = r["text_encoder.last_hidden_state"].i(0..1).unwrap();
    assert_close("tokenize+encode", &states, &want);
}

#[test]
fn clip_skip_beyond_depth_is_an_error() {
    let encoder = load_encoder("text_encoder_gelu");
    let r = reference();
    assert!(encoder.forward_with_skip(&r["input_ids"], 2).is_err());
}
