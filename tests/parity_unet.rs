//! UNet2DConditionModel parity against diffusers (fixtures from scripts/fixtures/unet.py).

mod fixture_common;
mod tensor_common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use rotoscope::models::attention_hook::{CrossFrameKeyValues, LayerOutputHook};
use rotoscope::models::unet::{UNet2DConditionModel, UNetConfig, UNetError, UNetExtras};
use rotoscope::nn::AttentionBudget;

use tensor_common::max_abs_diff;

const TOLERANCE: f32 = 1e-4;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/unet")
}

fn load_unet(name: &str) -> UNet2DConditionModel {
    let dir = fixture_dir().join(name);
    let config = UNetConfig::from_file(dir.join("config.json")).unwrap();
    let weights = fixture_common::unet_weights(&dir);
    // SAFETY: fixture files are not modified while mapped.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[weights], DType::F32, &Device::Cpu) }
        .unwrap();
    UNet2DConditionModel::load(vb, &config).unwrap()
}

struct Io(HashMap<String, Tensor>);

impl Io {
    fn load() -> Self {
        Io(
            candle_core::safetensors::load(fixture_dir().join("io.safetensors"), &Device::Cpu)
                .unwrap(),
        )
    }
    fn get(&self, key: &str) -> &Tensor {
        self.0
            .get(key)
            .unwrap_or_else(|| panic!("fixture tensor {key}"))
    }
    fn scalar(&self, key: &str) -> f64 {
        self.get(key).to_vec1::<f32>().unwrap()[0] as f64
    }
    fn down_residuals(&self, name: &str) -> Vec<Tensor> {
        (0..)
            .map_while(|i| self.0.get(&format!("{name}.down_residual.{i}")).cloned())
            .collect()
    }
}

fn assert_close(what: &str, got: &Tensor, expected: &Tensor) {
    let err = max_abs_diff(got, expected);
    println!("{what}: max abs err {err:.2e}");
    assert!(err <= TOLERANCE, "{what}: max abs err {err} > {TOLERANCE}");
}

/// Plain forward, forward with ControlNet residuals, and an input size that is not a multiple
/// of the total downsampling.
fn check_model(name: &str) {
    let unet = load_unet(name);
    let io = Io::load();
    let p = |k: &str| format!("{name}.{k}");
    let sample = io.get(&p("sample"));
    let t = io.scalar(&p("timestep"));
    let ehs = io.get(&p("encoder_hidden_states"));

    let out = unet
        .forward(sample, t, ehs, &UNetExtras::default())
        .unwrap();
    assert_close(&p("out"), &out, io.get(&p("out")));

    let down = io.down_residuals(name);
    let extras = UNetExtras {
        down_residuals: Some(&down),
        mid_residual: Some(io.get(&p("mid_residual"))),
        ..Default::default()
    };
    let out = unet.forward(sample, t, ehs, &extras).unwrap();
    assert_close(&p("out_residuals"), &out, io.get(&p("out_residuals")));

    let out = unet
        .forward(
            io.get(&p("odd_sample")),
            io.scalar(&p("odd_timestep")),
            io.get(&p("odd_encoder_hidden_states")),
            &UNetExtras::default(),
        )
        .unwrap();
    assert_close(&p("odd_out"), &out, io.get(&p("odd_out")));
}

#[test]
fn sd15_matches_diffusers() {
    check_model("sd15");
}

#[test]
fn sd2_matches_diffusers() {
    check_model("sd2");
}

#[test]
fn inpaint_9_channel_matches_diffusers() {
    check_model("inpaint");
}

/// only_cross_attention, 2 transformer layers per block, downsample_padding 0, scaled mid
/// block, custom time-embedding width, sin-first shifted embeddings, centred input.
#[test]
fn rarer_config_options_match_diffusers() {
    check_model("variants");
}

#[test]
fn tiny_attention_budget_changes_nothing() {
    let mut unet = load_unet("sd15");
    // Forces query, head and key chunking (online softmax) in every attention.
    unet.set_attention_budget(AttentionBudget { max_scores: 40 });
    let io = Io::load();
    let out = unet
        .forward(
            io.get("sd15.sample"),
            io.scalar("sd15.timestep"),
            io.get("sd15.encoder_hidden_states"),
            &UNetExtras::default(),
        )
        .unwrap();
    assert_close("sd15.out (budget 40)", &out, io.get("sd15.out"));
}

