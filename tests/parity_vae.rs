//! AutoencoderKL against diffusers: tests/fixtures/vae (scripts/fixtures/vae.py).

mod tensor_common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use rotoscope::loaders::source::load_safetensors_vb;
use rotoscope::models::vae::{AutoencoderKL, VaeConfig};
use rotoscope::nn::AttentionBudget;

use tensor_common::max_abs_diff;

const TOLERANCE: f32 = 1e-4;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vae")
}

fn load_vae() -> AutoencoderKL {
    let dir = fixtures().join("tiny");
    let config = VaeConfig::from_file(dir.join("config.json")).unwrap();
    let vb = load_safetensors_vb(
        &[dir.join("diffusion_pytorch_model.safetensors")],
        &Device::Cpu,
    )
    .unwrap();
    AutoencoderKL::load(vb, &config).unwrap()
}

fn reference() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixtures().join("reference.safetensors"), &Device::Cpu).unwrap()
}

fn assert_close(name: &str, got: &Tensor, want: &Tensor) {
    let diff = max_abs_diff(got, want);
    println!("{name}: max abs err {diff:.3e}");
    assert!(
        diff <= TOLERANCE,
        "{name}: max abs err {diff} > {TOLERANCE}"
    );
}

#[test]
fn config_matches_fixture() {
    let vae = load_vae();
    assert_eq!(vae.scaling_factor(), 0.18215);
    assert_eq!(vae.config().block_out_channels, vec![8, 16]);
    assert_eq!(vae.config().downscale_factor(), 2);
}

#[test]
fn encode_matches_diffusers() {
    let vae = load_vae();
    let r = reference();
    let dist = vae.encode(&r["image"]).unwrap();
    assert_close("encode.mean", &dist.mean, &r["encode.mean"]);
    assert_close("encode.logvar", &dist.logvar, &r["encode.logvar"]);
    let sample = dist.sample(&r["noise"]).unwrap();
    assert_close("encode.sample", &sample, &r["encode.sample"]);
}

#[test]
fn decode_matches_diffusers() {
    let vae = load_vae();
    let r = reference();
    let decoded = vae.decode(&r["latents"]).unwrap();
    assert_close("decode", &decoded, &r["decode"]);
}

#[test]
fn tiled_encode_matches_diffusers() {
    let vae = load_vae();
    let r = reference();
    let dist = vae.encode_tiled(&r["tiled_image"]).unwrap();
    assert_close("tiled.mean", &dist.mean, &r["tiled.mean"]);
    assert_close("tiled.logvar", &dist.logvar, &r["tiled.logvar"]);
}

#[test]
fn tiled_decode_matches_diffusers() {
    let vae = load_vae();
    let r = reference();
    let decoded = vae.decode_tiled(&r["tiled_latents"]).unwrap();
    assert_close("tiled.decode", &decoded, &r["tiled.decode"]);
    // Tiling must actually change something, or this test would not test it.
    let plain = vae.decode(&r["tiled_latents"]).unwrap();
    assert!(max_abs_diff(&plain, &decoded) > 1e-3);
}

#[test]
fn small_inputs_bypass_tiling() {
    let vae = load_vae();
    let r = reference();
    let image = r["image"].narrow(3, 0, 32).unwrap();
    let tiled = vae.encode_tiled(&image).unwrap();
    let plain = vae.encode(&image).unwrap();
    assert_eq!(max_abs_diff(&tiled.mean, &plain.mean), 0.0);
}

#[test]
fn wrong_channel_count_is_an_error() {
    let vae = load_vae();
    let r = reference();
    let err = vae.decode(&r["image"]).unwrap_err().to_string();
    assert!(err.contains("expects 4 channels"), "{err}");
}

#[test]
fn chunked_mid_block_attention_equals_unchunked() {
    let r = reference();
    // 16×24 latents = 384 attention tokens; a 7×40-score budget splits them unevenly.
    let whole = load_vae().with_attention_budget(AttentionBudget {
        max_scores: usize::MAX,
    });
    let chunked = load_vae().with_attention_budget(AttentionBudget { max_scores: 7 * 40 });
    let a = whole.decode(&r["latents"]).unwrap();
    let b = chunked.decode(&r["latents"]).unwrap();
    assert!(max_abs_diff(&a, &b) < 1e-5);
    assert_close("decode (chunked attention)", &b, &r["decode"]);
    let a = whole.encode(&r["image"]).unwrap();
    let b = chunked.encode(&r["image"]).unwrap();
    assert!(max_abs_diff(&a.mean, &b.mean) < 1e-5);
    assert_close(
        "encode.mean (chunked attention)",
        &b.mean,
        &r["encode.mean"],
    );
}
