//! Face and hand detailing (DESIGN.md §2): faces and hands are small in a full frame, so
//! SD draws them poorly. Each one is cropped, rendered again at a larger size with a masked
//! img2img pass, and pasted back.
//!
//! * [`regions`]: keypoints → padded square boxes, clamped into the frame (pure);
//! * [`tracks`]: stable ids across frames, smoothed boxes, per-track seeds;
//! * [`mask`]: the grown, feathered keypoint hull a crop is pasted through (pure);
//! * [`paste`]: the feathered paste, leaving unmasked pixels bit for bit (pure);
//! * [`inpaint`]: the diffusion pass on one crop;
//! * [`detailer`]: [`RegionPlanner`] (tracking only, no models: what a resumed render runs
//!   over finished batches) and [`FaceHandDetailer`], the pipeline
//!   [`Detailer`](crate::pipeline::stages::Detailer);
//! * [`settings`]: the preset section `detail:`.
//!
//! **Where the keypoints come from.** In the render pipeline the pose preprocessor stores
//! each frame's [`PoseFrame`](crate::preprocess::openpose::keypoints::PoseFrame) in
//! `PreparedFrame::annotations` (`annotations.insert(pose_frame)`), with keypoints in the
//! pixels of the source frame and `width`/`height` set to the source frame's size; the
//! detailer reads it back with `annotations.get::<PoseFrame>()` and scales the keypoints to
//! the rendered frame. A frame without one is an error (detailing without the pose
//! preprocessor); a frame whose pose has no face or hand is normal and simply not detailed
//! there. The pose preprocessor estimates the parts detailing needs even where the openpose
//! map does not draw them. `rotoscope still` takes the keypoints from OpenPose JSON poses.

pub mod detailer;
pub mod error;
pub mod inpaint;
pub mod mask;
pub mod paste;
pub mod regions;
pub mod tracks;

use std::sync::Arc;

pub use crate::preset::detail::{DetailSettings, RegionSettings};
pub use detailer::{
    BatchDetail, DetailedRegion, DetailerConfig, FaceHandDetailer, PlannedRegion, RegionPlanner,
    RegionReport,
};
pub use error::DetailError;
pub use inpaint::{InpaintRequest, RegionInpainter, StableDiffusionInpainter};

use crate::diffusion::image_pipeline::StableDiffusion;
use crate::diffusion::schedulers::SchedulerKind;
use crate::models::controlnet::ControlNetModel;
use crate::preset::{ControlKind, Preset};

/// The detailer a preset asks for, sharing the renderer's models: `None` when the preset
/// details nothing. `openpose` is the preset's openpose ControlNet, if it has one (hands
/// use it by default); `fps` is the clip's frame rate.
pub fn detailer_for_preset(
    preset: &Preset,
    sd: Arc<StableDiffusion>,
    openpose: Option<Arc<ControlNetModel>>,
    fps: f64,
) -> Result<Option<FaceHandDetailer<StableDiffusionInpainter>>, DetailError> {
    let Some(config) = detailer_config(preset, fps)? else {
        return Ok(None);
    };
    let inpainter = inpainter_for_preset(preset, sd, openpose)?;
    FaceHandDetailer::new(config, inpainter).map(Some)
}

/// What the detailer is configured with for `preset` (`None`: it details nothing). Checks
/// everything that needs no model (see [`check_preset`]), so a render can fail before it
/// starts and track regions before any model is loaded.
pub fn detailer_config(preset: &Preset, fps: f64) -> Result<Option<DetailerConfig>, DetailError> {
    if !preset.detail.any_enabled() {
        return Ok(None);
    }
    check_preset(preset)?;
    Ok(Some(DetailerConfig {
        settings: preset.detail.clone(),
        prompt: preset.prompt.clone(),
        negative_prompt: preset.negative_prompt.clone(),
        base_seed: preset.sampler.seed,
        fps,
    }))
}

/// The detail pass on the renderer's models.
pub fn inpainter_for_preset(
    preset: &Preset,
    sd: Arc<StableDiffusion>,
    openpose: Option<Arc<ControlNetModel>>,
) -> Result<StableDiffusionInpainter, DetailError> {
    Ok(StableDiffusionInpainter::new(
        sd,
        openpose,
        detail_scheduler(preset)?,
    ))
}

fn detail_scheduler(preset: &Preset) -> Result<SchedulerKind, DetailError> {
    let name = preset.sampler.scheduler.as_str();
    SchedulerKind::from_name(name).ok_or_else(|| DetailError::UnknownScheduler(name.to_string()))
}

/// The preset's detail section against the rest of the preset: an enabled part that asks
/// for the openpose ControlNet needs one under `controlnets`, and the sampler must exist.
/// Nothing is checked when detailing is off.
pub fn check_preset(preset: &Preset) -> Result<(), DetailError> {
    if !preset.detail.any_enabled() {
        return Ok(());
    }
    let has_openpose = preset
        .controlnets
        .iter()
        .any(|c| c.kind == ControlKind::Openpose);
    for (section, s) in [
        ("face", &preset.detail.face),
        ("hands", &preset.detail.hands),
    ] {
        if s.enabled && s.controlnet && !has_openpose {
            return Err(DetailError::NoOpenposeControlNet { section });
        }
    }
    detail_scheduler(preset).map(|_| ())
}