fn frames(io: &Io) -> (&Tensor, f64, &Tensor) {
    (
        io.get("sd15.frames_sample"),
        io.scalar("sd15.frames_timestep"),
        io.get("sd15.frames_encoder_hidden_states"),
    )
}

#[test]
fn cross_frame_attention_hook_matches_diffusers_processor() {
    let unet = load_unet("sd15");
    let io = Io::load();
    let (sample, t, ehs) = frames(&io);
    let out = unet
        .forward(sample, t, ehs, &UNetExtras::default())
        .unwrap();
    assert_close("sd15.frames_out", &out, io.get("sd15.frames_out"));

    // Each frame attends to [itself, frame 0, previous frame].
    let hook = CrossFrameKeyValues::anchor_and_previous(3, 1).unwrap();
    let extras = UNetExtras {
        attention_hook: Some(&hook),
        ..Default::default()
    };
    let out = unet.forward(sample, t, ehs, &extras).unwrap();
    assert_close("sd15.out_cross_frame", &out, io.get("sd15.out_cross_frame"));

    // Each frame attends to frame 0 only.
    let hook = CrossFrameKeyValues::anchor_only(3, 1).unwrap();
    let extras = UNetExtras {
        attention_hook: Some(&hook),
        ..Default::default()
    };
    let out = unet.forward(sample, t, ehs, &extras).unwrap();
    assert_close("sd15.out_anchor_only", &out, io.get("sd15.out_anchor_only"));
}

/// Stand-in for a motion module, identical to `mix_frames` in scripts/fixtures/unet.py.
#[derive(Default)]
struct MixFrames {
    positions: Mutex<Vec<String>>,
}

impl LayerOutputHook for MixFrames {
    fn after_layer(&self, position: &str, h: &Tensor) -> candle_core::Result<Option<Tensor>> {
        self.positions.lock().unwrap().push(position.to_string());
        let mean = h.mean_keepdim(0)?;
        Ok(Some(h.broadcast_add(&(mean * 0.25)?)?))
    }
}

#[test]
fn layer_hook_runs_where_motion_modules_go() {
    let unet = load_unet("sd15");
    let io = Io::load();
    let (sample, t, ehs) = frames(&io);
    let hook = MixFrames::default();
    let extras = UNetExtras {
        layer_hook: Some(&hook),
        ..Default::default()
    };
    let out = unet.forward(sample, t, ehs, &extras).unwrap();
    assert_close("sd15.out_layer_hook", &out, io.get("sd15.out_layer_hook"));

    let bytes = std::fs::read(fixture_dir().join("io.safetensors")).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let expected: Vec<String> =
        serde_json::from_str(&meta.metadata().as_ref().unwrap()["sd15.layer_hook_positions"])
            .unwrap();
    assert_eq!(*hook.positions.lock().unwrap(), expected);
}

#[test]
fn rejects_mismatched_inputs() {
    let unet = load_unet("sd15");
    let io = Io::load();
    let (sample, t, ehs) = (
        io.get("sd15.sample"),
        10.0,
        io.get("sd15.encoder_hidden_states"),
    );
    let down = io.down_residuals("sd15");
    let extras = UNetExtras {
        down_residuals: Some(&down[1..]),
        ..Default::default()
    };
    let err = unet.forward(sample, t, ehs, &extras).unwrap_err();
    assert!(
        matches!(
            err,
            UNetError::InvalidInput {
                input: "down_residuals",
                ..
            }
        ),
        "{err}"
    );
    let wrong_channels = io.get("inpaint.sample");
    let err = unet
        .forward(wrong_channels, t, ehs, &UNetExtras::default())
        .unwrap_err();
    assert!(
        matches!(
            err,
            UNetError::InvalidInput {
                input: "sample",
                ..
            }
        ),
        "{err}"
    );
    let err = unet
        .forward(
            sample,
            t,
            &ehs.narrow(0, 0, 1).unwrap(),
            &UNetExtras::default(),
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            UNetError::InvalidInput {
                input: "encoder_hidden_states",
                ..
            }
        ),
        "{err}"
    );
}
