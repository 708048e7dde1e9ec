//! Full pipelines against diffusers (fixtures from scripts/fixtures/pipeline.py): the same
//! tiny models, seeds and settings must give the same latents at every step and the same
//! image (max abs error <= 1e-3 on the [0, 1] image).

mod tensor_common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use rotoscope::diffusion::deep_cache::DeepCacheSettings;
use rotoscope::diffusion::image_pipeline::{
    gray_to_tensor, rgb_to_tensor, GenerationSettings, InitImage, StableDiffusion,
};
use rotoscope::diffusion::sampler::ControlInput;
use rotoscope::diffusion::schedulers::{self, SamplerOptions, TimestepSpacing};
use rotoscope::loaders::model_stack::{load_controlnet, ModelStackSpec};
use rotoscope::loaders::source::{HubOptions, ModelFiles, WeightPrecision};
use rotoscope::models::controlnet::ControlNetModel;
use rotoscope::models::unet::deep_cache::CacheBranch;
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
    /// DeepCache's `(cache_interval, cache_branch_id)` (the deep_cache fixture's cases).
    #[serde(default)]
    deep_cache: Option<DeepCacheCase>,
}

#[derive(serde::Deserialize, Clone, Copy)]
struct DeepCacheCase {
    interval: usize,
    branch: usize,
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

/// The pipeline fixture's models, loaded as the pipelines load them.
struct Models {
    sd: StableDiffusion,
    controlnets: HashMap<String, ControlNetModel>,
    inpaint_unet: Option<UNet2DConditionModel>,
}

fn load_models() -> Models {
    let device = Device::Cpu;
    let dir = root();
    let hub = HubOptions::from_env(false);
    let sd =
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
    Models {
        sd,
        controlnets,
        inpaint_unet: Some(inpaint_unet),
    }
}

fn load_cases(fixture: &Path) -> (Cases, HashMap<String, Tensor>) {
    let cases: Cases =
        serde_json::from_str(&std::fs::read_to_string(fixture.join("cases.json")).unwrap())
            .unwrap();
    let reference =
        candle_core::safetensors::load(fixture.join("reference.safetensors"), &Device::Cpu)
            .unwrap();
    (cases, reference)
}

/// Runs `case` (with `deep_cache` as given); the image and the latents after every step.
fn run_case(
    models: &mut Models,
    case: &Case,
    deep_cache: Option<DeepCacheCase>,
) -> (Tensor, Vec<Tensor>) {
    let device = Device::Cpu;
    let dir = root();
    let settings = GenerationSettings {
        prompt: case.prompt.clone(),
        negative_prompt: case.negative_prompt.clone(),
        width: case.width,
        height: case.height,
        steps: case.steps,
        guidance_scale: case.guidance,
        scheduler: SchedulerKind::from_name(&case.scheduler).unwrap(),
        options: SamplerOptions::default(),
        seed: case.seed,
        deep_cache: deep_cache.map(|d| DeepCacheSettings {
            interval: d.interval,
            branch: CacheBranch::from_id(d.branch),
        }),
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
            model: &models.controlnets[&c.model],
            image: load_rgb(&c.image),
            scale: c.scale,
            start: c.start,
            end: c.end,
            guess_mode: case.guess_mode,
        })
        .collect();

    let sd = &mut models.sd;
    let swapped = case.unet == "unet_inpaint";
    if swapped {
        let other = models.inpaint_unet.take().unwrap();
        models.inpaint_unet = Some(std::mem::replace(&mut sd.unet, other));
    }
    let mut step_latents = Vec::new();
    let out = sd
        .generate(&settings, &init, &controls, None, &mut |p| {
            step_latents.push(p.latents.clone())
        })
        .unwrap_or_else(|e| panic!("{}: {e}", case.name));
    if swapped {
        let other = models.inpaint_unet.take().unwrap();
        models.inpaint_unet = Some(std::mem::replace(&mut sd.unet, other));
    }
    (out.image, step_latents)
}

/// Checks `case`'s run against the reference: latents after every step (relative to their
/// magnitude: sigma-scaled schedulers carry values near 15) within 1e-4, the image within
/// 1e-3. Returns the worst latent error and the image error.
fn check_case(
    case: &Case,
    reference: &HashMap<String, Tensor>,
    image: &Tensor,
    step_latents: &[Tensor],
) -> (f32, f32) {
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
    let image_err = max_abs_diff(image, &expected_image(case, reference));
    assert!(
        image_err <= 1e-3,
        "{}: image max abs error {image_err}",
        case.name
    );
    (worst_latent, image_err)
}

fn expected_image(case: &Case, reference: &HashMap<String, Tensor>) -> Tensor {
    reference[&format!("{}.image", case.name)]
        .permute((0, 3, 1, 2))
        .unwrap()
}

