//! The preset resolved once into the typed configs a job needs (as ripgrep turns low-level
//! args into high-level args): the render config of the SD renderer, the model stack, the
//! detailer config, how the input is read. Every consumer reads these values; the preset's
//! `sampler` section (the seed with it) is read in one place, [`Sampling::of`].
//!
//! Command-line overrides (`--seed`) are applied to the preset before it is resolved
//! (`Preset::with_overrides`, which also keeps the fingerprint honest); the device is
//! chosen on the command line and opened once for the run (the model cache holds it).

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::detail::{check_preset, DetailError, DetailerConfig, InpaintSampler};
use crate::diffusion::deep_cache::DeepCacheSettings;
use crate::diffusion::schedulers::SamplerOptions;
use crate::flow::FlowParams;
use crate::loaders::lora::LoraSpec;
use crate::loaders::model_stack::ModelStackSpec;
use crate::preset::models_ext::locate;
use crate::preset::SeedPerFrame;
use crate::nn::precision::WeightPrecision;
use crate::preset::{Compute, ControlKind, Preset, PresetOverrides, SchedulerKind};
use crate::render::sd_config::{ControlNetPlan, ControlSource, SdRenderConfig};
use crate::video::{ReadOptions, VideoInfo};

/// Loads `-p PRESET` (a file, or a bundled preset's name) and applies command-line
/// overrides; errors name the preset as it was given.
pub fn load_preset(name_or_path: &Path, overrides: &PresetOverrides) -> anyhow::Result<Preset> {
    let preset = Preset::resolve(name_or_path)?;
    let origin = name_or_path.display().to_string();
    preset
        .with_overrides(overrides, &origin)
        .context("applying command-line overrides")
}

/// The preset's sampler as the renderers and the detailer take it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    pub scheduler: SchedulerKind,
    pub steps: usize,
    pub guidance_scale: f64,
    pub seed: u64,
    pub seed_per_frame: SeedPerFrame,
    /// img2img strength from the source frame (1 = txt2img).
    pub strength: f64,
    /// The preset's `deep_cache:`.
    pub deep_cache: Option<DeepCacheSettings>,
    /// `eta` (the scheduler's default filled in) and the timestep-spacing override.
    pub options: SamplerOptions,
}

impl Sampling {
    /// The one place the preset's sampler (and its seed) is read.
    pub fn of(preset: &Preset) -> Self {
        let s = &preset.sampler;
        Self {
            scheduler: s.scheduler,
            steps: s.steps as usize,
            guidance_scale: s.cfg_scale as f64,
            seed: s.seed,
            seed_per_frame: s.seed_per_frame,
            strength: s.strength as f64,
            deep_cache: DeepCacheSettings::from_preset(preset.deep_cache.as_ref()),
            options: SamplerOptions {
                eta: s.effective_eta(),
                timestep_spacing: s.timestep_spacing,
            },
        }
    }

    /// The detail pass's sampler: the same scheduler, options and DeepCache as the frames.
    pub fn inpaint_sampler(&self) -> InpaintSampler {
        InpaintSampler {
            scheduler: self.scheduler,
            options: self.options,
            deep_cache: self.deep_cache,
        }
    }
}

/// A render job's preset for its input: what the job's steps read.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSettings {
    pub sampling: Sampling,
    /// The size frames are rendered at.
    pub size: (u32, u32),
    pub sd: SdRenderConfig,
    /// The input frame of the cross-frame attention anchor.
    pub anchor_index: u64,
}

impl JobSettings {
    /// `preset` (overrides applied) for an input described by `info`; relative model paths
    /// that only exist next to the preset resolve there (`preset_dir`).
    pub fn resolve(preset: &Preset, preset_dir: Option<&Path>, info: &VideoInfo) -> Self {
        let sampling = Sampling::of(preset);
        let size = preset.render_size(info.width, info.height);
        Self {
            sampling,
            size,
            sd: sd_config(preset, sampling, size, preset_dir),
            anchor_index: preset.temporal.anchor.resolve(info.start_frame),
        }
    }
}

