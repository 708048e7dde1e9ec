//! ControlNetModel parity against diffusers (fixtures from scripts/fixtures/controlnet.py).

mod tensor_common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use rotoscope::models::controlnet::{
    ChannelOrder, ControlNetConfig, ControlNetModel, ControlNetOutput,
};
use rotoscope::models::unet::UNetError;

use tensor_common::max_abs_diff;

const TOLERANCE: f32 = 1e-4;
const SCALE: f64 = 0.7;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/controlnet")
}

fn load_controlnet(config: &ControlNetConfig) -> ControlNetModel {
    let weights = fixture_dir().join("sd15/diffusion_pytorch_model.fp16.safetensors");
    // SAFETY: fixture files are not modified while mapped.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[weights], DType::F32, &Device::Cpu) }
        .unwrap();
    ControlNetModel::load(vb, config).unwrap()
}

fn config() -> ControlNetConfig {
    ControlNetConfig::from_file(fixture_dir().join("sd15/config.json")).unwrap()
}

fn io() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture_dir().join("io.safetensors"), &Device::Cpu).unwrap()
}

fn run(
    net: &ControlNetModel,
    io: &HashMap<String, Tensor>,
    cond: &Tensor,
    guess: bool,
) -> ControlNetOutput {
    let t = io["timestep"].to_vec1::<f32>().unwrap()[0] as f64;
    net.forward(
        &io["sample"],
        t,
        &io["encoder_hidden_states"],
        cond,
        SCALE,
        guess,
    )
    .unwrap()
}

fn check(mode: &str, out: &ControlNetOutput, io: &HashMap<String, Tensor>) {
    let expected_down: Vec<&Tensor> = (0..)
        .map_while(|i| io.get(&format!("{mode}.down.{i}")))
        .collect();
    assert_eq!(out.down_residuals.len(), expected_down.len());
    for (i, (got, want)) in out.down_residuals.iter().zip(expected_down).enumerate() {
        let err = max_abs_diff(got, want);
        println!("{mode}.down.{i}: max abs err {err:.2e}");
        assert!(err <= TOLERANCE, "{mode}.down.{i}: {err}");
    }
    let err = max_abs_diff(&out.mid_residual, &io[&format!("{mode}.mid")]);
    println!("{mode}.mid: max abs err {err:.2e}");
    assert!(err <= TOLERANCE, "{mode}.mid: {err}");
}

#[test]
fn residuals_match_diffusers_with_and_without_guess_mode() {
    let net = load_controlnet(&config());
    let io = io();
    check(
        "normal",
        &run(&net, &io, &io["controlnet_cond"], false),
        &io,
    );
    check("guess", &run(&net, &io, &io["controlnet_cond"], true), &io);
}

#[test]
fn bgr_models_flip_the_control_image() {
    let io = io();
    let mut bgr_config = config();
    bgr_config.channel_order = ChannelOrder::Bgr;
    let bgr = load_controlnet(&bgr_config);
    let cond = &io["controlnet_cond"];
    let flipped = cond
        .index_select(&Tensor::new(&[2u32, 1, 0], &Device::Cpu).unwrap(), 1)
        .unwrap();
    // A BGR model fed the flipped image sees exactly what the RGB model saw.
    check("normal", &run(&bgr, &io, &flipped, false), &io);
}

#[test]
fn rejects_control_image_of_wrong_size() {
    let net = load_controlnet(&config());
    let io = io();
    let small = io["controlnet_cond"].narrow(2, 0, 32).unwrap();
    let err = net
        .forward(
            &io["sample"],
            1.0,
            &io["encoder_hidden_states"],
            &small,
            1.0,
            false,
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            UNetError::InvalidInput {
                input: "controlnet_cond",
                ..
            }
        ),
        "{err}"
    );
}