#[test]
fn pipelines_match_diffusers() {
    let (cases, reference) = load_cases(&root());
    let mut models = load_models();
    let mut report = Vec::new();
    assert!(cases.cases.len() >= 8);
    for case in &cases.cases {
        let (image, step_latents) = run_case(&mut models, case, None);
        let (worst_latent, image_err) = check_case(case, &reference, &image, &step_latents);
        report.push(format!(
            "{}: {} steps, latents rel err {worst_latent:e}, image err {image_err:e}",
            case.name,
            step_latents.len()
        ));
    }
    eprintln!("{}", report.join("\n"));
}

/// DeepCache against the PyPI `DeepCache` package's `DeepCacheSDHelper` on the same models
/// (fixtures from scripts/fixtures/deep_cache.py). The same run without the cache must be
/// far from its reference, so the cases exercise the cache.
#[test]
fn deep_cache_matches_the_deepcache_package() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/deep_cache");
    let (cases, reference) = load_cases(&fixture);
    let mut models = load_models();
    let mut report = Vec::new();
    assert!(cases.cases.len() >= 5);
    for case in &cases.cases {
        let deep_cache = case.deep_cache.expect("deep_cache case");
        let (image, step_latents) = run_case(&mut models, case, Some(deep_cache));
        let (worst_latent, image_err) = check_case(case, &reference, &image, &step_latents);
        let (uncached, _) = run_case(&mut models, case, None);
        let cache_effect = max_abs_diff(&uncached, &expected_image(case, &reference));
        assert!(
            cache_effect > 10.0 * image_err.max(1e-4),
            "{}: without the cache the image differs by only {cache_effect}",
            case.name
        );
        report.push(format!(
            "{}: latents rel err {worst_latent:e}, image err {image_err:e} (uncached differs by {cache_effect:.3})",
            case.name
        ));
    }
    eprintln!("{}", report.join("\n"));
}

/// The preset's `sampler.timestep_spacing` and `sampler.eta` reach the image pipeline
/// (`still`, the detailer): trailing spacing runs the steps at the timesteps of the scheduler
/// built with it (starting at the last training timestep, 999, as diffusers' trailing does),
/// not the model's leading ones, for txt2img and img2img; DDIM's eta changes the image.
#[test]
fn sampler_options_reach_the_image_pipeline() {
    let (cases, _) = load_cases(&root());
    // A case of the size of init.png.
    let case = cases
        .cases
        .iter()
        .find(|c| c.pipeline == "img2img")
        .unwrap();
    let models = load_models();
    let run = |options: SamplerOptions, init: &InitImage| {
        let settings = GenerationSettings {
            prompt: case.prompt.clone(),
            negative_prompt: case.negative_prompt.clone(),
            width: case.width,
            height: case.height,
            steps: 4,
            guidance_scale: 1.0,
            scheduler: SchedulerKind::Ddim,
            options,
            seed: case.seed,
            deep_cache: None,
        };
        let mut timesteps = Vec::new();
        let out = models
            .sd
            .generate(&settings, init, &[], None, &mut |p| {
                timesteps.push(p.timestep)
            })
            .unwrap();
        (timesteps, out.image)
    };
    let timesteps_of = |options: &SamplerOptions, strength: f64| {
        let mut scheduler =
            schedulers::build_with(SchedulerKind::Ddim, &models.sd.scheduler_config, options)
                .unwrap();
        scheduler.set_timesteps(4, strength).unwrap();
        scheduler.timesteps().to_vec()
    };
    let trailing = SamplerOptions {
        eta: Some(0.0),
        timestep_spacing: Some(TimestepSpacing::Trailing),
    };
    let img2img = InitImage::Img2Img {
        image: load_rgb("init.png"),
        strength: 0.5,
    };
    for (init, strength) in [(InitImage::None, 1.0), (img2img, 0.5)] {
        let (plain_steps, plain) = run(SamplerOptions::default(), &init);
        let (trailing_steps, trailing_image) = run(trailing, &init);
        assert_eq!(
            plain_steps,
            timesteps_of(&SamplerOptions::default(), strength)
        );
        assert_eq!(trailing_steps, timesteps_of(&trailing, strength));
        assert_ne!(trailing_steps, plain_steps);
        assert!(max_abs_diff(&plain, &trailing_image) > 1e-4);
        if strength == 1.0 {
            assert_eq!(trailing_steps[0], 999.0);
        }
        let noisy = SamplerOptions {
            eta: Some(1.0),
            ..trailing
        };
        let (noisy_steps, noisy_image) = run(noisy, &init);
        assert_eq!(noisy_steps, trailing_steps);
        assert!(max_abs_diff(&noisy_image, &trailing_image) > 1e-4);
    }
}