/// How a render with `preset` reads the input: on the preset's output rate, if any.
pub fn read_options(preset: &Preset) -> ReadOptions {
    ReadOptions {
        fps: preset.output.fps,
        ..ReadOptions::default()
    }
}

/// What to load for the preset's base model, VAE, LoRAs and embeddings.
pub fn model_stack_spec(preset: &Preset, preset_dir: Option<&Path>) -> ModelStackSpec {
    let m = &preset.model;
    ModelStackSpec {
        base: locate(&m.base, preset_dir),
        vae: m.vae.as_deref().map(|v| locate(v, preset_dir)),
        config: m
            .config
            .as_deref()
            .map(|c| PathBuf::from(locate(c, preset_dir))),
        clip_skip: m.clip_skip as usize,
        loras: preset
            .loras
            .iter()
            .map(|l| LoraSpec {
                path: PathBuf::from(locate(&l.path, preset_dir)),
                unet_strength: l.weight as f64,
                text_encoder_strength: l.text_encoder_weight() as f64,
            })
            .collect(),
        embeddings: preset
            .embeddings
            .iter()
            .map(|e| PathBuf::from(locate(e, preset_dir)))
            .collect(),
        precision: match preset.compute {
            Compute::F32 => WeightPrecision::F32,
            Compute::Bf16 => WeightPrecision::Bf16,
        },
    }
}

impl SdRenderConfig {
    /// The render settings of `preset` at `width`×`height`. Model paths are used as given
    /// (hub ids, existing paths) or, when they only exist there, relative to `preset_dir`
    /// (the preset file's folder; see [`locate`]).
    ///
    /// ControlNets: the preset's `controlnets` in order (an entry of type `temporalnet` gets
    /// the previous output, warped as `temporal.temporalnet.warp` says), then
    /// `temporal.temporalnet` when enabled.
    pub fn from_preset(preset: &Preset, size: (u32, u32), preset_dir: Option<&Path>) -> Self {
        sd_config(preset, Sampling::of(preset), size, preset_dir)
    }
}

fn sd_config(
    preset: &Preset,
    sampling: Sampling,
    (width, height): (u32, u32),
    preset_dir: Option<&Path>,
) -> SdRenderConfig {
    let locate = |spec: &str| locate(spec, preset_dir);
    let temporal = preset.temporal.clone();
    let warp = temporal.temporalnet.warp;
    let mut controlnets: Vec<ControlNetPlan> = preset
        .controlnets
        .iter()
        .map(|c| ControlNetPlan {
            source: match c.kind {
                ControlKind::Temporalnet => ControlSource::PreviousOutput { warp },
                kind => ControlSource::Map(kind),
            },
            model: locate(&c.model),
            scale: c.scale as f64,
            start: c.start as f64,
            end: c.end as f64,
            guess_mode: c.guess_mode,
        })
        .collect();
    let t = &temporal.temporalnet;
    if t.enabled {
        controlnets.push(ControlNetPlan {
            source: ControlSource::PreviousOutput { warp },
            model: locate(&t.model),
            scale: t.scale as f64,
            start: t.start as f64,
            end: t.end as f64,
            guess_mode: false,
        });
    }
    SdRenderConfig {
        models: model_stack_spec(preset, preset_dir),
        prompt: preset.prompt.clone(),
        negative_prompt: preset.negative_prompt.clone(),
        width,
        height,
        steps: sampling.steps,
        guidance_scale: sampling.guidance_scale,
        scheduler: sampling.scheduler,
        sampler_options: sampling.options,
        seed: sampling.seed,
        seed_per_frame: sampling.seed_per_frame,
        strength: sampling.strength,
        deep_cache: sampling.deep_cache,
        controlnets,
        temporal,
        flow: FlowParams::default(),
    }
}

