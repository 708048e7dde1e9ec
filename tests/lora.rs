//! LoRA merging at load time (fixtures from scripts/fixtures/lora.py): kohya files (diffusers
//! and LDM module names, LoCon convs) give the same models as their diffusers/PEFT twin
//! (≤ 1e-5) and as diffusers' `load_lora_weights` + `fuse_lora` / `set_adapters` (≤ 1e-4).

mod tensor_common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use rotoscope::loaders::lora::{LoraError, LoraFile, LoraSpec, LoraTarget};
use rotoscope::loaders::model_stack::{ModelStack, ModelStackError, ModelStackSpec, StackWeights};
use rotoscope::loaders::source::HubOptions;
use rotoscope::models::unet::UNetExtras;

use tensor_common::max_abs_diff;

const SAME_MODEL: f32 = 1e-5;
const DIFFUSERS: f32 = 1e-4;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn lora_file(name: &str) -> PathBuf {
    fixtures().join("lora").join(name)
}

fn reference() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(lora_file("reference.safetensors"), &Device::Cpu).unwrap()
}

fn offline() -> HubOptions {
    HubOptions {
        offline: true,
        cache_dir: Some(std::env::temp_dir().join("rotoscope-lora-test-cache")),
        progress: false,
        endpoint: None,
        token: None,
    }
}

fn spec(loras: &[(&str, f64, f64)]) -> ModelStackSpec {
    let mut spec = ModelStackSpec::new(fixtures().join("pipeline").to_string_lossy());
    spec.loras = loras
        .iter()
        .map(|(file, unet, text)| LoraSpec {
            path: lora_file(file),
            unet_strength: *unet,
            text_encoder_strength: *text,
        })
        .collect();
    spec
}

fn outputs(spec: &ModelStackSpec, r: &HashMap<String, Tensor>) -> (Tensor, Tensor) {
    let stack = ModelStack::load(spec, &offline(), &Device::Cpu).unwrap();
    let t = r["timestep"].to_vec1::<f32>().unwrap()[0] as f64;
    let unet = stack
        .unet
        .forward(
            &r["sample"],
            t,
            &r["encoder_hidden_states"],
            &UNetExtras::default(),
        )
        .unwrap();
    let text = stack.text_encoder.forward(&r["ids"]).unwrap();
    (unet, text)
}

fn check(what: &str, got: &Tensor, want: &Tensor, tolerance: f32) {
    let err = max_abs_diff(got, want);
    println!("{what}: max abs err {err:.2e}");
    assert!(err <= tolerance, "{what}: {err} > {tolerance}");
}

#[test]
fn kohya_lora_matches_peft_twin_and_diffusers_fuse_lora() {
    let r = reference();
    let (unet, text) = outputs(&spec(&[("lora_a_kohya.safetensors", 0.8, 0.8)]), &r);
    let (twin_unet, twin_text) = outputs(&spec(&[("lora_a_peft.safetensors", 0.8, 0.8)]), &r);
    check("unet: kohya vs PEFT twin", &unet, &twin_unet, SAME_MODEL);
    check("text: kohya vs PEFT twin", &text, &twin_text, SAME_MODEL);
    check(
        "unet vs diffusers fuse_lora",
        &unet,
        &r["a.unet"],
        DIFFUSERS,
    );
    check(
        "text vs diffusers fuse_lora",
        &text,
        &r["a.text"],
        DIFFUSERS,
    );
}

#[test]
fn several_loras_with_their_own_unet_and_text_strengths() {
    let r = reference();
    let (unet, text) = outputs(
        &spec(&[
            ("lora_a_kohya.safetensors", 0.7, 0.3),
            ("lora_b_kohya_ldm.safetensors", -0.5, 1.2),
        ]),
        &r,
    );
    check(
        "unet vs diffusers set_adapters",
        &unet,
        &r["ab.unet"],
        DIFFUSERS,
    );
    check(
        "text vs diffusers set_adapters",
        &text,
        &r["ab.text"],
        DIFFUSERS,
    );
}

