//! The whole-frame cases (`frame-anime`, `frame-fast`): one 512² frame of a bundled preset
//! through the render's own code (preprocessors from the registry, [`SdRenderer`] with the
//! preset's ControlNets, scheduler, steps, guidance, DeepCache and temporal options, the
//! VAE), on SD1.5-sized networks with random weights built in this process, in the
//! preset's `compute:` precision. No SD model files are read: the preset's model ids only
//! decide which network is built (its `model.vae` naming TAESD gives the tiny VAE). LoRAs
//! are merged at load time, so they cost nothing per frame and are left out; detailing is off.
//!
//! A timed frame is a frame in the middle of a clip: the first frame is rendered first
//! (not timed; it is the anchor when cross-frame attention has one), and each timed frame
//! continues from the one before it (flow-warped init, TemporalNet on the previous output,
//! attention to the previous frame), its preprocessing included.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use candle_core::Tensor;

use super::{BenchCase, BenchError, BenchOptions, Result};
use crate::app::resolve::read_options;
use crate::bench::cases::random_sd15_controlnet;
use crate::bench::unet::{random_sd15_unet, random_var_builder};
use crate::cancel::StopFlag;
use crate::diffusion::guidance::uses_cfg;
use crate::diffusion::image_pipeline::StableDiffusion;
use crate::diffusion::sampler::TextConditioning;
use crate::diffusion::schedulers::SchedulerConfig;
use crate::loaders::sd_models::LoadedModels;
use crate::models::autoencoder_tiny::AutoencoderTinyConfig;
use crate::models::clip::{ClipTextConfig, ClipTextEncoder};
use crate::models::tokenizer::ClipTokenizer;
use crate::models::vae::{AnyVaeConfig, Vae, VaeConfig};
use crate::nn::precision::with_weight_precision;
use crate::pipeline::cost::names_taesd;
use crate::pipeline::plan::Batch;
use crate::pipeline::resume::{ChainedRenderer, LeadIn};
use crate::pipeline::stages::{PreparedFrame, Preprocessor};
use crate::preprocess::registry::{build_preprocessors, maps_for, PreprocessorOptions};
use crate::preset::Preset;
use crate::render::sd_config::SdRenderConfig;
use crate::render::sd_renderer::SdRenderer;
use crate::video::{Frame, VideoReader};

/// The bundled preset a frame case renders.
pub fn preset_of(case: BenchCase) -> Option<&'static str> {
    match case {
        BenchCase::FrameAnime => Some("anime"),
        BenchCase::FrameFast => Some("anime-fast"),
        _ => None,
    }
}

/// The VAE the bench builds for a preset's `model.vae` (no files are read, so it goes by the
/// name: [`names_taesd`]): TAESD's config for the tiny VAE, else SD1.5's KL VAE (a VAE
/// override of another kind has the same shapes).
pub fn vae_config_for(vae: Option<&str>) -> AnyVaeConfig {
    if names_taesd(vae) {
        AnyVaeConfig::Tiny(AutoencoderTinyConfig::taesd())
    } else {
        AnyVaeConfig::Kl(VaeConfig::sd15())
    }
}

fn model_error<E: std::error::Error + Send + Sync + 'static>(
    case: BenchCase,
) -> impl FnOnce(E) -> BenchError {
    move |e| BenchError::Model {
        case: case.name(),
        source: Box::new(e),
    }
}

