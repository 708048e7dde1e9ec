//! `rotoscope still` on the model stack (issue 8): a preset whose `model.base` is the tiny
//! single-file checkpoint of tests/fixtures/single_file with a kohya LoRA of
//! tests/fixtures/lora renders the PNG of its diffusers-layout twin (the folder of
//! tests/fixtures/pipeline with the LoRA's diffusers/PEFT twin); A1111 prompt weighting and
//! prompts past 77 tokens change the image and equal the prompt encoded directly with
//! `ModelStack::encode_prompts` and run through the image pipeline.

mod cli_common;
mod tensor_common;

use std::path::{Path, PathBuf};
use std::process::Output;

use candle_core::{Device, Tensor};
use image::RgbImage;
use rotoscope::diffusion::guidance::uses_cfg;
use rotoscope::diffusion::image_pipeline::{
    rgb_to_tensor, tensor_to_rgb, GenerationSettings, InitImage, StableDiffusion,
};
use rotoscope::diffusion::sampler::{ControlInput, TextConditioning};
use rotoscope::diffusion::schedulers::SamplerOptions;
use rotoscope::loaders::lora::LoraSpec;
use rotoscope::loaders::model_stack::{load_controlnet, ModelStack, ModelStackSpec};
use rotoscope::loaders::source::HubOptions;
use rotoscope::preset::SchedulerKind;

use cli_common::{capture, command};
use tensor_common::max_abs_diff;

const PLAIN: &str = "a beautiful anime girl dancing in the rain, soft lighting";
const WEIGHTED: &str = "a beautiful (anime girl:1.3) dancing in the rain, [soft lighting]";
const NEGATIVE: &str = "low quality, blurry, bad anatomy";
const LORA_STRENGTH: f64 = 0.8;
const SEED: u64 = 0;
const STEPS: usize = 5;
const CFG: f64 = 6.0;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn single_file() -> PathBuf {
    fixtures().join("single_file/tiny_sd15.safetensors")
}

fn pipeline() -> PathBuf {
    fixtures().join("pipeline")
}

fn lora(name: &str) -> PathBuf {
    fixtures().join("lora").join(name)
}

fn pose() -> PathBuf {
    pipeline().join("still_pose_a.png")
}

fn offline() -> HubOptions {
    HubOptions {
        offline: true,
        cache_dir: Some(std::env::temp_dir().join("rotoscope-still-stack-test-cache")),
        progress: false,
        endpoint: None,
        token: None,
    }
}

/// A 64×64 DDIM preset with the openpose ControlNet of the pipeline fixture. `model` is the
/// YAML of the `model:` section's keys (indented by two spaces), `extra` more top-level keys.
fn preset(dir: &Path, name: &str, model: &str, prompt: &str, extra: &str) -> PathBuf {
    let text = format!(
        "name: {name}\nmodel:\n{model}prompt: {prompt:?}\nnegative_prompt: {NEGATIVE:?}\n\
         sampler:\n  scheduler: ddim\n  steps: {STEPS}\n  cfg_scale: {CFG}\n  seed: {SEED}\n\
         resolution:\n  width: 64\n  height: 64\n\
         controlnets:\n  - type: openpose\n    model: {:?}\n    scale: 1.0\n{extra}",
        pipeline().join("controlnet_a").display()
    );
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// `model:` keys of the single-file checkpoint (its configs from the pipeline folder).
fn single_file_model() -> String {
    format!(
        "  base: {:?}\n  config: {:?}\n",
        single_file().display(),
        pipeline().display()
    )
}

fn folder_model() -> String {
    format!("  base: {:?}\n", pipeline().display())
}

fn with_lora(file: &str) -> String {
    format!(
        "loras:\n  - {{ path: {:?}, weight: {LORA_STRENGTH} }}\n",
        lora(file).display()
    )
}

fn still(preset: &Path, out: &Path) -> Output {
    capture(
        command(["still", "--pose"])
            .arg(pose())
            .arg("-p")
            .arg(preset)
            .arg("-o")
            .arg(out),
    )
}

fn render(preset: &Path) -> RgbImage {
    let out = preset.with_extension("png");
    let run = still(preset, &out);
    assert!(
        run.status.success(),
        "rotoscope still -p {} failed ({:?}): {}",
        preset.display(),
        run.status.code(),
        String::from_utf8_lossy(&run.stderr)
    );
    image::open(&out).unwrap().to_rgb8()
}

/// Largest per-channel difference in 8-bit levels.
fn max_level_diff(a: &RgbImage, b: &RgbImage) -> u8 {
    assert_eq!(a.dimensions(), b.dimensions());
    a.as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| x.abs_diff(*y))
        .max()
        .unwrap_or(0)
}