#[test]
fn zero_strength_leaves_the_model_alone_and_patches_are_counted() {
    let r = reference();
    let (unet, text) = outputs(&spec(&[("lora_a_kohya.safetensors", 0.0, 0.0)]), &r);
    check("unet, strength 0", &unet, &r["base.unet"], DIFFUSERS);
    check("text, strength 0", &text, &r["base.text"], DIFFUSERS);

    let weights = StackWeights::resolve(
        &spec(&[
            ("lora_a_kohya.safetensors", 1.0, 0.0),
            ("lora_b_kohya_ldm.safetensors", 1.0, 1.0),
        ]),
        &offline(),
    )
    .unwrap();
    let a = LoraFile::open(&lora_file("lora_a_kohya.safetensors")).unwrap();
    let b = LoraFile::open(&lora_file("lora_b_kohya_ldm.safetensors")).unwrap();
    let count = |f: &LoraFile, t| f.modules().iter().filter(|m| m.target == t).count();
    assert_eq!(
        weights.lora_modules,
        vec![
            count(&a, LoraTarget::Unet),
            count(&b, LoraTarget::Unet) + count(&b, LoraTarget::TextEncoder)
        ]
    );
    assert_eq!(
        weights.unet.weights.patch_count(),
        count(&a, LoraTarget::Unet) + count(&b, LoraTarget::Unet)
    );
    assert_eq!(
        weights.text_encoder.weights.patch_count(),
        count(&b, LoraTarget::TextEncoder)
    );
    // LoCon: 3x3 resnet convs are patched too.
    assert!(a
        .modules()
        .iter()
        .any(|m| m.down_key.contains("resnets_0_conv1")));
}

#[test]
fn lora_on_a_single_file_checkpoint() {
    let r = reference();
    let loras = [("lora_a_kohya.safetensors", 0.8, 0.8)];
    let mut single = spec(&loras);
    single.base = fixtures()
        .join("single_file/tiny_sd15.safetensors")
        .to_string_lossy()
        .into_owned();
    single.config = Some(fixtures().join("pipeline"));
    let (unet, text) = outputs(&single, &r);
    check(
        "unet: single file + LoRA vs diffusers",
        &unet,
        &r["a.unet"],
        DIFFUSERS,
    );
    check(
        "text: single file + LoRA vs diffusers",
        &text,
        &r["a.text"],
        DIFFUSERS,
    );
}

fn write_lora(dir: &Path, name: &str, tensors: &[(&str, &[usize])]) -> PathBuf {
    let map: HashMap<String, Tensor> = tensors
        .iter()
        .map(|(k, shape)| {
            (
                k.to_string(),
                Tensor::ones(*shape, DType::F32, &Device::Cpu).unwrap(),
            )
        })
        .collect();
    let path = dir.join(name);
    candle_core::safetensors::save(&map, &path).unwrap();
    path
}

#[test]
fn unknown_modules_and_lycoris_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let sdxl = write_lora(
        dir.path(),
        "sdxl_like.safetensors",
        &[
            (
                "lora_unet_down_blocks_2_attentions_1_proj_in.lora_down.weight",
                &[2, 16],
            ),
            (
                "lora_unet_down_blocks_2_attentions_1_proj_in.lora_up.weight",
                &[16, 2],
            ),
        ],
    );
    let mut s = spec(&[]);
    s.loras.push(LoraSpec {
        path: sdxl,
        unet_strength: 1.0,
        text_encoder_strength: 1.0,
    });
    let err = StackWeights::resolve(&s, &offline()).err().unwrap();
    assert!(
        matches!(
            err,
            ModelStackError::Lora(LoraError::UnknownModules { count: 1, .. })
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("down_blocks_2_attentions_1_proj_in"),
        "{err}"
    );

    let loha = write_lora(
        dir.path(),
        "loha.safetensors",
        &[(
            "lora_unet_mid_block_attentions_0_proj_in.hada_w1_a",
            &[2, 2],
        )],
    );
    let err = LoraFile::open(&loha).unwrap_err();
    assert!(matches!(err, LoraError::Unsupported { .. }), "{err}");
    assert!(err.to_string().contains("LoHa"), "{err}");

    let half = write_lora(
        dir.path(),
        "half.safetensors",
        &[(
            "lora_unet_mid_block_attentions_0_proj_in.lora_down.weight",
            &[2, 16],
        )],
    );
    let err = LoraFile::open(&half).unwrap_err();
    assert!(matches!(err, LoraError::Incomplete { .. }), "{err}");
}
