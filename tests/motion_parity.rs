//! AnimateDiff motion modules against diffusers (fixtures from scripts/fixtures/motion.py):
//! one temporal transformer, and the UNet with the modules of a diffusers `MotionAdapter`, of
//! the same weights under the original AnimateDiff names, and of a pickled v1-style original
//! checkpoint, each against `UNetMotionModel.from_unet2d(unet, adapter)` (max abs error
//! <= 1e-4).

mod tensor_common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use rotoscope::loaders::motion_weights::{MotionWeights, Naming};
use rotoscope::loaders::source::{load_safetensors_vb, HubOptions};
use rotoscope::models::motion::{MotionLoadOptions, MotionModuleFiles, MotionModules};
use rotoscope::models::unet::{UNet2DConditionModel, UNetConfig, UNetExtras};

use tensor_common::max_abs_diff;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn io() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixtures().join("motion/io.safetensors"), &Device::Cpu).unwrap()
}

fn unet() -> (UNet2DConditionModel, UNetConfig) {
    let dir = fixtures().join("pipeline/unet");
    let config = UNetConfig::from_file(dir.join("config.json")).unwrap();
    let vb = load_safetensors_vb(
        &[dir.join("diffusion_pytorch_model.fp16.safetensors")],
        &Device::Cpu,
    )
    .unwrap();
    (UNet2DConditionModel::load(vb, &config).unwrap(), config)
}

fn motion(files: MotionModuleFiles, config: &UNetConfig, heads: usize) -> MotionModules {
    let options = MotionLoadOptions {
        single_file_heads: heads,
    };
    MotionModules::load_files(&files, config, &Device::Cpu, &options).unwrap()
}

fn adapter_v2_files() -> MotionModuleFiles {
    let dir = fixtures().join("motion/adapter_v2");
    MotionModuleFiles {
        weights: dir.join("diffusion_pytorch_model.fp16.safetensors"),
        config: Some(dir.join("config.json")),
    }
}

/// diffusers' `(b, c, f, h, w)` video latents → our `(b·f, c, h, w)` frame batch.
fn to_frames(video: &Tensor) -> Tensor {
    let (b, c, f, h, w) = video.dims5().unwrap();
    video
        .permute((0, 2, 1, 3, 4))
        .unwrap()
        .contiguous()
        .unwrap()
        .reshape((b * f, c, h, w))
        .unwrap()
}

/// Runs the UNet with motion modules on the `prefix.*` inputs and compares with `out_key`.
fn check_unet(prefix: &str, out_key: &str, modules: &MotionModules) -> f32 {
    let io = io();
    let (unet, _) = unet();
    let video = &io[&format!("{prefix}.sample")];
    let frames = video.dim(2).unwrap();
    let t = io[&format!("{prefix}.timestep")].to_vec1::<f32>().unwrap()[0] as f64;
    let hook = modules.hook(frames);
    let extras = UNetExtras {
        layer_hook: Some(&hook),
        ..Default::default()
    };
    let out = unet
        .forward(
            &to_frames(video),
            t,
            &io[&format!("{prefix}.encoder_hidden_states")],
            &extras,
        )
        .unwrap();
    let expected = to_frames(&io[out_key]);
    // Without the modules the output must differ clearly, or the test would prove nothing.
    let plain = unet
        .forward(
            &to_frames(video),
            t,
            &io[&format!("{prefix}.encoder_hidden_states")],
            &UNetExtras::default(),
        )
        .unwrap();
    assert!(
        max_abs_diff(&plain, &expected) > 0.05,
        "{prefix}: the motion modules barely change the output"
    );
    max_abs_diff(&out, &expected)
}

