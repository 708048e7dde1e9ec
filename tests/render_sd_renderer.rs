//! The SD renderer as a library, with the tiny random models of tests/fixtures/pipeline:
//!
//! * a frame without temporal conditioning is exactly what the parity-tested image pipeline
//!   (`StableDiffusion::generate`, = diffusers' StableDiffusionControlNetImg2ImgPipeline)
//!   makes for the same seed, multi-ControlNet with per-net scale and step range included;
//! * cross-frame attention lines the cached keys/values up by layer and step: attending to
//!   an anchor that *is* the frame changes nothing (attention over duplicated keys/values
//!   is the same attention), attending to another frame does change it;
//! * the attention cache holds what the layer shapes say, pooled above
//!   `max_reference_tokens`.

mod render_common;

use candle_core::Device;
use render_common::*;
use rotoscope::cancel::StopFlag;
use rotoscope::diffusion::image_pipeline::{
    rgb_to_tensor, tensor_to_rgb, GenerationSettings, InitImage,
};
use rotoscope::diffusion::sampler::ControlInput;
use rotoscope::diffusion::schedulers::SamplerOptions;
use rotoscope::loaders::source::HubOptions;
use rotoscope::pipeline::plan::plan_batches;
use rotoscope::pipeline::resume::ChainedRenderer;
use rotoscope::pipeline::stages::{ControlImage, PreparedFrame};
use rotoscope::preset::{ControlKind, Preset};
use rotoscope::render::sd_config::SdRenderConfig;
use rotoscope::render::sd_renderer::SdRenderer;
use rotoscope::video::Frame;

const SIZE: u32 = 64;

fn renderer(sections: &str) -> SdRenderer {
    let text = tiny_preset(SIZE, "", sections);
    let preset = Preset::from_yaml(&text, "test preset").unwrap();
    let config = SdRenderConfig::from_preset(&preset, (SIZE, SIZE), None);
    SdRenderer::load(config, &HubOptions::from_env(false)).unwrap()
}

fn sample_frame(index: u64) -> Frame {
    input_frames(&repo_path("samples/astronaut.mp4"), index..index + 1).remove(0)
}

/// Render `frames` as one batch without a lead-in.
fn render_batch(r: &mut SdRenderer, frames: Vec<PreparedFrame>) -> Vec<Frame> {
    let plan = plan_batches(frames.len(), frames.len(), 0).unwrap();
    r.render_chained(&plan.batches[0], &frames, None, &StopFlag::new())
        .unwrap()
}

fn differing_bytes(a: &Frame, b: &Frame) -> (usize, u8) {
    a.data
        .iter()
        .zip(&b.data)
        .filter(|(x, y)| x != y)
        .fold((0, 0), |(n, m), (x, y)| (n + 1, m.max(x.abs_diff(*y))))
}

fn fixture_image(name: &str) -> image::RgbImage {
    image::open(fixture_pipeline().join(name))
        .unwrap()
        .to_rgb8()
}

#[test]
fn a_frame_without_temporal_conditioning_is_the_image_pipeline_output() {
    let net_a = fixture_pipeline().join("controlnet_a");
    let net_b = fixture_pipeline().join("controlnet_b");
    let controls = format!(
        "controlnets:\n  - {{type: openpose, model: {}, scale: 0.8, start: 0.0, end: 0.7}}\n  \
         - {{type: softedge, model: {}, scale: 0.5, start: 0.2, end: 1.0}}\n",
        net_a.display(),
        net_b.display()
    );
    let mut r = renderer(&controls);
    // Control maps at another size than the render: the renderer resizes them (bilinear).
    let pose = fixture_image("pose_a.png");
    let edges = fixture_image("pose_b.png");
    let source = sample_frame(3);
    let mut prepared = PreparedFrame::new(source.clone());
    for (kind, map) in [
        (ControlKind::Openpose, &pose),
        (ControlKind::Softedge, &edges),
    ] {
        prepared.controls.push(ControlImage {
            kind,
            image: Frame::from_rgb_image(3, map.clone()),
        });
    }
    let rendered = render_batch(&mut r, vec![prepared]).remove(0);

    // The same frame through StableDiffusion::generate, with the renderer's own models.
    let preset = Preset::from_yaml(&tiny_preset(SIZE, "", &controls), "p").unwrap();
    let hub = HubOptions::from_env(false);
    let sd = rotoscope::diffusion::image_pipeline::StableDiffusion::load(
        &rotoscope::loaders::model_stack::ModelStackSpec::new(fixture_pipeline().to_string_lossy()),
        &hub,
        &Device::Cpu,
    )
    .unwrap();
    let load_net = |dir: &std::path::Path| {
        rotoscope::loaders::model_stack::load_controlnet(
            &dir.to_string_lossy(),
            None,
            None,
            &hub,
            &Device::Cpu,
        )
        .unwrap()
    };
    let (a, b) = (load_net(&net_a), load_net(&net_b));
    let fit = |img: &image::RgbImage| {
        let img = image::imageops::resize(img, SIZE, SIZE, image::imageops::FilterType::Triangle);
        rgb_to_tensor(&img, &Device::Cpu).unwrap()
    };
    let control_inputs = vec![
        ControlInput {
            model: &a,
            image: fit(&pose),
            scale: 0.8,
            start: 0.0,
            end: 0.7,
            guess_mode: false,
        },
        ControlInput {
            model: &b,
            image: fit(&edges),
            scale: 0.5,
            start: 0.2,
            end: 1.0,
            guess_mode: false,
        },
    ];
    let source_image = image::RgbImage::from_raw(source.width, source.height, source.data).unwrap();
    let settings = GenerationSettings {
        prompt: preset.prompt.clone(),
        negative_prompt: preset.negative_prompt.clone(),
        width: SIZE as usize,
        height: SIZE as usize,
        steps: preset.sampler.steps as usize,
        guidance_scale: preset.sampler.cfg_scale as f64,
        scheduler: rotoscope::preset::SchedulerKind::EulerAncestral,
        options: SamplerOptions::default(),
        seed: preset.sampler.seed,
        deep_cache: None,
    };
    let generated = sd
        .generate(
            &settings,
            &InitImage::Img2Img {
                image: fit(&source_image),
                strength: preset.sampler.strength as f64,
            },
            &control_inputs,
            None,
            &mut |_| {},
        )
        .unwrap();
    let expected = tensor_to_rgb(&generated.image).unwrap();
    assert_eq!(
        rendered.data,
        expected.into_raw(),
        "renderer vs image pipeline"
    );
}