/// The render's models with random weights: the UNet, the VAE and one ControlNet per
/// distinct model of `config` in its precision (as the loaders build them), the text
/// encoder in f32; the text conditioning is random (a job encodes its prompt once, not per
/// frame).
fn random_models(case: BenchCase, config: &SdRenderConfig) -> Result<LoadedModels> {
    let key = config.model_key();
    let mut distinct: Vec<&str> = Vec::new();
    let net_of: Vec<usize> = key
        .controlnets
        .iter()
        .map(|m| {
            distinct.iter().position(|d| d == m).unwrap_or_else(|| {
                distinct.push(m);
                distinct.len() - 1
            })
        })
        .collect();
    let vae_config = vae_config_for(config.models.vae.as_deref());
    let (unet, vae, nets) = with_weight_precision(config.models.precision, || {
        let unet = random_sd15_unet().map_err(model_error(case))?;
        let vae = Vae::load(random_var_builder(), &vae_config).map_err(model_error(case))?;
        let nets = distinct
            .iter()
            .map(|_| random_sd15_controlnet().map(Arc::new))
            .collect::<crate::models::unet::Result<Vec<_>>>()
            .map_err(model_error(case))?;
        Ok::<_, BenchError>((unet, vae, nets))
    })?;
    let text_encoder = ClipTextEncoder::load(random_var_builder(), &ClipTextConfig::sd15())
        .map_err(model_error(case))?;
    let tokenizer = ClipTokenizer::special_tokens_only().map_err(model_error(case))?;
    let device = crate::device::host();
    let tokens = |_| Tensor::randn(0f32, 1.0, (1, 77, 768), &device);
    let text = TextConditioning {
        cond: tokens(()).map_err(model_error(case))?,
        uncond: uses_cfg(config.guidance_scale)
            .then(|| tokens(()))
            .transpose()
            .map_err(model_error(case))?,
    };
    let sd = StableDiffusion::from_parts(
        unet,
        vae,
        text_encoder,
        tokenizer,
        SchedulerConfig::sd15(),
        &device,
    );
    Ok(LoadedModels {
        sd: Arc::new(sd),
        nets,
        net_of,
        text,
    })
}

/// The first `count` frames of `clip`, read as a render with `preset` reads them.
fn read_frames(
    case: BenchCase,
    clip: &Path,
    preset: &Preset,
    count: usize,
) -> Result<(Vec<Frame>, f64)> {
    let reader = VideoReader::open_with(clip, read_options(preset)).map_err(model_error(case))?;
    let fps = reader.info().fps.as_f64();
    let frames = reader
        .take(count)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(model_error(case))?;
    if frames.len() < count {
        return Err(BenchError::NoFrames {
            case: case.name(),
            path: clip.to_path_buf(),
        });
    }
    Ok((frames, fps))
}

/// Runs `preprocessors` on `frame`, as the pipeline's preprocess stage does.
fn prepare(
    case: BenchCase,
    preprocessors: &mut [Box<dyn Preprocessor>],
    frame: Frame,
) -> Result<PreparedFrame> {
    let mut prepared = PreparedFrame::new(frame);
    for pre in preprocessors.iter_mut() {
        pre.process(&mut prepared)
            .map_err(|source| BenchError::Model {
                case: case.name(),
                source,
            })?;
    }
    Ok(prepared)
}

/// One batch over `frames` (the renderer ignores everything but the frames).
fn batch_of(frames: &[PreparedFrame]) -> Batch {
    Batch {
        index: 0,
        start: 0,
        end: frames.len(),
        overlap_with_previous: 0,
        overlap_with_next: 0,
    }
}

/// Seconds of each of `runs` frames of the case's preset (see the module docs), and what ran.
pub fn run_frames(
    case: BenchCase,
    options: &BenchOptions,
    runs: usize,
) -> Result<(Vec<f64>, String)> {
    let name = preset_of(case).ok_or(BenchError::UnknownCase(case.name().into()))?;
    let preset = Preset::resolve(Path::new(name)).map_err(model_error(case))?;
    let (frames, fps) = read_frames(case, &options.clip, &preset, 1 + runs)?;
    let size = preset.render_size(frames[0].width, frames[0].height);
    let mut config = SdRenderConfig::from_preset(&preset, size, None);
    // Each timed frame is rendered as its own batch continuing from the one before (see
    // `timed_frames`), as frames inside a batch do.
    config.temporal.chain_batches = true;
    let maps = maps_for(config.required_maps(), &preset);
    let pre_options = PreprocessorOptions::for_preset(&preset, options.models_dir.clone(), fps);
    let mut preprocessors = build_preprocessors(&maps, &pre_options).map_err(model_error(case))?;
    let models = Arc::new(random_models(case, &config)?);
    let precision = config.models.precision;
    let vae = if names_taesd(config.models.vae.as_deref()) {
        "TAESD"
    } else {
        "KL VAE"
    };
    let mut renderer = SdRenderer::new(config, models);
    let seconds = timed_frames(case, &mut renderer, &mut preprocessors, frames)?;
    let what = format!(
        "rotoscope SdRenderer, preset {name}, {precision:?} weights, {vae}, {} ControlNet(s), detail off",
        renderer.config().controlnets.len()
    );
    Ok((seconds, what))
}

