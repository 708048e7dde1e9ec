//! Single-file checkpoints in the original LDM layout (fixtures from
//! scripts/fixtures/single_file.py): loading them gives the same models as the diffusers-layout
//! files they were converted from (≤ 1e-5) and as diffusers' own `from_single_file` (≤ 1e-4).

mod tensor_common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use rotoscope::loaders::model_stack::{
    load_controlnet, ModelStack, ModelStackError, ModelStackSpec, StackWeights,
};
use rotoscope::loaders::single_file::{ConfigSource, SingleFileCheckpoint, SingleFileError};
use rotoscope::loaders::source::HubOptions;
use rotoscope::models::controlnet::ControlNetModel;
use rotoscope::models::unet::UNetExtras;

use tensor_common::max_abs_diff;

const SAME_MODEL: f32 = 1e-5;
const DIFFUSERS: f32 = 1e-4;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn sf(name: &str) -> PathBuf {
    fixtures().join("single_file").join(name)
}

fn pipeline_dir() -> PathBuf {
    fixtures().join("pipeline")
}

fn reference() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(sf("reference.safetensors"), &Device::Cpu).unwrap()
}

/// Local files only: no test touches the network.
fn offline() -> HubOptions {
    HubOptions {
        offline: true,
        cache_dir: Some(std::env::temp_dir().join("rotoscope-single-file-test-cache")),
        progress: false,
        endpoint: None,
        token: None,
    }
}

fn check(what: &str, got: &Tensor, want: &Tensor, tolerance: f32) {
    let err = max_abs_diff(got, want);
    println!("{what}: max abs err {err:.2e}");
    assert!(err <= tolerance, "{what}: {err} > {tolerance}");
}

fn single_file_spec() -> ModelStackSpec {
    let mut spec = ModelStackSpec::new(sf("tiny_sd15.safetensors").to_string_lossy());
    spec.config = Some(pipeline_dir());
    spec
}

fn load(spec: &ModelStackSpec) -> ModelStack {
    ModelStack::load(spec, &offline(), &Device::Cpu).unwrap()
}

struct Outputs {
    unet: Tensor,
    text: Tensor,
    decoded: Tensor,
    encoded_mean: Tensor,
}

fn run(stack: &ModelStack, r: &HashMap<String, Tensor>) -> Outputs {
    let t = r["unet.timestep"].to_vec1::<f32>().unwrap()[0] as f64;
    let unet = stack
        .unet
        .forward(
            &r["unet.sample"],
            t,
            &r["unet.encoder_hidden_states"],
            &UNetExtras::default(),
        )
        .unwrap();
    let text = stack.text_encoder.forward(&r["text.ids"]).unwrap();
    let decoded = stack.vae.decode(&r["vae.latents"]).unwrap();
    let encoded_mean = stack.vae.encode(&r["vae.image"]).unwrap().mean;
    Outputs {
        unet,
        text,
        decoded,
        encoded_mean,
    }
}

#[test]
fn full_checkpoint_matches_diffusers_layout_and_from_single_file() {
    let r = reference();
    let single = run(&load(&single_file_spec()), &r);
    let folder = run(
        &load(&ModelStackSpec::new(pipeline_dir().to_string_lossy())),
        &r,
    );
    check(
        "unet vs diffusers layout",
        &single.unet,
        &folder.unet,
        SAME_MODEL,
    );
    check(
        "text vs diffusers layout",
        &single.text,
        &folder.text,
        SAME_MODEL,
    );
    check(
        "vae decode vs diffusers layout",
        &single.decoded,
        &folder.decoded,
        SAME_MODEL,
    );
    check(
        "vae encode vs diffusers layout",
        &single.encoded_mean,
        &folder.encoded_mean,
        SAME_MODEL,
    );
    check(
        "unet vs from_single_file",
        &single.unet,
        &r["unet.out"],
        DIFFUSERS,
    );
    check(
        "text vs from_single_file",
        &single.text,
        &r["text.hidden"],
        DIFFUSERS,
    );
    check(
        "vae decode vs from_single_file",
        &single.decoded,
        &r["vae.decoded"],
        DIFFUSERS,
    );
    check(
        "vae encode vs from_single_file",
        &single.encoded_mean,
        &r["vae.encoded_mean"],
        DIFFUSERS,
    );
}

#[test]
fn fp16_checkpoint_is_mapped_lazily_with_every_component() {
    let ckpt = SingleFileCheckpoint::open(&sf("tiny_sd15.safetensors")).unwrap();
    assert_eq!(ckpt.contents().describe(), "UNet, VAE, CLIP text encoder");
    let weights = StackWeights::resolve(&single_file_spec(), &offline()).unwrap();
    // Every tensor of the diffusers-layout files has a source in the single file.
    for (component, map) in [
        ("unet", &weights.unet.weights),
        ("vae", &weights.vae.weights),
        ("text_encoder", &weights.text_encoder.weights),
    ] {
        let stem = if component == "text_encoder" {
            "model"
        } else {
            "diffusion_pytorch_model"
        };
        let file = pipeline_dir()
            .join(component)
            .join(format!("{stem}.fp16.safetensors"));
        let diffusers = candle_core::safetensors::load(file, &Device::Cpu).unwrap();
        for (name, tensor) in &diffusers {
            let name = if component == "text_encoder" && !name.starts_with("text_model.") {
                format!("text_model.{name}")
            } else {
                name.clone()
            };
            assert_eq!(map.shape(&name), Some(tensor.dims()), "{component}: {name}");
        }
    }
}

