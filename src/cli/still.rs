//! `rotoscope still`: pose transfer for character sheets.
//!
//! Every pose is the control image of the preset's openpose ControlNet(s); each pose is
//! rendered txt2img with the preset's prompt, sampler and seed (the same seed for every pose,
//! so the character stays alike), exactly as diffusers' `StableDiffusionControlNetPipeline`
//! would render it. One pose writes `OUT.png`; several write `OUT-0.png`, `OUT-1.png`, ... or,
//! with `--grid`, one grid image `OUT.png` (poses left to right, top to bottom).
//!
//! A pose is a pose map image, or OpenPose JSON (`*_keypoints.json`, one pose per frame in
//! the file): its keypoints are drawn into the map as ControlNet's annotator draws them (the
//! parts in the preset's `preprocess.pose`), and kept for the face and hand detailing of the
//! preset's `detail:` section, which runs on poses given as JSON (a pose map is a drawing:
//! its keypoints cannot be read back).
//!
//! Model paths in the preset are taken as given, or relative to the preset's folder when
//! they do not exist relative to the current directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use candle_core::Device;
use clap::Args;
use image::{imageops, RgbImage};
use indicatif::{ProgressBar, ProgressStyle};

use super::{load_preset, CliError};
use crate::detail::detailer_for_preset;
use crate::models::controlnet::ControlNetModel;
use crate::models::loading::{Component, DiffusersPipelineFiles};
use crate::preprocess::openpose::json::{parse_json, PoseJsonError};
use crate::preprocess::openpose::{draw_pose_map, DrawParts, PoseFrame};
use crate::preset::{fit_to_input, ControlKind, Preset, PresetOverrides};
use crate::render::image_pipeline::{
    load_controlnet, load_vae, rgb_to_tensor, tensor_to_rgb, GenerationSettings, InitImage,
    StableDiffusion,
};
use crate::render::sampler::ControlInput;
use crate::schedulers::{self, SchedulerKind};

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
}

