//! Face and hand detailing (docs/ARCHITECTURE.md, "Data flow"): faces and hands are small in a full frame, so
//! SD draws them poorly. Each one is cropped, rendered again at a larger size with a masked
//! img2img pass, and pasted back.
//!
//! * [`regions`]: keypoints → padded square boxes, clamped into the frame (pure);
//! * [`tracks`]: stable ids across frames, smoothed boxes, per-track seeds;
//! * [`mask`]: the grown, feathered keypoint hull a crop is pasted through (pure);
//! * [`paste`]: the feathered paste, leaving unmasked pixels bit for bit (pure);
//! * [`inpaint`]: the diffusion pass on one crop, with the preset's sampler as the resolver
//!   reads it ([`InpaintSampler`], from `crate::app::resolve::Sampling`);
//! * [`detailer`]: [`RegionPlanner`] (tracking only, no models: what a resumed render runs
//!   over finished batches) and [`FaceHandDetailer`], the pipeline
//!   [`Detailer`](crate::pipeline::stages::Detailer);
//! * the preset section `detail:` is [`DetailSettings`] (`crate::preset::detail`); the
//!   resolver (`crate::app::resolve`) turns a preset into a [`DetailerConfig`].
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

pub use crate::preset::detail::{DetailSettings, RegionSettings};
pub use detailer::{
    BatchDetail, DetailedRegion, DetailerConfig, FaceHandDetailer, PlannedRegion, RegionPlanner,
    RegionReport,
};
pub use error::DetailError;
pub use inpaint::{InpaintRequest, InpaintSampler, RegionInpainter, StableDiffusionInpainter};

use crate::preset::{ControlKind, Preset};

/// The preset's detail section against the rest of the preset: an enabled part that asks
/// for the openpose ControlNet needs one under `controlnets` (every preset sampler exists
/// for detailing: both use the one `SchedulerKind`).
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
    Ok(())
}
