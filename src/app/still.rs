//! Pose transfer for character sheets (`rotoscope still`): every pose is the control image
//! of the preset's openpose ControlNet(s) and is rendered txt2img with the preset's prompt,
//! sampler and seed (the same seed for every pose, so the character stays alike), as
//! diffusers' `StableDiffusionControlNetPipeline` would render it.
//!
//! A pose is a pose map image, or OpenPose JSON (`*_keypoints.json`, one pose per frame in
//! the file): its keypoints are drawn into the map as ControlNet's annotator draws them (the
//! parts in the preset's `preprocess.pose`), and kept for the face and hand detailing of the
//! preset's `detail:` section (a pose map is a drawing: its keypoints cannot be read back).
//!
//! A still has no previous frame and no soft-edge map: of the preset's ControlNets only the
//! openpose ones get a control image; the others (softedge, TemporalNet, `temporal.*`) are
//! left out by [`still_preset`], and their models are not loaded.

use std::path::{Path, PathBuf};

use anyhow::Context;
use image::{imageops, RgbImage};

use crate::app::detail_stage::detailer_for_preset;
use crate::app::error::JobInputError;
use crate::device::DeviceChoice;
use crate::diffusion::image_pipeline::{rgb_to_tensor, InitImage};
use crate::diffusion::sampler::ControlInput;
use crate::loaders::sd_models::LoadedModels;
use crate::loaders::source::HubOptions;
use crate::preprocess::openpose::json::{parse_json, PoseJsonError};
use crate::preprocess::openpose::{draw_pose_map, DrawParts, PoseFrame};
use crate::preset::temporal::TemporalSettings;
use crate::preset::{ControlKind, Preset};
use crate::render::sd_config::SdRenderConfig;

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

/// Renders every pose map with the preset (loads its models first, see [`still_preset`]):
/// `(1, 3, H, W)` images in [0, 1] at `size` (width, height). `on_step(pose index)` is called
/// after every denoising step. Relative model paths may be relative to `preset_dir` (see the
/// module docs); hub ids are read from the Hugging Face cache (downloaded when online).
pub fn render_poses(
    preset: &Preset,
    preset_dir: Option<&Path>,
    poses: &[Pose],
    size: (u32, u32),
    on_step: &mut (dyn FnMut(usize) + Send),
) -> anyhow::Result<Vec<candle_core::Tensor>> {
    // Errors name the preset by its name: the library call has no preset path.
    let origin = Path::new(preset.name.as_deref().unwrap_or("preset"));
    let still = still_preset(preset, origin)?;
    let config = SdRenderConfig::from_preset(&still.preset, size, preset_dir);
    // A library call: on the default device (the CPU).
    let device = DeviceChoice::default().open()?;
    let hub = HubOptions::from_env(false);
    let models = LoadedModels::load(&config.model_key(), config.text_prompt(), &hub, &device)?;
    render_with_models(&models, &config, poses, on_step)
}