pub fn run(args: StillArgs) -> anyhow::Result<()> {
    let preset = load_preset(&args.preset, &PresetOverrides { seed: args.seed })?;
    check_output_path(&args.output)?;
    check_controlnets(&preset, &args.preset)?;
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
    let models = load_models(&preset, preset_dir.as_deref(), &Device::Cpu)?;
    let rendered = render_with_models(&models, &preset, &poses, (width, height), &mut |k| {
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

/// A pose map and the name errors give it (its file).
pub struct Pose {
    pub label: String,
    pub image: RgbImage,
}

/// One pose as given on the command line: a pose map image, or one frame of OpenPose JSON.
#[derive(Debug, Clone)]
pub enum PoseInput {
    Image { label: String, image: RgbImage },
    Keypoints { label: String, keypoints: PoseFrame },
}

impl PoseInput {
    pub fn label(&self) -> &str {
        match self {
            PoseInput::Image { label, .. } | PoseInput::Keypoints { label, .. } => label,
        }
    }

    /// The image's size, or the keypoints' canvas size.
    pub fn natural_size(&self) -> (u32, u32) {
        match self {
            PoseInput::Image { image, .. } => image.dimensions(),
            PoseInput::Keypoints { keypoints, .. } => (keypoints.width, keypoints.height),
        }
    }

    pub fn keypoints(&self) -> Option<&PoseFrame> {
        match self {
            PoseInput::Keypoints { keypoints, .. } => Some(keypoints),
            PoseInput::Image { .. } => None,
        }
    }

    /// The pose map at `width × height`: an image resampled, keypoints drawn at that size
    /// (as ControlNet's annotator draws them on a canvas of that size).
    pub fn map(&self, width: u32, height: u32, parts: DrawParts) -> Pose {
        let image = match self {
            PoseInput::Image { image, .. } => fit_pose(image, width, height),
            PoseInput::Keypoints { keypoints, .. } => {
                draw_pose_map(keypoints, width, height, parts)
            }
        };
        Pose {
            label: self.label().to_string(),
            image,
        }
    }
}

/// The parts of the keypoints the preset's pose preprocessing would draw.
pub fn draw_parts(preset: &Preset) -> DrawParts {
    let pose = &preset.preprocess.pose;
    DrawParts {
        body: pose.body,
        hands: pose.hands,
        face: pose.face,
    }
}

/// Renders every pose map with the preset (loads its models first): `(1, 3, H, W)` images in
/// [0, 1] at `size` (width, height). `on_step(pose index)` is called after every denoising
/// step. Relative model paths may be relative to `preset_dir` (see the module docs).
pub fn render_poses(
    preset: &Preset,
    preset_dir: Option<&Path>,
    poses: &[Pose],
    size: (u32, u32),
    on_step: &mut dyn FnMut(usize),
) -> anyhow::Result<Vec<candle_core::Tensor>> {
    let models = load_models(preset, preset_dir, &Device::Cpu)?;
    render_with_models(&models, preset, poses, size, on_step)
}

fn render_with_models(
    models: &StillModels,
    preset: &Preset,
    poses: &[Pose],
    size: (u32, u32),
    on_step: &mut dyn FnMut(usize),
) -> anyhow::Result<Vec<candle_core::Tensor>> {
    let (width, height) = size;
    let device = models.sd.device().clone();
    let settings = GenerationSettings {
        prompt: preset.prompt.clone(),
        negative_prompt: preset.negative_prompt.clone(),
        width: width as usize,
        height: height as usize,
        steps: preset.sampler.steps as usize,
        guidance_scale: preset.sampler.cfg_scale as f64,
        scheduler: scheduler_kind(preset)?,
        seed: preset.sampler.seed,
    };
    let mut images = Vec::with_capacity(poses.len());
    for (k, pose) in poses.iter().enumerate() {
        let context = || format!("rendering pose {}", pose.label);
        let control_image =
            rgb_to_tensor(&fit_pose(&pose.image, width, height), &device).with_context(context)?;
        let controls: Vec<ControlInput> = models
            .controlnets
            .iter()
            .zip(&preset.controlnets)
            .map(|(model, spec)| ControlInput {
                model: model.as_ref(),
                image: control_image.clone(),
                scale: spec.scale as f64,
                start: spec.start as f64,
                end: spec.end as f64,
                guess_mode: spec.guess_mode,
            })
            .collect();
        let generated = models
            .sd
            .generate(&settings, &InitImage::None, &controls, None, &mut |_| {
                on_step(k)
            })
            .with_context(context)?;
        images.push(generated.image);
    }
    Ok(images)
}

/// Details the faces and hands of every image whose pose came with keypoints
/// (`keypoints[k]` for `images[k]`), with the preset's `detail:` settings. Each image is
/// detailed on its own, its regions' seeds derived from the preset's seed as for the first
/// frame of a clip, so a character's face gets the same seed in every pose.
fn detail_images(
    models: &StillModels,
    preset: &Preset,
    poses: &[Pose],
    keypoints: &[Option<&PoseFrame>],
    images: &mut [RgbImage],
) -> anyhow::Result<()> {
    // `check_controlnets` made sure every ControlNet of the preset is an openpose one.
    let openpose = models.controlnets.first().cloned();
    let Some(mut detailer) = detailer_for_preset(preset, models.sd.clone(), openpose, 30.0)? else {
        return Ok(());
    };
    for ((pose, keypoints), image) in poses.iter().zip(keypoints).zip(images.iter_mut()) {
        if let Some(keypoints) = keypoints {
            detailer
                .detail_image(image, keypoints)
                .with_context(|| format!("detailing pose {}", pose.label))?;
        }
    }
    Ok(())
}

/// Models of one preset, shared with the detailer.
struct StillModels {
    sd: Arc<StableDiffusion>,
    /// One per preset ControlNet, in preset order.
    controlnets: Vec<Arc<ControlNetModel>>,
}

fn load_models(
    preset: &Preset,
    preset_dir: Option<&Path>,
    device: &Device,
) -> anyhow::Result<StillModels> {
    let base = model_source(&preset.model.base, preset_dir);
    let files = DiffusersPipelineFiles::resolve(&base, &Component::SD_PIPELINE, true)
        .with_context(|| format!("model.base {}", preset.model.base))?;
    // The scheduler config sits next to model_index.json; without one, SD1.5's is used.
    let scheduler_config = match files.model_index.as_deref().and_then(Path::parent) {
        Some(dir) => schedulers::load_config(dir)?,
        None => schedulers::SchedulerConfig::sd15(),
    };
    let mut sd = StableDiffusion::load(&files, scheduler_config, device)
        .with_context(|| format!("loading model.base {}", preset.model.base))?;
    if let Some(vae) = &preset.model.vae {
        let vae_files = DiffusersPipelineFiles::resolve(
            &model_source(vae, preset_dir),
            &[Component::Vae],
            true,
        )
        .with_context(|| format!("model.vae {vae}"))?;
        let vae_model = vae_files
            .vae
            .as_ref()
            .with_context(|| format!("model.vae {vae}: no VAE files"))?;
        sd.vae = load_vae(vae_model, device).with_context(|| format!("loading model.vae {vae}"))?;
    }
    let mut controlnets = Vec::with_capacity(preset.controlnets.len());
    for (i, spec) in preset.controlnets.iter().enumerate() {
        let what = || format!("controlnets[{i}].model {}", spec.model);
        let files = DiffusersPipelineFiles::resolve(
            &model_source(&spec.model, preset_dir),
            &[Component::ControlNet],
            true,
        )
        .with_context(what)?;
        let model_files = files
            .controlnet
            .as_ref()
            .with_context(|| format!("{}: no ControlNet files", what()))?;
        controlnets.push(Arc::new(
            load_controlnet(model_files, device).with_context(what)?,
        ));
    }
    Ok(StillModels {
        sd: Arc::new(sd),
        controlnets,
    })
}

/// A preset model reference: hub ids and existing paths as given; a relative path that only
/// exists next to the preset file is taken from there.
pub(crate) fn model_source(spec: &str, preset_dir: Option<&Path>) -> String {
    let path = Path::new(spec);
    if path.is_relative() && !path.exists() {
        if let Some(candidate) = preset_dir.map(|dir| dir.join(path)) {
            if candidate.exists() {
                return candidate.display().to_string();
            }
        }
    }
    spec.to_string()
}

fn scheduler_kind(preset: &Preset) -> anyhow::Result<SchedulerKind> {
    let name = preset.sampler.scheduler.as_str();
    SchedulerKind::from_name(name)
        .with_context(|| format!("sampler.scheduler {name} has no implementation"))
}

/// `still` has pose images only: the preset needs ControlNets, and every one must take them.
fn check_controlnets(preset: &Preset, preset_path: &Path) -> Result<(), CliError> {
    if preset.controlnets.is_empty() {
        return Err(CliError::BadFlag {
            flag: "-p",
            value: preset_path.display().to_string(),
            reason: "the preset has no ControlNet, so the poses would be ignored; \
                     `still` needs an openpose ControlNet"
                .into(),
        });
    }
    for (i, spec) in preset.controlnets.iter().enumerate() {
        if spec.kind != ControlKind::Openpose {
            return Err(CliError::BadFlag {
                flag: "-p",
                value: preset_path.display().to_string(),
                reason: format!(
                    "controlnets[{i}] is a {} ControlNet, but `still` only has pose images \
                     (openpose); use a preset whose ControlNets are all openpose",
                    spec.kind
                ),
            });
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

/// Reads one `--pose` file: a pose map image, or OpenPose JSON (every frame in the file is a
/// pose; `default_size` is the canvas size of files that do not give one).
fn read_pose(path: &Path, default_size: Option<(u32, u32)>) -> anyhow::Result<Vec<PoseInput>> {
    let label = path.display().to_string();
    let bad = |reason: String| CliError::BadFlag {
        flag: "--pose",
        value: label.clone(),
        reason,
    };
    if !path.is_file() {
        return Err(bad("no such file".into()).into());
    }
    let is_json = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    if !is_json {
        let image = image::open(path).map_err(|e| bad(format!("not a readable image: {e}")))?;
        return Ok(vec![PoseInput::Image {
            label,
            image: image.to_rgb8(),
        }]);
    }
    let text = std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read: {e}")))?;
    let frames = parse_json(&text, default_size, &label).map_err(|e| match e {
        PoseJsonError::NoCanvasSize { .. } => {
            bad("the file gives no canvas_width/canvas_height; set resolution in the preset".into())
        }
        // The error names the file itself; the flag's message already does.
        other => {
            let message = other.to_string();
            let prefix = format!("{label}: ");
            bad(message
                .strip_prefix(&prefix)
                .map(str::to_string)
                .unwrap_or(message))
        }
    })?;
    if frames.is_empty() {
        return Err(bad("the file holds no poses (an empty list)".into()).into());
    }
    if frames.iter().any(|f| f.width == 0 || f.height == 0) {
        return Err(bad("canvas_width and canvas_height must be positive".into()).into());
    }
    let several = frames.len() > 1;
    Ok(frames
        .into_iter()
        .enumerate()
        .map(|(k, keypoints)| PoseInput::Keypoints {
            label: if several {
                format!("{label}[{k}]")
            } else {
                label.clone()
            },
            keypoints,
        })
        .collect())
}

/// The pose map at the render size (Lanczos resampling when the sizes differ).
fn fit_pose(pose: &RgbImage, width: u32, height: u32) -> RgbImage {
    if pose.dimensions() == (width, height) {
        pose.clone()
    } else {
        imageops::resize(pose, width, height, imageops::FilterType::Lanczos3)
    }
}

/// Columns and rows of a grid for `n` images: as square as possible, wider than tall.
pub fn grid_shape(n: usize) -> (usize, usize) {
    if n == 0 {
        return (0, 0);
    }
    let cols = (1..=n).find(|c| c * c >= n).unwrap_or(n);
    (cols, n.div_ceil(cols))
}

/// Images (all the same size) left to right, top to bottom; empty cells black.
pub fn grid(images: &[RgbImage]) -> RgbImage {
    let (cols, rows) = grid_shape(images.len());
    let Some(first) = images.first() else {
        return RgbImage::new(0, 0);
    };
    if images.len() == 1 {
        return first.clone();
    }
    let (w, h) = first.dimensions();
    let mut out = RgbImage::new(w * cols as u32, h * rows as u32);
    for (k, image) in images.iter().enumerate() {
        let (x, y) = ((k % cols) as u32 * w, (k / cols) as u32 * h);
        imageops::replace(&mut out, image, x as i64, y as i64);
    }
    out
}

/// `OUT.png` → `OUT-k.png`.
pub fn numbered_output(output: &Path, k: usize) -> PathBuf {
    let stem = output
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ext = output
        .extension()
        .map(|e| e.to_string_lossy().into_owned())
        .unwrap_or_else(|| "png".into());
    output.with_file_name(format!("{stem}-{k}.{ext}"))
}

/// Writes a PNG under a temporary name in the same folder, then renames it into place, so an
/// interrupted run never leaves a truncated image behind.
fn write_png_atomically(image: &RgbImage, path: &Path) -> anyhow::Result<()> {
    let unwritable = |reason: String| CliError::OutputUnwritable {
        path: path.to_path_buf(),
        reason,
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = parent_dir(path).join(format!(".{name}.{}.tmp", std::process::id()));
    if let Err(e) = image.save_with_format(&tmp, image::ImageFormat::Png) {
        let _ = std::fs::remove_file(&tmp);
        return Err(unwritable(e.to_string()).into());
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        unwritable(e.to_string())
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_is_near_square() {
        assert_eq!(grid_shape(1), (1, 1));
        assert_eq!(grid_shape(2), (2, 1));
        assert_eq!(grid_shape(3), (2, 2));
        assert_eq!(grid_shape(4), (2, 2));
        assert_eq!(grid_shape(5), (3, 2));
        assert_eq!(grid_shape(10), (4, 3));
    }

    #[test]
    fn grid_places_images_row_major() {
        let a = RgbImage::from_pixel(2, 1, image::Rgb([10, 0, 0]));
        let b = RgbImage::from_pixel(2, 1, image::Rgb([20, 0, 0]));
        let c = RgbImage::from_pixel(2, 1, image::Rgb([30, 0, 0]));
        let g = grid(&[a, b, c]);
        assert_eq!(g.dimensions(), (4, 2));
        assert_eq!(g.get_pixel(0, 0)[0], 10);
        assert_eq!(g.get_pixel(2, 0)[0], 20);
        assert_eq!(g.get_pixel(0, 1)[0], 30);
        assert_eq!(g.get_pixel(3, 1)[0], 0);
    }

    #[test]
    fn numbered_outputs() {
        assert_eq!(
            numbered_output(Path::new("out/sheet.png"), 2),
            PathBuf::from("out/sheet-2.png")
        );
    }

    #[test]
    fn model_paths_fall_back_to_the_preset_folder() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("tiny-model")).unwrap();
        let resolved = model_source("tiny-model", Some(dir.path()));
        assert_eq!(PathBuf::from(resolved), dir.path().join("tiny-model"));
        assert_eq!(model_source("owner/name", Some(dir.path())), "owner/name");
    }
}
