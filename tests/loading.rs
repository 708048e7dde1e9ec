//! Model file resolution (local diffusers folders, hub cache, offline and unreachable hub)
//! and fp16 → f32 loading, on tests/fixtures/pipeline_layout (scripts/fixtures/pipeline_layout.py).

mod tensor_common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use rotoscope::loaders::source::{
    load_safetensors_vb, needed_files, Component, DiffusersPipelineFiles, FileRole, HubOptions,
    LoadError, WeightPrecision,
};
use rotoscope::models::clip::{ClipTextConfig, ClipTextEncoder};
use rotoscope::models::tokenizer::ClipTokenizer;
use rotoscope::models::vae::{AutoencoderKL, VaeConfig};

use tensor_common::max_abs;

const REPO: &str = "rotoscope-tests/tiny-pipeline";

fn layout() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pipeline_layout")
}

/// The files a complete SD pipeline reports when nothing is available.
fn all_required_sd_files() -> Vec<String> {
    needed_files(&Component::SD_PIPELINE)
        .into_iter()
        .filter(|f| f.role != FileRole::Optional)
        .map(|f| f.name().to_string())
        .collect()
}

fn offline(cache: &Path) -> HubOptions {
    HubOptions {
        offline: true,
        cache_dir: Some(cache.to_path_buf()),
        progress: false,
        endpoint: None,
        token: None,
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// An hf-hub cache holding `REPO` at commit `abc123` with the layout's files.
fn fake_hub_cache(root: &Path) -> PathBuf {
    let repo = root.join("models--rotoscope-tests--tiny-pipeline");
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), "abc123").unwrap();
    let snapshot = repo.join("snapshots/abc123");
    copy_dir(&layout(), &snapshot);
    snapshot
}

fn missing_files(err: LoadError) -> (String, Vec<String>, String) {
    let message = err.to_string();
    match err {
        LoadError::MissingFiles { repo, files, hint } => {
            assert!(message.contains(&hint));
            (repo, files, message)
        }
        other => panic!("expected MissingFiles, got {other}"),
    }
}

#[test]
fn local_pipeline_folder_resolves() {
    let source = layout();
    let files =
        DiffusersPipelineFiles::resolve(source.to_str().unwrap(), &Component::SD_PIPELINE, false)
            .unwrap();
    assert_eq!(files.model_index, Some(source.join("model_index.json")));
    let vae = files.vae.unwrap();
    assert_eq!(vae.config, source.join("vae/config.json"));
    assert_eq!(
        vae.weights,
        source.join("vae/diffusion_pytorch_model.safetensors")
    );
    assert_eq!(
        vae.precision,
        WeightPrecision::F32,
        "fp32 must win over fp16"
    );
    let unet = files.unet.unwrap();
    assert_eq!(
        unet.weights,
        source.join("unet/diffusion_pytorch_model.fp16.safetensors")
    );
    assert_eq!(unet.precision, WeightPrecision::F16, "fp16 is the fallback");
    let text_encoder = files.text_encoder.unwrap();
    assert_eq!(
        text_encoder.weights,
        source.join("text_encoder/model.safetensors")
    );
    assert_eq!(files.tokenizer.unwrap().dir, source.join("tokenizer"));
    assert!(files.controlnet.is_none());
}

#[test]
fn resolved_pipeline_loads() {
    let files = DiffusersPipelineFiles::resolve(
        layout().to_str().unwrap(),
        &[Component::Vae, Component::TextEncoder, Component::Tokenizer],
        false,
    )
    .unwrap();
    let dev = Device::Cpu;
    let vae_files = files.vae.unwrap();
    let vae = AutoencoderKL::load(
        vae_files.var_builder(&dev).unwrap(),
        &VaeConfig::from_file(&vae_files.config).unwrap(),
    )
    .unwrap();
    assert_eq!(vae.config().sample_size.tile_size(), 16);
    let te = files.text_encoder.unwrap();
    let encoder = ClipTextEncoder::load(
        te.var_builder(&dev).unwrap(),
        &ClipTextConfig::from_file(&te.config).unwrap(),
    )
    .unwrap();
    let tokenizer = ClipTokenizer::from_dir(files.tokenizer.unwrap().dir).unwrap();
    let ids = tokenizer.encode_padded("a dancer").unwrap();
    let states = encoder.encode_ids(&[ids], &dev, 0).unwrap();
    assert_eq!(states.dims(), &[1, 77, 16]);
}