/// Renders every pose map with models already loaded (for [`render_poses`] and the CLI,
/// which reports missing models its own way).
pub fn render_with_models(
    models: &LoadedModels,
    config: &SdRenderConfig,
    poses: &[Pose],
    on_step: &mut (dyn FnMut(usize) + Send),
) -> anyhow::Result<Vec<candle_core::Tensor>> {
    let (width, height) = (config.width, config.height);
    let device = models.sd.device().clone();
    // The prompts are in `models.text` already (A1111 weighting, embeddings, clip skip).
    let settings = config.generation_settings();
    let mut images = Vec::with_capacity(poses.len());
    for (k, pose) in poses.iter().enumerate() {
        let context = || format!("rendering pose {}", pose.label);
        let control_image =
            rgb_to_tensor(&fit_pose(&pose.image, width, height), &device).with_context(context)?;
        // `still_preset` left only openpose ControlNets: the pose is every control image.
        let controls: Vec<ControlInput> = config
            .controlnets
            .iter()
            .zip(&models.net_of)
            .map(|(plan, &net)| ControlInput {
                model: models.nets[net].as_ref(),
                image: control_image.clone(),
                scale: plan.scale,
                start: plan.start,
                end: plan.end,
                guess_mode: plan.guess_mode,
            })
            .collect();
        // On rayon's pool, as the render stage does (see crate::pool).
        let generated = crate::pool::on_worker(|| {
            models.sd.generate_with_text(
                &settings,
                &models.text,
                &InitImage::None,
                &controls,
                None,
                &mut |_| on_step(k),
            )
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
pub fn detail_images(
    models: &LoadedModels,
    preset: &Preset,
    poses: &[Pose],
    keypoints: &[Option<&PoseFrame>],
    images: &mut [RgbImage],
) -> anyhow::Result<()> {
    // `still_preset` left only openpose ControlNets.
    let openpose = models.net_of.first().map(|&net| models.nets[net].clone());
    let Some(mut detailer) = detailer_for_preset(preset, models.sd.clone(), openpose, 30.0)? else {
        return Ok(());
    };
    for ((pose, keypoints), image) in poses.iter().zip(keypoints).zip(images.iter_mut()) {
        if let Some(keypoints) = keypoints {
            crate::pool::on_worker(|| detailer.detail_image(image, keypoints))
                .with_context(|| format!("detailing pose {}", pose.label))?;
        }
    }
    Ok(())
}

/// A preset as `still` renders it, and what of it does not apply to a still.
#[derive(Debug, Clone)]
pub struct StillPreset {
    /// The preset with only its openpose ControlNets and no temporal conditioning.
    pub preset: Preset,
    /// The ControlNets and temporal settings left out, as the preset names them.
    pub skipped: Vec<String>,
}

/// `still` has pose images only: the ControlNets that take them (openpose) are kept; the
/// others have no control image in a still (softedge: no soft-edge map of a pose;
/// TemporalNet and the rest of `temporal:`: no previous frame) and are left out, so their
/// models are not loaded. A preset without an openpose ControlNet is refused: its poses would
/// be ignored. `preset_path` names the preset in errors.
pub fn still_preset(preset: &Preset, preset_path: &Path) -> Result<StillPreset, JobInputError> {
    let refuse = |reason: String| JobInputError::BadValue {
        what: "-p",
        value: preset_path.display().to_string(),
        reason,
    };
    let mut skipped = Vec::new();
    let mut kept = Vec::new();
    for (i, spec) in preset.controlnets.iter().enumerate() {
        if spec.kind == ControlKind::Openpose {
            kept.push(spec.clone());
        } else {
            skipped.push(format!("controlnets[{i}] ({})", spec.kind));
        }
    }
    let t = &preset.temporal;
    for (on, name) in [
        (t.temporalnet.enabled, "temporal.temporalnet"),
        (
            t.cross_frame_attention.active(),
            "temporal.cross_frame_attention",
        ),
        (t.flow_init.enabled, "temporal.flow_init"),
    ] {
        if on {
            skipped.push(name.to_string());
        }
    }
    if preset.controlnets.is_empty() {
        return Err(refuse(
            "the preset has no ControlNet, so the poses would be ignored; \
             `still` needs an openpose ControlNet"
                .into(),
        ));
    }
    if kept.is_empty() {
        let others: Vec<_> = skipped
            .iter()
            .filter(|s| s.starts_with("controlnets["))
            .cloned()
            .collect();
        return Err(refuse(format!(
            "the preset has no openpose ControlNet for the poses ({} cannot take a pose); \
             `still` needs an openpose ControlNet",
            others.join(", ")
        )));
    }
    let mut still = preset.clone();
    still.controlnets = kept;
    still.temporal = TemporalSettings::default();
    Ok(StillPreset {
        preset: still,
        skipped,
    })
}

/// Reads one `--pose` file: a pose map image, or OpenPose JSON (every frame in the file is a
/// pose; `default_size` is the canvas size of files that do not give one).
pub fn read_pose(path: &Path, default_size: Option<(u32, u32)>) -> anyhow::Result<Vec<PoseInput>> {
    let label = path.display().to_string();
    let bad = |reason: String| JobInputError::BadValue {
        what: "--pose",
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
pub fn fit_pose(pose: &RgbImage, width: u32, height: u32) -> RgbImage {
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

    fn preset(controlnets: &str, temporal: &str) -> Preset {
        let text = format!("model:\n  base: m\nprompt: a\ncontrolnets:\n{controlnets}{temporal}");
        Preset::from_yaml(&text, "p.yaml").unwrap()
    }

    #[test]
    fn stills_keep_the_openpose_controlnets_only() {
        let p = preset(
            "  - { type: softedge, model: se }\n  - { type: openpose, model: op, scale: 0.7 }\n  \
             - { type: temporalnet, model: tn }\n",
            "temporal:\n  temporalnet: { enabled: true, model: tn2 }\n  \
             cross_frame_attention: { enabled: true }\n",
        );
        let still = still_preset(&p, Path::new("p.yaml")).unwrap();
        assert_eq!(still.preset.controlnets.len(), 1);
        assert_eq!(still.preset.controlnets[0].model, "op");
        assert_eq!(still.preset.controlnets[0].scale, 0.7);
        assert!(!still.preset.temporal.temporalnet.enabled);
        assert!(!still.preset.temporal.cross_frame_attention.active());
        assert_eq!(
            still.skipped,
            [
                "controlnets[0] (softedge)",
                "controlnets[2] (temporalnet)",
                "temporal.temporalnet",
                "temporal.cross_frame_attention"
            ]
        );
        // Everything else of the preset is kept.
        assert_eq!(still.preset.model, p.model);
        assert_eq!(still.preset.prompt, p.prompt);

        let plain = preset("  - { type: openpose, model: op }\n", "");
        assert!(still_preset(&plain, Path::new("p.yaml"))
            .unwrap()
            .skipped
            .is_empty());
    }

    #[test]
    fn stills_need_an_openpose_controlnet() {
        let p = preset("  - { type: softedge, model: se }\n", "");
        let err = still_preset(&p, Path::new("p.yaml"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("-p p.yaml: "), "{err}");
        assert!(err.contains("controlnets[0] (softedge)"), "{err}");
        let none = Preset::from_yaml("model:\n  base: m\nprompt: a\n", "p.yaml").unwrap();
        let err = still_preset(&none, Path::new("p.yaml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no ControlNet"), "{err}");
    }

    #[test]
    fn numbered_outputs() {
        assert_eq!(
            numbered_output(Path::new("out/sheet.png"), 2),
            PathBuf::from("out/sheet-2.png")
        );
    }
}