/// Renders `frames[0]` untimed, then times each later frame (preprocessing + render).
fn timed_frames(
    case: BenchCase,
    renderer: &mut SdRenderer,
    preprocessors: &mut [Box<dyn Preprocessor>],
    mut frames: Vec<Frame>,
) -> Result<Vec<f64>> {
    let render_err = |e: crate::pipeline::stages::StageError| BenchError::Model {
        case: case.name(),
        source: e,
    };
    let stop = StopFlag::new();
    let later = frames.split_off(1);
    let first = prepare(case, preprocessors, frames.remove(0))?;
    if renderer.config().needs_anchor() {
        // The anchor (not timed), then one batch from it: its first frame is the anchor's
        // output, so the timed frames attend to the anchor and to their previous frame as in
        // a render. The batch's time is spread evenly over its frames.
        renderer
            .prepare_anchor(&first, None)
            .map_err(|e| render_err(Box::new(e)))?;
        let start = Instant::now();
        let mut batch = vec![first];
        for frame in later {
            batch.push(prepare(case, preprocessors, frame)?);
        }
        renderer
            .render_chained(&batch_of(&batch), &batch, None, &stop)
            .map_err(render_err)?;
        let n = batch.len() - 1;
        return Ok(vec![start.elapsed().as_secs_f64() / n as f64; n]);
    }
    let mut lead_in = {
        let output = renderer
            .render_chained(
                &batch_of(&[first.clone()]),
                std::slice::from_ref(&first),
                None,
                &stop,
            )
            .map_err(render_err)?;
        next_lead(first, output)
    };
    let mut seconds = Vec::with_capacity(later.len());
    for frame in later {
        let start = Instant::now();
        let prepared = prepare(case, preprocessors, frame)?;
        let frames = std::slice::from_ref(&prepared);
        let output = renderer
            .render_chained(&batch_of(frames), frames, lead_in.as_ref(), &stop)
            .map_err(render_err)?;
        seconds.push(start.elapsed().as_secs_f64());
        lead_in = next_lead(prepared, output);
    }
    Ok(seconds)
}

/// The lead-in the next frame continues from.
fn next_lead(prepared: PreparedFrame, mut output: Vec<Frame>) -> Option<LeadIn> {
    output.pop().map(|output| LeadIn {
        source: prepared.source,
        output,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taesd_names_give_the_tiny_vae() {
        assert!(matches!(
            vae_config_for(Some("madebyollin/taesd")),
            AnyVaeConfig::Tiny(_)
        ));
        assert!(matches!(vae_config_for(None), AnyVaeConfig::Kl(_)));
    }

    #[test]
    fn frame_cases_render_the_bundled_presets() {
        assert_eq!(preset_of(BenchCase::FrameAnime), Some("anime"));
        assert_eq!(preset_of(BenchCase::FrameFast), Some("anime-fast"));
        assert_eq!(preset_of(BenchCase::Unet64), None);
        for case in [BenchCase::FrameAnime, BenchCase::FrameFast] {
            let name = preset_of(case).unwrap();
            assert!(Preset::resolve(Path::new(name)).is_ok(), "{name}");
        }
    }
}