#[test]
fn fp16_weights_load_as_f32_equal_to_rounded_fp32() {
    let vae_dir = layout().join("vae");
    let dev = Device::Cpu;
    let fp32 =
        candle_core::safetensors::load(vae_dir.join("diffusion_pytorch_model.safetensors"), &dev)
            .unwrap();
    let vb16 = load_safetensors_vb(
        &[vae_dir.join("diffusion_pytorch_model.fp16.safetensors")],
        &dev,
    )
    .unwrap();
    assert!(!fp32.is_empty());
    for (name, want) in &fp32 {
        let got = vb16.get(want.dims(), name).unwrap();
        assert_eq!(got.dtype(), DType::F32, "{name}");
        let rounded = want
            .to_dtype(DType::F16)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap();
        let diff = max_abs(&(got - rounded).unwrap());
        assert_eq!(
            diff, 0.0,
            "{name} is not the fp16 rounding of the fp32 weight"
        );
    }
    // And the models built from both agree to fp16 precision.
    let config = VaeConfig::from_file(vae_dir.join("config.json")).unwrap();
    let vb32 =
        load_safetensors_vb(&[vae_dir.join("diffusion_pytorch_model.safetensors")], &dev).unwrap();
    let vae32 = AutoencoderKL::load(vb32, &config).unwrap();
    let vae16 = AutoencoderKL::load(vb16, &config).unwrap();
    let latents = Tensor::randn(0f32, 1.0, (1, 4, 8, 8), &dev).unwrap();
    let a = vae32.decode(&latents).unwrap();
    let b = vae16.decode(&latents).unwrap();
    let diff = (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap();
    let diff = diff.to_scalar::<f32>().unwrap();
    assert!(diff < 1e-2, "fp16 and fp32 VAE differ by {diff}");
}

#[test]
fn incomplete_local_folder_lists_missing_files() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&layout(), dir.path());
    std::fs::remove_file(
        dir.path()
            .join("unet/diffusion_pytorch_model.fp16.safetensors"),
    )
    .unwrap();
    std::fs::remove_file(dir.path().join("tokenizer/merges.txt")).unwrap();
    let err = DiffusersPipelineFiles::resolve(
        dir.path().to_str().unwrap(),
        &Component::SD_PIPELINE,
        false,
    )
    .unwrap_err();
    let (repo, files, message) = missing_files(err);
    assert_eq!(repo, dir.path().display().to_string());
    assert_eq!(
        files,
        vec![
            "unet/diffusion_pytorch_model.safetensors",
            "tokenizer/merges.txt"
        ]
    );
    assert!(
        message.contains("(or unet/diffusion_pytorch_model.fp16.safetensors)"),
        "{message}"
    );
}

#[test]
fn tokenizer_json_replaces_vocabulary_files() {
    let dir = tempfile::tempdir().unwrap();
    let tokenizer = dir.path().join("tokenizer");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/clip/tokenizer_json"),
        &tokenizer,
    );
    let files = DiffusersPipelineFiles::resolve(
        dir.path().to_str().unwrap(),
        &[Component::Tokenizer],
        false,
    )
    .unwrap();
    assert_eq!(files.tokenizer.unwrap().dir, tokenizer);
}

#[test]
fn controlnet_folder_resolves_at_its_root() {
    // Any diffusers model folder (config.json + weights at the root) has the ControlNet layout.
    let dir = layout().join("vae");
    let files =
        DiffusersPipelineFiles::resolve(dir.to_str().unwrap(), &[Component::ControlNet], false)
            .unwrap();
    let controlnet = files.controlnet.unwrap();
    assert_eq!(controlnet.config, dir.join("config.json"));
    assert_eq!(controlnet.precision, WeightPrecision::F32);
}

#[test]
fn unknown_hub_id_offline_lists_every_missing_file() {
    let cache = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let err = DiffusersPipelineFiles::resolve_with(
        "nobody-here/no-such-model",
        &Component::SD_PIPELINE,
        &offline(cache.path()),
    )
    .unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(2));
    let (repo, files, message) = missing_files(err);
    assert_eq!(repo, "nobody-here/no-such-model");
    assert_eq!(files, all_required_sd_files());
    for file in &files {
        assert!(message.contains(file.as_str()), "{message}");
    }
    assert!(message.contains("huggingface-cli download nobody-here/no-such-model unet/config.json"));
    assert!(message.contains("HF_HUB_OFFLINE"), "{message}");
    println!("{message}");
}

#[test]
fn hf_hub_offline_env_is_honoured() {
    // The only test in this binary that reads the environment.
    let cache = tempfile::tempdir().unwrap();
    std::env::set_var("HF_HUB_OFFLINE", "1");
    std::env::set_var("HF_HUB_CACHE", cache.path());
    let err =
        DiffusersPipelineFiles::resolve("nobody-here/no-such-model", &[Component::Vae], false)
            .unwrap_err();
    let (_, files, _) = missing_files(err);
    assert_eq!(
        files,
        vec!["vae/config.json", "vae/diffusion_pytorch_model.safetensors"]
    );
}

