//! Full pipelines against diffusers (fixtures from scripts/fixtures/pipeline.py): the same
//! tiny models, seeds and settings must give the same latents at every step and the same
//! image (max abs error <= 1e-3 on the [0, 1] image).

mod tensor_common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use rotoscope::diffusion::image_pipeline::{
    gray_to_tensor, rgb_to_tensor, GenerationSettings, InitImage, StableDiffusion,
};
use rotoscope::diffusion::sampler::ControlInput;
use rotoscope::loaders::model_stack::{load_controlnet, ModelStackSpec};
use rotoscope::loaders::source::{HubOptions, ModelFiles, WeightPrecision};
use rotoscope::models::controlnet::ControlNetModel;
use rotoscope::models::unet::{UNet2DConditionModel, UNetConfig};
use rotoscope::preset::SchedulerKind;

use tensor_common::{max_abs, max_abs_diff};

#[derive(serde::Deserialize)]
struct Cases {
    cases: Vec<Case>,
}

#[derive(serde::Deserialize)]
struct Case {
    name: String,
    pipeline: String,
    unet: String,
    scheduler: String,
    steps: usize,
    guidance: f64,
    seed: u64,
    strength: f64,
    guess_mode: bool,
    prompt: String,
    negative_prompt: String,
    width: usize,
    height: usize,
    controls: Vec<Control>,
}

#[derive(serde::Deserialize)]
struct Control {
    model: String,
    image: String,
    scale: f64,
    start: f64,
    end: f64,
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pipeline")
}

fn load_rgb(name: &str) -> Tensor {
    let img = image::open(root().join(name)).unwrap().to_rgb8();
    rgb_to_tensor(&img, &Device::Cpu).unwrap()
}

#[test]
fn pipelines_match_diffusers() {
    let device = Device::Cpu;
    let dir = root();
    let cases: Cases =
        serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).unwrap()).unwrap();
    let reference =
        candle_core::safetensors::load(dir.join("reference.safetensors"), &device).unwrap();

    let hub = HubOptions::from_env(false);
    let mut sd =
        StableDiffusion::load(&ModelStackSpec::new(dir.to_string_lossy()), &hub, &device).unwrap();
    let mut controlnets: HashMap<String, ControlNetModel> = HashMap::new();
    for name in ["controlnet_a", "controlnet_b"] {
        let source = dir.join(name).to_string_lossy().into_owned();
        let model = load_controlnet(&source, None, None, &hub, &device).unwrap();
        controlnets.insert(name.to_string(), model);
    }
    let inpaint_unet = {
        let files = ModelFiles {
            config: dir.join("unet_inpaint/config.json"),
            weights: dir.join("unet_inpaint/diffusion_pytorch_model.fp16.safetensors"),
            precision: WeightPrecision::F16,
        };
        let config = UNetConfig::from_file(&files.config).unwrap();
        UNet2DConditionModel::load(files.var_builder(&device).unwrap(), &config).unwrap()
    };
    let mut inpaint_unet = Some(inpaint_unet);

    let mut report = Vec::new();
    assert!(cases.cases.len() >= 8);
    for case in &cases.cases {
        let settings = GenerationSettings {
            prompt: case.prompt.clone(),
            negative_prompt: case.negative_prompt.clone(),
            width: case.width,
            height: case.height,
            steps: case.steps,
            guidance_scale: case.guidance,
            scheduler: SchedulerKind::from_name(&case.scheduler).unwrap(),
            seed: case.seed,
        };
        let init = match case.pipeline.as_str() {
            "controlnet" | "plain" => InitImage::None,
            "img2img" => InitImage::Img2Img {
                image: load_rgb("init.png"),
                strength: case.strength,
            },
            "inpaint" => {
                let mask = image::open(dir.join("mask.png")).unwrap().to_luma8();
                InitImage::Inpaint {
                    image: load_rgb("init.png"),
                    mask: gray_to_tensor(&mask, &device).unwrap(),
                    strength: case.strength,
                }
            }
            other => panic!("unknown pipeline {other}"),
        };
        let controls: Vec<ControlInput> = case
            .controls
            .iter()
            .map(|c| ControlInput {
                model: &controlnets[&c.model],
                image: load_rgb(&c.image),
                scale: c.scale,
                start: c.start,
                end: c.end,
                guess_mode: case.guess_mode,
            })
            .collect();

        let swapped = case.unet == "unet_inpaint";
        if swapped {
            let other = inpaint_unet.take().unwrap();
            inpaint_unet = Some(std::mem::replace(&mut sd.unet, other));
        }
        let mut step_latents = Vec::new();
        let out = sd
            .generate(&settings, &init, &controls, None, &mut |p| {
                step_latents.push(p.latents.clone())
            })
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        if swapped {
            let other = inpaint_unet.take().unwrap();
            inpaint_unet = Some(std::mem::replace(&mut sd.unet, other));
        }

        // Latents after every step: relative to the latents' magnitude (sigma-scaled
        // schedulers carry values near 15).
        let mut worst_latent = 0f32;
        for (i, ours) in step_latents.iter().enumerate() {
            let expected = &reference[&format!("{}.latents.{i}", case.name)];
            let err = max_abs_diff(ours, expected) / max_abs(expected).max(1.0);
            worst_latent = worst_latent.max(err);
            assert!(
                err <= 1e-4,
                "{}: latents after step {i}: relative error {err}",
                case.name
            );
        }
        assert!(
            !reference.contains_key(&format!("{}.latents.{}", case.name, step_latents.len())),
            "{}: diffusers ran more steps than rotoscope ({})",
            case.name,
            step_latents.len()
        );
        let expected_image = reference[&format!("{}.image", case.name)]
            .permute((0, 3, 1, 2))
            .unwrap();
        let image_err = max_abs_diff(&out.image, &expected_image);
        assert!(
            image_err <= 1e-3,
            "{}: image max abs error {image_err}",
            case.name
        );
        report.push(format!(
            "{}: {} steps, latents rel err {worst_latent:e}, image err {image_err:e}",
            case.name,
            step_latents.len()
        ));
    }
    eprintln!("{}", report.join("\n"));
}