#[test]
fn single_file_checkpoint_with_kohya_lora_renders_like_its_diffusers_twin() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let single = render(&preset(
        d,
        "single",
        &single_file_model(),
        PLAIN,
        &with_lora("lora_a_kohya.safetensors"),
    ));
    let twin = render(&preset(
        d,
        "twin",
        &folder_model(),
        PLAIN,
        &with_lora("lora_a_peft.safetensors"),
    ));
    let diff = max_level_diff(&single, &twin);
    println!("single file + kohya LoRA vs diffusers folder + PEFT LoRA: {diff} levels");
    assert!(diff <= 1, "{diff} levels apart");

    // The LoRA is merged: without it the image is another.
    let without = render(&preset(d, "without", &single_file_model(), PLAIN, ""));
    let diff = max_level_diff(&single, &without);
    println!("with vs without the LoRA: {diff} levels");
    assert!(diff > 1, "the LoRA changed nothing ({diff} levels)");
}

/// The still of `prompt` computed without the CLI: the stack loaded, the prompt encoded
/// A1111-style by `ModelStack::encode_prompts`, the image pipeline run with that conditioning.
fn direct_render(spec: &ModelStackSpec, prompt: &str) -> (Tensor, TextConditioning) {
    let device = Device::Cpu;
    let stack = ModelStack::load(spec, &offline(), &device).unwrap();
    let (cond, uncond) = stack
        .encode_prompts(prompt, NEGATIVE, uses_cfg(CFG), &device)
        .unwrap();
    let text = TextConditioning { cond, uncond };
    let openpose = load_controlnet(
        &pipeline().join("controlnet_a").to_string_lossy(),
        None,
        Some(&stack.base_unet_weights),
        &offline(),
        &device,
    )
    .unwrap();
    let sd = StableDiffusion::from_stack(stack, &device);
    let settings = GenerationSettings {
        prompt: prompt.to_string(),
        negative_prompt: NEGATIVE.to_string(),
        width: 64,
        height: 64,
        steps: STEPS,
        guidance_scale: CFG,
        scheduler: SchedulerKind::Ddim,
        options: SamplerOptions::default(),
        seed: SEED,
        deep_cache: None,
    };
    let control = ControlInput {
        model: &openpose,
        image: rgb_to_tensor(&image::open(pose()).unwrap().to_rgb8(), &device).unwrap(),
        scale: 1.0,
        start: 0.0,
        end: 1.0,
        guess_mode: false,
    };
    let image = sd
        .generate_with_text(
            &settings,
            &text,
            &InitImage::None,
            &[control],
            None,
            &mut |_| {},
        )
        .unwrap()
        .image;
    (image, text)
}

#[test]
fn weighted_and_long_prompts_change_the_still_as_their_a1111_encoding_says() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let lora_keys = with_lora("lora_a_kohya.safetensors");
    let mut spec = ModelStackSpec::new(single_file().to_string_lossy());
    spec.config = Some(pipeline());
    spec.loras = vec![LoraSpec {
        path: lora("lora_a_kohya.safetensors"),
        unet_strength: LORA_STRENGTH,
        text_encoder_strength: LORA_STRENGTH,
    }];
    // Past 77 tokens: A1111 / ComfyUI encode it in chunks of 75 tokens.
    let long = [PLAIN; 8].join(", ");

    let plain = render(&preset(d, "plain", &single_file_model(), PLAIN, &lora_keys));
    let (plain_direct, _) = direct_render(&spec, PLAIN);
    assert!(max_level_diff(&plain, &tensor_to_rgb(&plain_direct).unwrap()) <= 1);
    for (name, prompt, several_chunks) in [("weighted", WEIGHTED, false), ("long", &long, true)] {
        let from_cli = render(&preset(d, name, &single_file_model(), prompt, &lora_keys));
        let (direct, text) = direct_render(&spec, prompt);
        let tokens = text.cond.dims()[1];
        assert_eq!(tokens % 77, 0, "{name}: {tokens} positions");
        assert_eq!(tokens > 77, several_chunks, "{name}: {tokens} positions");
        let uncond = text.uncond.as_ref().unwrap();
        assert_eq!(
            uncond.dims(),
            text.cond.dims(),
            "{name}: negative prompt padded alike"
        );

        let diff = max_level_diff(&from_cli, &tensor_to_rgb(&direct).unwrap());
        println!("{name}: CLI vs direct A1111 encoding: {diff} levels");
        assert!(diff <= 1, "{name}: {diff} levels from the direct render");
        // Rendering is deterministic (the plain prompt's two renders above agree), so any
        // change is the prompt's; in float it is far above rounding noise.
        let change = max_abs_diff(&direct, &plain_direct);
        let levels = max_level_diff(&from_cli, &plain);
        println!("{name} vs the plain prompt: {change:.2e} in float, {levels} levels in the PNG");
        assert!(change > 1e-3, "{name}: {change:.2e} from the plain prompt");
        assert!(levels >= 1, "{name}: the PNG is the plain prompt's");
    }
}