#[test]
fn temporal_transformer_matches_diffusers() {
    let (_, config) = unet();
    let modules = motion(adapter_v2_files(), &config, 0);
    let io = io();
    let module = modules.get("down_blocks.1.motion_modules.0").unwrap();
    let input = &io["v2.module.input"];
    let out = module.forward(input, 8).unwrap();
    let err = max_abs_diff(&out, &io["v2.module.out"]);
    println!("temporal transformer: max abs error {err:.2e}");
    assert!(err <= 1e-4, "max abs error {err}");
    assert!(max_abs_diff(input, &out) > 0.05);
    // Frames of one sequence must not be mixed with another batch entry's: two sequences of
    // 4 frames give another result than one of 8.
    let split = module.forward(input, 4).unwrap();
    assert!(max_abs_diff(&split, &out) > 1e-3);
    assert!(module.forward(input, 3).is_err());
    // Longer sequences than the positional encoding covers are refused, not truncated.
    let long = Tensor::zeros((33, 16, 2, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
    let err = module.forward(&long, 33).unwrap_err().to_string();
    assert!(err.contains("covers 32"), "{err}");
}

#[test]
fn preset_paths_resolve_to_files() {
    let hub = HubOptions {
        offline: true,
        cache_dir: None,
        progress: false,
        endpoint: None,
        token: None,
    };
    let folder = fixtures().join("motion/adapter_v2");
    let files = MotionModuleFiles::resolve(folder.to_str().unwrap(), &hub).unwrap();
    assert_eq!(files, adapter_v2_files());
    let ckpt = fixtures().join("motion/adapter_v1_original.ckpt");
    let files = MotionModuleFiles::resolve(ckpt.to_str().unwrap(), &hub).unwrap();
    assert_eq!(files.weights, ckpt);
    assert_eq!(files.config, None);
}

#[test]
fn diffusers_motion_adapter_matches_unet_motion_model() {
    let (_, config) = unet();
    let modules = motion(adapter_v2_files(), &config, 0);
    assert_eq!(modules.max_frames(), 32);
    assert_eq!(
        modules.positions().count(),
        7,
        "2 down, 1 mid, 4 up modules"
    );
    let err = check_unet("v2", "v2.out", &modules);
    println!("UNet + MotionAdapter (diffusers layout): max abs error {err:.2e}");
    assert!(err <= 1e-4, "max abs error {err}");
}

#[test]
fn original_names_load_like_diffusers_conversion() {
    let path = fixtures().join("motion/adapter_v2_original.safetensors");
    assert_eq!(
        MotionWeights::open(&path).unwrap().naming(),
        Naming::Original
    );
    let (_, config) = unet();
    let files = MotionModuleFiles {
        weights: path,
        config: None,
    };
    let modules = motion(files, &config, 2);
    assert_eq!(modules.max_frames(), 32);
    let err = check_unet("v2", "v2.out_original", &modules);
    println!("UNet + original-name safetensors: max abs error {err:.2e}");
    assert!(err <= 1e-4, "max abs error {err}");
}

#[test]
fn pickled_v1_checkpoint_without_mid_block() {
    let (_, config) = unet();
    let files = MotionModuleFiles {
        weights: fixtures().join("motion/adapter_v1_original.ckpt"),
        config: None,
    };
    let modules = motion(files, &config, 2);
    // v1: no mid-block module, encodings for 24 frames, two transformer blocks per module.
    assert_eq!(modules.max_frames(), 24);
    assert!(modules.get("mid_block.motion_modules.0").is_none());
    assert_eq!(modules.positions().count(), 6);
    assert_eq!(
        modules
            .get("up_blocks.0.motion_modules.1")
            .unwrap()
            .spec()
            .depth,
        2
    );
    let err = check_unet("v1", "v1.out", &modules);
    println!("UNet + pickled v1 original checkpoint (batch 2): max abs error {err:.2e}");
    assert!(err <= 1e-4, "max abs error {err}");
}

#[test]
fn adapter_for_another_unet_is_rejected() {
    // The unet fixture's SD1.5-like UNet has two layers per block: the v2 adapter (one layer
    // per block) lacks modules for the second layers.
    let config = UNetConfig::from_file(fixtures().join("unet/sd15/config.json")).unwrap();
    let err = MotionModules::load_files(
        &adapter_v2_files(),
        &config,
        &Device::Cpu,
        &MotionLoadOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("down_blocks.0.motion_modules.1"), "{err}");
    // A file that is not a motion module.
    let not_motion =
        fixtures().join("pipeline/controlnet_a/diffusion_pytorch_model.fp16.safetensors");
    let err = MotionWeights::open(&not_motion).err().unwrap().to_string();
    assert!(
        err.contains("no AnimateDiff motion-module tensors"),
        "{err}"
    );
}