#[test]
fn attending_to_an_identical_anchor_changes_nothing_and_another_does() {
    let whole = "temporal:\n  cross_frame_attention: {enabled: true, previous: false, max_reference_tokens: 100000}\n";
    let frame = sample_frame(0);
    let as_later = |f: &Frame, index: u64| {
        let mut f = f.clone();
        f.index = index;
        PreparedFrame::new(f)
    };

    let mut plain = renderer("");
    let expected = render_batch(&mut plain, vec![as_later(&frame, 5)]).remove(0);

    let mut r = renderer(whole);
    let anchor = r
        .prepare_anchor(&PreparedFrame::new(frame.clone()), None)
        .unwrap()
        .expect("rendered now, not cached");
    // The anchor pass renders with plain self-attention.
    assert_eq!(anchor.data, expected.data);
    // The same picture again, attending to itself as the anchor.
    let again = render_batch(&mut r, vec![as_later(&frame, 5)]).remove(0);
    let (count, max) = differing_bytes(&again, &expected);
    assert!(
        max <= 1 && count * 100 <= again.data.len(),
        "{count} bytes differ, by up to {max}"
    );

    // Another picture as the anchor changes what the frame attends to.
    let mut other = renderer(whole);
    other
        .prepare_anchor(&PreparedFrame::new(sample_frame(60)), None)
        .unwrap();
    let pulled = render_batch(&mut other, vec![as_later(&frame, 5)]).remove(0);
    assert!(differing_bytes(&pulled, &expected).0 > 0);
}

#[test]
fn attention_cache_size_follows_the_layers() {
    // The tiny UNet at 64²: 8×8 latents. Self-attention layers: down_blocks.0 (64 tokens, 8
    // channels), mid_block (4×4 = 16 tokens, 16 channels), up_blocks.1 with two attentions
    // (64 tokens, 8 channels). Guidance doubles the batch; keys and values; f16; strength 0.5
    // of 6 steps runs 3 steps.
    let per_step = |level0_tokens: usize| (3 * level0_tokens * 8 + 16 * 16) * 2 * 2 * 2;
    let whole = renderer("temporal:\n  cross_frame_attention: {enabled: true}\n");
    let mut whole = whole;
    whole
        .prepare_anchor(&PreparedFrame::new(sample_frame(0)), None)
        .unwrap();
    assert_eq!(whole.attention_cache_bytes().0, 3 * per_step(64));

    let mut pooled =
        renderer("temporal:\n  cross_frame_attention: {enabled: true, max_reference_tokens: 16}\n");
    pooled
        .prepare_anchor(&PreparedFrame::new(sample_frame(0)), None)
        .unwrap();
    assert_eq!(pooled.attention_cache_bytes().0, 3 * per_step(16));
    // Rendering frames keeps one previous frame: the same size again, whatever the count.
    render_batch(
        &mut pooled,
        (1..5)
            .map(|i| PreparedFrame::new(sample_frame(i)))
            .collect(),
    );
    assert_eq!(
        pooled.attention_cache_bytes(),
        (3 * per_step(16), 3 * per_step(16))
    );
}
