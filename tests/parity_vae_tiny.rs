//! AutoencoderTiny (TAESD) against diffusers: tests/fixtures/vae_tiny
//! (scripts/fixtures/vae_tiny.py), loaded from the diffusers folder and from madebyollin's
//! original `taesd_encoder` / `taesd_decoder` pair, directly and as a preset's `model.vae`.

mod tensor_common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use rotoscope::diffusion::image_pipeline::StableDiffusion;
use rotoscope::loaders::model_stack::{ModelStack, ModelStackError, ModelStackSpec, StackWeights};
use rotoscope::loaders::source::{load_safetensors_vb, HubOptions};
use rotoscope::loaders::taesd::{self, TaesdError};
use rotoscope::models::autoencoder_tiny::{AutoencoderTiny, AutoencoderTinyConfig};
use rotoscope::models::vae::{AnyVaeConfig, Vae};
use rotoscope::noise::TorchGenerator;

use tensor_common::{max_abs, max_abs_diff};

/// Relative to the reference's largest magnitude.
const TOLERANCE: f32 = 1e-4;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn tiny_dir() -> PathBuf {
    fixtures().join("vae_tiny/tiny")
}

fn original(name: &str) -> PathBuf {
    fixtures().join("vae_tiny/original").join(name)
}

fn reference() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(
        fixtures().join("vae_tiny/reference.safetensors"),
        &Device::Cpu,
    )
    .unwrap()
}

fn offline() -> HubOptions {
    HubOptions {
        offline: true,
        cache_dir: Some(std::env::temp_dir().join("rotoscope-vae-tiny-test-cache")),
        progress: false,
        endpoint: None,
        token: None,
    }
}

fn assert_close(name: &str, got: &Tensor, want: &Tensor) {
    assert_eq!(got.dims(), want.dims(), "{name}: shape");
    let diff = max_abs_diff(got, want);
    let scale = max_abs(want);
    assert!(scale > 0.0, "{name}: all-zero reference");
    let rel = diff / scale;
    println!("{name}: max abs err {diff:.3e}, relative {rel:.3e} (max |ref| {scale:.3})");
    assert!(
        rel <= TOLERANCE,
        "{name}: relative err {rel:.3e} > {TOLERANCE}"
    );
}

fn load_folder() -> AutoencoderTiny {
    let dir = tiny_dir();
    let config = AutoencoderTinyConfig::from_file(dir.join("config.json")).unwrap();
    let vb = load_safetensors_vb(
        &[dir.join("diffusion_pytorch_model.safetensors")],
        &Device::Cpu,
    )
    .unwrap();
    AutoencoderTiny::load(vb, &config).unwrap()
}

fn check_encode_decode(what: &str, vae: &Vae) {
    let r = reference();
    let encoded = vae.encode(&r["image"]).unwrap();
    assert!(
        encoded.logvar.is_none(),
        "{what}: the tiny VAE has no posterior"
    );
    assert_close(&format!("{what} encode"), &encoded.mean, &r["encode"]);
    let decoded = vae.decode(&r["latents"]).unwrap();
    assert_close(&format!("{what} decode"), &decoded, &r["decode"]);
}

#[test]
fn config_matches_fixture() {
    let config = AutoencoderTinyConfig::from_file(tiny_dir().join("config.json")).unwrap();
    assert_eq!(config.num_encoder_blocks, vec![1, 2, 1, 1]);
    assert_eq!(config.decoder_block_out_channels, vec![8; 4]);
    assert_eq!(config.scaling_factor, 1.0);
    assert_eq!(config.downscale_factor(), 8);
    match AnyVaeConfig::from_file(tiny_dir().join("config.json")).unwrap() {
        AnyVaeConfig::Tiny(c) => assert_eq!(c, config),
        other => panic!("AutoencoderTiny config read as {other:?}"),
    }
}

#[test]
fn diffusers_folder_matches_diffusers() {
    check_encode_decode("folder", &Vae::Tiny(load_folder()));
}

#[test]
fn original_pair_matches_diffusers() {
    // Either file of the pair finds the other; the config is inferred from the keys.
    for file in [taesd::ENCODER_FILE, taesd::DECODER_FILE] {
        let (config, weights) = taesd::load_original_pair(&original(file)).unwrap();
        let folder = AutoencoderTinyConfig::from_file(tiny_dir().join("config.json")).unwrap();
        assert_eq!(config, folder, "config inferred from {file}");
        let vae = Vae::load(
            weights.into_var_builder(&Device::Cpu),
            &AnyVaeConfig::Tiny(config),
        )
        .unwrap();
        check_encode_decode(&format!("original pair via {file}"), &vae);
    }
}