#[test]
fn vae_override_from_an_original_layout_pickle() {
    let r = reference();
    let mut spec = single_file_spec();
    spec.vae = Some(sf("vae_override.ckpt").to_string_lossy().into_owned());
    let from_ckpt = load(&spec);
    spec.vae = Some(sf("vae_override").to_string_lossy().into_owned());
    let from_folder = load(&spec);
    let a = from_ckpt.vae.decode(&r["vae.latents"]).unwrap();
    let b = from_folder.vae.decode(&r["vae.latents"]).unwrap();
    check("override .ckpt vs diffusers folder", &a, &b, SAME_MODEL);
    check(
        "override .ckpt vs from_single_file",
        &a,
        &r["vae_override.decoded"],
        DIFFUSERS,
    );
    // The override replaced the checkpoint's own VAE.
    assert!(max_abs_diff(&a, &r["vae.decoded"]) > 1e-2);
}

fn run_controlnet(net: &ControlNetModel, r: &HashMap<String, Tensor>) -> Vec<Tensor> {
    let t = r["unet.timestep"].to_vec1::<f32>().unwrap()[0] as f64;
    let out = net
        .forward(
            &r["unet.sample"],
            t,
            &r["unet.encoder_hidden_states"],
            &r["controlnet.image"],
            1.0,
            false,
        )
        .unwrap();
    let mut all = out.down_residuals;
    all.push(out.mid_residual);
    all
}

#[test]
fn original_format_controlnets_match_diffusers() {
    let r = reference();
    let dev = Device::Cpu;
    let hub = offline();
    let config_dir = sf("controlnet");
    let folder = load_controlnet(&config_dir.to_string_lossy(), None, None, &hub, &dev).unwrap();
    let single = load_controlnet(
        &sf("control_tiny.safetensors").to_string_lossy(),
        Some(&config_dir),
        None,
        &hub,
        &dev,
    )
    .unwrap();
    // The difference ControlNet gets the base UNet's weights added back.
    let base = StackWeights::resolve(&single_file_spec(), &hub)
        .unwrap()
        .base_unet_weights;
    let diff = load_controlnet(
        &sf("control_tiny_diff.safetensors").to_string_lossy(),
        Some(&config_dir),
        Some(&base),
        &hub,
        &dev,
    )
    .unwrap();
    let want = run_controlnet(&folder, &r);
    let expected: Vec<&Tensor> = (0..)
        .map_while(|i| r.get(&format!("controlnet.down.{i}")))
        .chain(std::iter::once(&r["controlnet.mid"]))
        .collect();
    assert_eq!(expected.len(), want.len());
    for (name, net) in [("single file", &single), ("difference", &diff)] {
        let got = run_controlnet(net, &r);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            check(
                &format!("{name} residual {i} vs diffusers layout"),
                g,
                w,
                SAME_MODEL,
            );
        }
        for (i, (g, w)) in got.iter().zip(&expected).enumerate() {
            check(
                &format!("{name} residual {i} vs from_single_file"),
                g,
                w,
                DIFFUSERS,
            );
        }
    }
    let err = load_controlnet(
        &sf("control_tiny_diff.safetensors").to_string_lossy(),
        Some(&config_dir),
        None,
        &hub,
        &dev,
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("difference ControlNet"), "{err}");
}

#[test]
fn tiny_checkpoint_without_config_asks_for_one() {
    let ckpt = SingleFileCheckpoint::open(&sf("tiny_sd15.safetensors")).unwrap();
    let err = ckpt.configs(&ConfigSource::Inferred).unwrap_err();
    assert!(
        matches!(
            err,
            SingleFileError::Infer {
                component: "UNet",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("model.config"), "{err}");
}

#[test]
fn wrong_component_is_reported() {
    let spec = ModelStackSpec::new(sf("control_tiny.safetensors").to_string_lossy());
    let err = StackWeights::resolve(&spec, &offline()).err().unwrap();
    assert!(
        matches!(err, ModelStackError::Invalid(ref m) if m.contains("holds no UNet") && m.contains("ControlNet")),
        "{err}"
    );
    let missing = ModelStackSpec::new("/no/such/model.safetensors");
    let err = StackWeights::resolve(&missing, &offline()).err().unwrap();
    assert!(
        err.to_string().contains("/no/such/model.safetensors"),
        "{err}"
    );
}

#[test]
fn sd2_open_clip_text_encoder_is_split_and_renamed() {
    use rotoscope::loaders::single_file::TextEncoderKind;
    use rotoscope::models::clip::{ClipTextConfig, ClipTextEncoder};
    let r = reference();
    let ckpt = SingleFileCheckpoint::open(&sf("tiny_sd2_text.safetensors")).unwrap();
    assert_eq!(
        ckpt.contents().text_encoder,
        Some(TextEncoderKind::OpenClip)
    );
    let folder = fixtures().join("clip/text_encoder_gelu");
    let config = ClipTextConfig::from_file(folder.join("config.json")).unwrap();
    let weights = ckpt.text_encoder_weights_for(&config).unwrap();
    let single = ClipTextEncoder::load(weights.into_var_builder(&Device::Cpu), &config).unwrap();
    let vb = rotoscope::loaders::source::load_safetensors_vb(
        &[folder.join("model.safetensors")],
        &Device::Cpu,
    )
    .unwrap();
    let diffusers = ClipTextEncoder::load(vb, &config).unwrap();
    let ids = &r["text.ids"];
    let got = single.forward(ids).unwrap();
    check(
        "OpenCLIP layout vs diffusers layout",
        &got,
        &diffusers.forward(ids).unwrap(),
        SAME_MODEL,
    );
    check(
        "OpenCLIP layout vs transformers",
        &got,
        &r["sd2_text.hidden"],
        DIFFUSERS,
    );
}
