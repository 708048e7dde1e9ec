//! `rotoscope still`: pose transfer for character sheets (the work is in
//! [`crate::app::still`]). One pose writes `OUT.png`; several write `OUT-0.png`, `OUT-1.png`,
//! ... or, with `--grid`, one grid image `OUT.png` (poses left to right, top to bottom).
//!
//! The models load as `rotoscope render` loads them (the model stack: diffusers folders, hub
//! ids or single-file checkpoints, VAE override, LoRAs, textual inversion, clip skip), and the
//! prompt is encoded A1111-style (`(word:1.2)`, `[word]`, prompts past 77 tokens). Model paths
//! are taken as given, or relative to the preset's folder when they do not exist relative to
//! the current directory. Missing files of all models are reported together (exit code 2).
//! This file keeps the arguments, the progress bar, the notes and the writing.

use std::path::{Path, PathBuf};

use clap::Args;
use image::RgbImage;
use indicatif::{ProgressBar, ProgressStyle};

use super::{open_device, CliError};
use crate::app::job::ModelsMissing;
use crate::app::resolve::load_preset;
use crate::app::still::{
    detail_images, draw_parts, grid, numbered_output, read_pose, render_with_models, still_preset,
    Pose, PoseInput, StillPreset,
};
use crate::device::DeviceChoice;
use crate::diffusion::image_pipeline::tensor_to_rgb;
use crate::loaders::sd_models::{LoadedModels, SdModelsError};
use crate::loaders::source::HubOptions;
use crate::preprocess::openpose::PoseFrame;
use crate::preset::{fit_to_input, PresetOverrides};
use crate::render::sd_config::SdRenderConfig;
use crate::video::output::write_atomically;
use crate::video::VideoError;

#[derive(Debug, Args)]
pub struct StillArgs {
    /// Pose images (OpenPose maps) or OpenPose JSON files, one output image each
    #[arg(long = "pose", value_name = "FILE", required = true, num_args = 1..)]
    pub poses: Vec<PathBuf>,
    /// Preset file, or the name of a bundled preset
    #[arg(short = 'p', long = "preset", value_name = "PRESET")]
    pub preset: PathBuf,
    /// Output PNG (with several poses: OUT-0.png, OUT-1.png, ... unless --grid)
    #[arg(short = 'o', long = "output", value_name = "OUT.png")]
    pub output: PathBuf,
    /// Seed (overrides the preset's sampler.seed)
    #[arg(long)]
    pub seed: Option<u64>,
    /// Put all poses in one grid image
    #[arg(long)]
    pub grid: bool,
    /// Where the networks run: cpu, cuda or cuda:N
    #[arg(long, value_name = "DEVICE", default_value_t = DeviceChoice::Cpu)]
    pub device: DeviceChoice,
}

pub fn run(args: StillArgs) -> anyhow::Result<()> {
    let preset = load_preset(&args.preset, &PresetOverrides { seed: args.seed })?;
    check_output_path(&args.output)?;
    let device = open_device(args.device)?;
    let StillPreset { preset, skipped } = still_preset(&preset, &args.preset)?;
    if !skipped.is_empty() {
        eprintln!(
            "note: a still has no previous frame and no soft-edge map, so these do not apply \
             and are skipped (their models are not loaded): {}",
            skipped.join(", ")
        );
    }
    let default_size = preset.resolution.map(|r| (r.width, r.height));
    let inputs = args
        .poses
        .iter()
        .map(|p| read_pose(p, default_size))
        .collect::<anyhow::Result<Vec<_>>>()?
        .into_iter()
        .flatten()
        .collect::<Vec<_>>();
    let (width, height) = match preset.resolution {
        Some(r) => (r.width, r.height),
        None => {
            let (w, h) = inputs[0].natural_size();
            fit_to_input(w, h)
        }
    };
    let parts = draw_parts(&preset);
    let poses: Vec<Pose> = inputs.iter().map(|p| p.map(width, height, parts)).collect();
    let keypoints: Vec<Option<&PoseFrame>> = inputs.iter().map(PoseInput::keypoints).collect();
    if preset.detail.any_enabled() {
        for pose in inputs.iter().filter(|p| p.keypoints().is_none()) {
            eprintln!(
                "note: {} is a pose image, not OpenPose JSON: it has no keypoints, so its faces \
                 and hands are not detailed",
                pose.label()
            );
        }
    }
    let preset_dir = args
        .preset
        .is_file()
        .then(|| args.preset.parent().map(Path::to_path_buf))
        .flatten();

    let bar = ProgressBar::new((poses.len() * preset.sampler.steps as usize) as u64).with_style(
        ProgressStyle::with_template("still {bar:30} {pos}/{len} steps {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let count = poses.len();
    let config = SdRenderConfig::from_preset(&preset, (width, height), preset_dir.as_deref());
    let hub = HubOptions::from_env(true);
    let loaded = LoadedModels::load(&config.model_key(), config.text_prompt(), &hub, &device);
    let models = loaded.map_err(|e| match e {
        SdModelsError::Missing(_) => anyhow::Error::new(ModelsMissing {
            missing: e,
            // A still has nothing to preprocess ahead of the models.
            preprocessed: 0,
            preprocess_problem: None,
            cache_dir: PathBuf::new(),
            preset: args.preset.display().to_string(),
        }),
        other => anyhow::Error::new(other)
            .context(format!("loading the models of {}", args.preset.display())),
    })?;
    let rendered = render_with_models(&models, &config, &poses, &mut |k| {
        bar.set_message(format!("pose {}/{count}", k + 1));
        bar.inc(1)
    })?;
    let mut images = rendered
        .iter()
        .map(tensor_to_rgb)
        .collect::<Result<Vec<_>, _>>()?;
    if preset.detail.any_enabled() {
        bar.set_message("detailing faces and hands");
        detail_images(&models, &preset, &poses, &keypoints, &mut images)?;
    }
    bar.finish_and_clear();

    if args.grid || images.len() == 1 {
        write_png_atomically(&grid(&images), &args.output)?;
    } else {
        for (k, image) in images.iter().enumerate() {
            write_png_atomically(image, &numbered_output(&args.output, k))?;
        }
    }
    Ok(())
}

fn check_output_path(output: &Path) -> Result<(), CliError> {
    let is_png = output
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("png"));
    if !is_png {
        return Err(CliError::BadFlag {
            flag: "-o",
            value: output.display().to_string(),
            reason: "the output must be a .png file".into(),
        });
    }
    let dir = parent_dir(output);
    if !dir.is_dir() {
        return Err(CliError::OutputUnwritable {
            path: output.to_path_buf(),
            reason: format!("folder {} does not exist", dir.display()),
        });
    }
    Ok(())
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Writes a PNG under a temporary name in the same folder, then renames it into place, so an
/// interrupted run never leaves a truncated image behind.
fn write_png_atomically(image: &RgbImage, path: &Path) -> anyhow::Result<()> {
    write_atomically(path, true, |temp| {
        image
            .save_with_format(temp, image::ImageFormat::Png)
            .map_err(|e| VideoError::Unwritable {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })
    })?;
    Ok(())
}