#[test]
fn a_lone_half_names_the_missing_file() {
    let dir = std::env::temp_dir().join(format!("rotoscope-taesd-half-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let lone = dir.join(taesd::ENCODER_FILE);
    std::fs::copy(original(taesd::ENCODER_FILE), &lone).unwrap();
    let err = taesd::load_original_pair(&lone).unwrap_err();
    assert!(
        matches!(&err, TaesdError::MissingHalf { expected, .. } if *expected == dir.join(taesd::DECODER_FILE)),
        "{err}"
    );
    assert!(
        err.to_string().contains("taesd_decoder.safetensors"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// The pipeline fixture's diffusers folder with `model.vae` set to `vae`.
fn spec_with_vae(vae: &Path) -> ModelStackSpec {
    let mut spec = ModelStackSpec::new(fixtures().join("pipeline").to_string_lossy());
    spec.vae = Some(vae.to_string_lossy().into_owned());
    spec
}

#[test]
fn preset_model_vae_recognises_every_tiny_layout() {
    let folder = AutoencoderTinyConfig::from_file(tiny_dir().join("config.json")).unwrap();
    for source in [
        tiny_dir(),
        tiny_dir().join("diffusion_pytorch_model.safetensors"),
        original(taesd::ENCODER_FILE),
        original(taesd::DECODER_FILE),
        fixtures().join("vae_tiny/original"),
    ] {
        let weights = StackWeights::resolve(&spec_with_vae(&source), &offline())
            .unwrap_or_else(|e| panic!("{}: {e}", source.display()));
        assert_eq!(
            weights.vae.config,
            AnyVaeConfig::Tiny(folder.clone()),
            "{}",
            source.display()
        );
    }
    // Without an override the base folder's KL VAE stays.
    let base = ModelStackSpec::new(fixtures().join("pipeline").to_string_lossy());
    let weights = StackWeights::resolve(&base, &offline()).unwrap();
    assert!(matches!(weights.vae.config, AnyVaeConfig::Kl(_)));
}

#[test]
fn tiny_vae_in_the_stack_matches_diffusers_and_draws_no_noise() {
    let r = reference();
    for source in [tiny_dir(), original(taesd::DECODER_FILE)] {
        let stack = ModelStack::load(&spec_with_vae(&source), &offline(), &Device::Cpu)
            .unwrap_or_else(|e| panic!("{}: {e}", source.display()));
        let what = format!("stack with {}", source.display());
        check_encode_decode(&what, &stack.vae);
        let sd = StableDiffusion::from_stack(stack, &Device::Cpu);
        assert_eq!(sd.latent_factor(), 8);
        // diffusers' retrieve_latents returns AutoencoderTiny's latents as they are (times
        // scaling_factor 1.0) without drawing from the generator.
        let mut generator = TorchGenerator::new(7);
        let image = r["image"].narrow(0, 0, 1).unwrap();
        let latents = sd.encode_image(&image, &mut generator).unwrap();
        let want = r["encode"].narrow(0, 0, 1).unwrap();
        assert_close(&format!("{what} encode_image"), &latents, &want);
        let next = generator.randn(&[4], DType::F32, &Device::Cpu).unwrap();
        let fresh = TorchGenerator::new(7)
            .randn(&[4], DType::F32, &Device::Cpu)
            .unwrap();
        assert_eq!(
            next.to_vec1::<f32>().unwrap(),
            fresh.to_vec1::<f32>().unwrap(),
            "{what}: encode_image drew from the generator"
        );
        // decode_latents divides by the scaling factor (1.0) and maps to [0, 1].
        let latent = r["latents"].narrow(0, 0, 1).unwrap();
        let image01 = sd.decode_latents(&latent).unwrap();
        let want01 = r["decode"]
            .narrow(0, 0, 1)
            .unwrap()
            .affine(0.5, 0.5)
            .unwrap()
            .clamp(0f32, 1f32)
            .unwrap();
        assert_close(&format!("{what} decode_latents"), &image01, &want01);
    }
}

#[test]
fn a_tiny_vae_with_other_latent_channels_is_refused() {
    // An override whose latents the base model's UNet cannot take is an error, not a wrong
    // render (here a config claiming 16 latent channels; the check comes before any weight is
    // read).
    let bogus = std::env::temp_dir().join(format!("rotoscope-taesd-bogus-{}", std::process::id()));
    std::fs::create_dir_all(&bogus).unwrap();
    let config = std::fs::read_to_string(tiny_dir().join("config.json"))
        .unwrap()
        .replace("\"latent_channels\": 4", "\"latent_channels\": 16");
    std::fs::write(bogus.join("config.json"), config).unwrap();
    std::fs::copy(
        tiny_dir().join("diffusion_pytorch_model.safetensors"),
        bogus.join("diffusion_pytorch_model.safetensors"),
    )
    .unwrap();
    let err = StackWeights::resolve(&spec_with_vae(&bogus), &offline())
        .err()
        .unwrap();
    assert!(
        matches!(err, ModelStackError::Invalid(ref m) if m.contains("latent channels")),
        "{err}"
    );
    std::fs::remove_dir_all(&bogus).ok();
}