#[test]
fn hub_cache_is_used_offline() {
    let cache = tempfile::tempdir().unwrap();
    let snapshot = fake_hub_cache(cache.path());
    let files =
        DiffusersPipelineFiles::resolve_with(REPO, &Component::SD_PIPELINE, &offline(cache.path()))
            .unwrap();
    assert_eq!(files.unet.as_ref().unwrap().precision, WeightPrecision::F16);
    assert_eq!(
        files.vae.as_ref().unwrap().weights,
        snapshot.join("vae/diffusion_pytorch_model.safetensors")
    );
    assert_eq!(files.tokenizer.unwrap().dir, snapshot.join("tokenizer"));
    assert_eq!(files.model_index, Some(snapshot.join("model_index.json")));

    // Remove some files from the cache: exactly those are reported.
    std::fs::remove_file(snapshot.join("vae/diffusion_pytorch_model.safetensors")).unwrap();
    std::fs::remove_file(snapshot.join("vae/diffusion_pytorch_model.fp16.safetensors")).unwrap();
    std::fs::remove_file(snapshot.join("text_encoder/config.json")).unwrap();
    let err =
        DiffusersPipelineFiles::resolve_with(REPO, &Component::SD_PIPELINE, &offline(cache.path()))
            .unwrap_err();
    let (_, files, _) = missing_files(err);
    assert_eq!(
        files,
        vec![
            "vae/diffusion_pytorch_model.safetensors",
            "text_encoder/config.json"
        ]
    );
}

/// A local HTTP server answering every request with `status`; counts requests.
fn serve_status(status: &'static str) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            counter.fetch_add(1, Ordering::SeqCst);
            let response =
                format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            let _ = stream.write_all(response.as_bytes());
        }
    });
    (address, count)
}

#[test]
fn files_absent_from_the_hub_are_tried_in_order_then_reported() {
    let (endpoint, requests) = serve_status("404 Not Found");
    let cache = tempfile::tempdir().unwrap();
    let options = HubOptions {
        offline: false,
        endpoint: Some(endpoint),
        ..offline(cache.path())
    };
    let err =
        DiffusersPipelineFiles::resolve_with(REPO, &Component::SD_PIPELINE, &options).unwrap_err();
    let (_, files, message) = missing_files(err);
    assert_eq!(files, all_required_sd_files());
    // Every candidate (fp32 and fp16 weights, optional tokenizer files) was asked for once.
    let candidates: usize = needed_files(&Component::SD_PIPELINE)
        .iter()
        .map(|f| f.candidates.len())
        .sum();
    assert_eq!(requests.load(Ordering::SeqCst), candidates);
    assert!(message.contains("do not exist in the repo"), "{message}");
}

#[test]
fn unreachable_hub_fails_fast_with_the_full_list() {
    // Nothing listens on this port: the first connection is refused, then only the cache is used.
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let cache = tempfile::tempdir().unwrap();
    let options = HubOptions {
        offline: false,
        endpoint: Some(format!("http://127.0.0.1:{port}")),
        ..offline(cache.path())
    };
    let start = Instant::now();
    let err =
        DiffusersPipelineFiles::resolve_with(REPO, &Component::SD_PIPELINE, &options).unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(5));
    let (_, files, message) = missing_files(err);
    assert_eq!(files, all_required_sd_files());
    assert!(message.contains("could not be downloaded"), "{message}");
}

#[test]
fn refused_access_suggests_a_token() {
    let (endpoint, requests) = serve_status("401 Unauthorized");
    let cache = tempfile::tempdir().unwrap();
    let options = HubOptions {
        offline: false,
        endpoint: Some(endpoint),
        ..offline(cache.path())
    };
    let err = DiffusersPipelineFiles::resolve_with(REPO, &[Component::Vae], &options).unwrap_err();
    let (_, files, message) = missing_files(err);
    assert_eq!(
        files,
        vec!["vae/config.json", "vae/diffusion_pytorch_model.safetensors"]
    );
    assert_eq!(
        requests.load(Ordering::SeqCst),
        1,
        "stop asking after a refusal"
    );
    assert!(message.contains("HF_TOKEN"), "{message}");
}

#[test]
fn single_files_and_nonsense_are_rejected() {
    let file = layout().join("vae/config.json");
    assert!(matches!(
        DiffusersPipelineFiles::resolve(file.to_str().unwrap(), &[Component::Vae], false),
        Err(LoadError::SingleFileUnsupported(_))
    ));
    assert!(matches!(
        DiffusersPipelineFiles::resolve("not a model", &[Component::Vae], false),
        Err(LoadError::UnknownSource(_))
    ));
}
