//! A1111 prompt processing against the Python reference of scripts/fixtures/prompt.py:
//! attention parsing, 75-token chunking with comma backtracking and BREAK, emphasis,
//! textual inversion (.safetensors and A1111 .pt), clip skip, negative-prompt padding.

mod tensor_common;

use std::path::{Path, PathBuf};

use candle_core::Device;
use rotoscope::loaders::embeddings::TextualInversion;
use rotoscope::loaders::model_stack::{ModelStack, ModelStackSpec};
use rotoscope::loaders::source::HubOptions;
use rotoscope::prompt::{parse_prompt_attention, PromptEncoder, PromptError};

use tensor_common::max_abs_diff;

const TOLERANCE: f32 = 1e-4;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn prompt_file(name: &str) -> PathBuf {
    fixtures().join("prompt").join(name)
}

fn read_json(name: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(prompt_file(name)).unwrap()).unwrap()
}

fn stack() -> ModelStack {
    let mut spec = ModelStackSpec::new(fixtures().join("pipeline").to_string_lossy());
    spec.embeddings = vec![prompt_file("tinyemb.safetensors"), prompt_file("pteemb.pt")];
    let hub = HubOptions {
        offline: true,
        cache_dir: Some(std::env::temp_dir().join("rotoscope-prompt-test-cache")),
        progress: false,
        endpoint: None,
        token: None,
    };
    ModelStack::load(&spec, &hub, &Device::Cpu).unwrap()
}

#[test]
fn attention_parsing_matches_a1111() {
    let cases = read_json("parse_cases.json");
    let cases = cases.as_object().unwrap();
    assert!(cases.len() >= 20);
    for (prompt, expected) in cases {
        let expected: Vec<(String, f64)> = expected
            .as_array()
            .unwrap()
            .iter()
            .map(|pair| {
                (
                    pair[0].as_str().unwrap().to_string(),
                    pair[1].as_str().unwrap().parse::<f64>().unwrap(),
                )
            })
            .collect();
        let got: Vec<(String, f64)> = parse_prompt_attention(prompt)
            .unwrap()
            .into_iter()
            .map(|w| (w.text, w.weight))
            .collect();
        assert_eq!(got, expected, "prompt {prompt:?}");
    }
}

#[test]
fn embeddings_load_from_safetensors_and_a1111_pt() {
    let tiny = TextualInversion::load(&prompt_file("tinyemb.safetensors"), 16).unwrap();
    assert_eq!((tiny.name.as_str(), tiny.vector_count()), ("tinyemb", 3));
    let pt = TextualInversion::load(&prompt_file("pteemb.pt"), 16).unwrap();
    assert_eq!((pt.name.as_str(), pt.vector_count()), ("pteemb", 2));
    let err = TextualInversion::load(&prompt_file("tinyemb.safetensors"), 768).unwrap_err();
    assert!(err.to_string().contains("width 16"), "{err}");
}

#[test]
fn encoding_matches_the_a1111_reference() {
    let stack = stack();
    let reference =
        candle_core::safetensors::load(prompt_file("reference.safetensors"), &Device::Cpu).unwrap();
    let cases = read_json("cases.json");
    for case in cases.as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let clip_skip = case["clip_skip"].as_u64().unwrap() as usize;
        let encoder = PromptEncoder::new(
            &stack.tokenizer,
            &stack.text_encoder,
            &stack.embeddings,
            clip_skip,
            &Device::Cpu,
        )
        .unwrap();
        let prompt = case["prompt"].as_str().unwrap();
        let chunks = encoder.chunks(prompt).unwrap();
        let tokens: Vec<Vec<i64>> = reference[&format!("{name}.tokens")].to_vec2().unwrap();
        let multipliers: Vec<Vec<f64>> =
            reference[&format!("{name}.multipliers")].to_vec2().unwrap();
        assert_eq!(chunks.len(), tokens.len(), "{name}: chunk count");
        for (i, chunk) in chunks.iter().enumerate() {
            let got: Vec<i64> = chunk.tokens.iter().map(|&t| t as i64).collect();
            assert_eq!(got, tokens[i], "{name}: tokens of chunk {i}");
            assert_eq!(
                chunk.multipliers, multipliers[i],
                "{name}: weights of chunk {i}"
            );
        }
        let (cond, uncond) = encoder
            .encode_pair(prompt, case["negative"].as_str().unwrap())
            .unwrap();
        for (part, got) in [("cond", &cond), ("uncond", &uncond)] {
            let err = max_abs_diff(got, &reference[&format!("{name}.{part}")]);
            println!("{name}.{part} {:?}: max abs err {err:.2e}", got.dims());
            assert!(err <= TOLERANCE, "{name}.{part}: {err}");
        }
    }
}

#[test]
fn unweighted_short_prompt_equals_the_plain_text_encoder() {
    let stack = stack();
    let encoder =
        PromptEncoder::new(&stack.tokenizer, &stack.text_encoder, &[], 1, &Device::Cpu).unwrap();
    let prompt = "a beautiful anime girl dancing in the rain, soft lighting";
    let ours = encoder.encode(prompt).unwrap();
    let ids = stack.tokenizer.encode_padded(prompt).unwrap();
    let plain = stack
        .text_encoder
        .encode_ids(&[ids], &Device::Cpu, 0)
        .unwrap();
    assert_eq!(max_abs_diff(&ours, &plain), 0.0);
}

#[test]
fn invalid_settings_are_errors() {
    let stack = stack();
    let layers = stack.text_encoder.config().num_hidden_layers;
    for skip in [0, layers + 1] {
        let err = PromptEncoder::new(
            &stack.tokenizer,
            &stack.text_encoder,
            &[],
            skip,
            &Device::Cpu,
        )
        .err()
        .unwrap();
        assert!(matches!(err, PromptError::ClipSkip { .. }), "{err}");
    }
    let encoder =
        PromptEncoder::new(&stack.tokenizer, &stack.text_encoder, &[], 1, &Device::Cpu).unwrap();
    let err = encoder.encode("a (cat:1.2.3)").unwrap_err();
    assert!(err.to_string().contains("1.2.3"), "{err}");
}

#[test]
fn model_stack_encodes_with_its_clip_skip_and_embeddings() {
    let mut spec = ModelStackSpec::new(fixtures().join("pipeline").to_string_lossy());
    spec.clip_skip = 2;
    spec.embeddings = vec![prompt_file("tinyemb.safetensors"), prompt_file("pteemb.pt")];
    let hub = HubOptions {
        offline: true,
        cache_dir: None,
        progress: false,
        endpoint: None,
        token: None,
    };
    let stack = ModelStack::load(&spec, &hub, &Device::Cpu).unwrap();
    let reference =
        candle_core::safetensors::load(prompt_file("reference.safetensors"), &Device::Cpu).unwrap();
    let cases = read_json("cases.json");
    let case = cases
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "embeddings")
        .unwrap();
    assert_eq!(case["clip_skip"], 2);
    let (cond, uncond) = stack
        .encode_prompts(
            case["prompt"].as_str().unwrap(),
            case["negative"].as_str().unwrap(),
            true,
            &Device::Cpu,
        )
        .unwrap();
    assert!(max_abs_diff(&cond, &reference["embeddings.cond"]) <= TOLERANCE);
    assert!(max_abs_diff(&uncond.unwrap(), &reference["embeddings.uncond"]) <= TOLERANCE);
    let (alone, none) = stack
        .encode_prompts(case["prompt"].as_str().unwrap(), "", false, &Device::Cpu)
        .unwrap();
    assert!(none.is_none());
    assert_eq!(max_abs_diff(&alone, &cond), 0.0);
}