/// What the detailer is configured with for `preset` (`None`: it details nothing). Checks
/// everything that needs no model (see [`check_preset`]), so a render can fail before it
/// starts and track regions before any model is loaded. `fps` is the clip's frame rate.
pub fn detailer_config(preset: &Preset, fps: f64) -> Result<Option<DetailerConfig>, DetailError> {
    if !preset.detail.any_enabled() {
        return Ok(None);
    }
    check_preset(preset)?;
    Ok(Some(DetailerConfig {
        settings: preset.detail.clone(),
        prompt: preset.prompt.clone(),
        negative_prompt: preset.negative_prompt.clone(),
        base_seed: Sampling::of(preset).seed,
        fps,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preset::rational::Rational;
    use crate::preset::TimestepSpacing;

    fn parse(text: &str) -> Preset {
        Preset::from_yaml(text, "test.yaml").unwrap()
    }

    const FULL: &str = "model:
  base: ckpt/dreamshaper.safetensors
  vae: vae/ft-mse.ckpt
  config: v1-inference.yaml
  clip_skip: 2
prompt: a cat
loras:
  - { path: a.safetensors, weight: 0.8 }
  - path: b.safetensors
    weight: -0.5
    clip_weight: 1.2
  - path: c.safetensors
embeddings: [easynegative.safetensors]
";

    #[test]
    fn the_model_stack_takes_the_models_loras_and_embeddings() {
        let spec = model_stack_spec(&parse(FULL), None);
        assert_eq!(spec.clip_skip, 2);
        assert_eq!(spec.loras[1].unet_strength, -0.5);
        assert!((spec.loras[1].text_encoder_strength - 1.2).abs() < 1e-6);
        assert_eq!(
            spec.embeddings,
            vec![PathBuf::from("easynegative.safetensors")]
        );
        assert_eq!(spec.config, Some(PathBuf::from("v1-inference.yaml")));
        // A LoRA without clip_weight is as strong on the text encoder as on the UNet.
        assert_eq!(spec.loras[0].text_encoder_strength, 0.8f32 as f64);
        assert_eq!(spec.vae.as_deref(), Some("vae/ft-mse.ckpt"));
    }

    #[test]
    fn the_sampler_and_controlnets_become_the_render_config() {
        let preset = parse(
            "model: {base: m}\nprompt: a cat\nnegative_prompt: blurry\n\
             sampler: {scheduler: dpmpp_2m_karras, steps: 12, cfg_scale: 5.5, seed: 42, strength: 0.6}\n\
             controlnets:\n  - {type: openpose, model: pose-net, scale: 0.8}\n  \
             - {type: temporalnet, model: tnet}\n",
        );
        let config = SdRenderConfig::from_preset(&preset, (512, 768), None);
        assert_eq!((config.width, config.height), (512, 768));
        assert_eq!(config.scheduler, SchedulerKind::DpmPp2MKarras);
        assert_eq!((config.steps, config.seed), (12, 42));
        assert_eq!(config.guidance_scale, 5.5);
        assert_eq!(config.strength, 0.6f32 as f64);
        assert_eq!(config.negative_prompt, "blurry");
        assert_eq!(config.models.base, "m");
        assert_eq!(config.controlnets.len(), 2);
        assert_eq!(
            config.controlnets[0].source,
            ControlSource::Map(ControlKind::Openpose)
        );
        assert_eq!(config.controlnets[0].scale, 0.8f32 as f64);
        assert_eq!(
            config.controlnets[1].source,
            ControlSource::PreviousOutput {
                warp: preset.temporal.temporalnet.warp
            }
        );
        assert_eq!(config.required_maps(), vec![ControlKind::Openpose]);
        let key = config.model_key();
        assert_eq!(key.controlnets, vec!["pose-net", "tnet"]);
    }

    #[test]
    fn eta_and_timestep_spacing_reach_the_scheduler() {
        use crate::diffusion::schedulers::{tcd, SchedulerConfig};
        let preset = parse(
            "model: {base: m}\nprompt: a\nsampler: {scheduler: ddim, eta: 0.5, timestep_spacing: trailing, steps: 4}\n",
        );
        let config = SdRenderConfig::from_preset(&preset, (512, 512), None);
        assert_eq!(
            config.sampler_options,
            SamplerOptions {
                eta: Some(0.5),
                timestep_spacing: Some(TimestepSpacing::Trailing),
            }
        );
        // The model's config says leading (SD1.5's, steps_offset 1): the preset wins.
        let scheduler = config
            .scheduler(&SchedulerConfig::sd15(), config.steps, 1.0)
            .unwrap();
        assert_eq!(scheduler.timesteps(), &[999.0, 749.0, 499.0, 249.0]);
        let leading = SdRenderConfig::from_preset(
            &parse("model: {base: m}\nprompt: a\nsampler: {scheduler: ddim, steps: 4}\n"),
            (512, 512),
            None,
        );
        assert_eq!(leading.sampler_options.eta, Some(0.0));
        let scheduler = leading.scheduler(&SchedulerConfig::sd15(), 4, 1.0).unwrap();
        assert_eq!(scheduler.timesteps(), &[751.0, 501.0, 251.0, 1.0]);
        // TCD without eta takes diffusers' default, the same in the preset and the scheduler.
        let tcd_config = SdRenderConfig::from_preset(
            &parse("model: {base: m}\nprompt: a\nsampler: {scheduler: tcd, steps: 4}\n"),
            (512, 512),
            None,
        );
        assert_eq!(tcd_config.sampler_options.eta, Some(tcd::DEFAULT_ETA));
        assert_eq!(tcd_config.sampler_options.timestep_spacing, None);
        let scheduler = tcd_config
            .scheduler(&SchedulerConfig::sd15(), 4, 0.5)
            .unwrap();
        assert_eq!(scheduler.timesteps(), &[499.0, 259.0]);
    }

    #[test]
    fn the_detailer_samples_with_the_resolved_options() {
        let preset = parse(
            "model: {base: m}\nprompt: a\nsampler: {scheduler: ddim, eta: 0.5, timestep_spacing: trailing, steps: 4}\n\
             deep_cache: {interval: 2, branch: 0}\n",
        );
        let sampling = Sampling::of(&preset);
        let sampler = sampling.inpaint_sampler();
        assert_eq!(sampler.scheduler, SchedulerKind::Ddim);
        assert_eq!(
            sampler.options,
            SamplerOptions {
                eta: Some(0.5),
                timestep_spacing: Some(TimestepSpacing::Trailing),
            }
        );
        assert_eq!(sampler.deep_cache, sampling.deep_cache);
        assert!(sampler.deep_cache.is_some());
        // And the frame renderer's config carries the very same options.
        let config = SdRenderConfig::from_preset(&preset, (512, 512), None);
        assert_eq!(config.sampler_options, sampler.options);
        assert_eq!(config.generation_settings().options, sampler.options);
    }

    #[test]
    fn the_seed_reaches_every_consumer_from_one_reading() {
        let preset = parse(
            "model: {base: m}\nprompt: a\nsampler: {seed: 7}\n\
             controlnets:\n  - {type: openpose, model: p}\n\
             detail:\n  face: {enabled: true}\n",
        );
        let info = VideoInfo {
            width: 640,
            height: 360,
            fps: Rational::new(24, 1).unwrap(),
            frame_count: 10,
            duration_secs: 10.0 / 24.0,
            start_frame: 5,
            has_audio: false,
            rotation_degrees: 0,
            codec: "h264".into(),
        };
        let job = JobSettings::resolve(&preset, None, &info);
        assert_eq!(job.sampling.seed, 7);
        assert_eq!(job.sd.seed, 7);
        assert_eq!(job.size, preset.render_size(640, 360));
        assert_eq!(job.anchor_index, 5);
        let detail = detailer_config(&preset, 24.0).unwrap().unwrap();
        assert_eq!(detail.base_seed, 7);
        assert!(
            detailer_config(&parse("model: {base: m}\nprompt: a\n"), 24.0)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn the_input_is_read_at_the_presets_rate() {
        let preset = parse("model: {base: m}\nprompt: a\noutput: {fps: 12}\n");
        assert_eq!(read_options(&preset).fps, Rational::new(12, 1));
        assert_eq!(
            read_options(&parse("model: {base: m}\nprompt: a\n")).fps,
            None
        );
    }
}
