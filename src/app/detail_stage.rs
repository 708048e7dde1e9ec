//! Face and hand detailing as a stage of a render job: the preset's `detail:` section on
//! the renderer's shared models, with the detailed frames kept in the work directory.

use std::sync::Arc;

use serde::Serialize;

use crate::app::renderer::load_models;
use crate::app::resolve::{detailer_config, Sampling};
use crate::cancel::StopFlag;
use crate::detail::{
    BatchDetail, DetailError, FaceHandDetailer, RegionPlanner, RegionReport,
    StableDiffusionInpainter,
};
use crate::diffusion::image_pipeline::StableDiffusion;
use crate::models::controlnet::ControlNetModel;
use crate::pipeline::plan::Batch;
use crate::pipeline::progress::JsonProgress;
use crate::pipeline::resume::{Notifier, WorkDir};
use crate::pipeline::stages::{Detailer, PreparedFrame, StageError};
use crate::preset::{ControlKind, Preset};
use crate::render::shared_models::SharedModels;
use crate::video::Frame;

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
    let inpainter = inpainter_for_preset(preset, sd, openpose);
    FaceHandDetailer::new(config, inpainter).map(Some)
}

/// The detail pass on the renderer's models, with the preset's sampler resolved as the
/// renderers take it ([`Sampling::of`]: scheduler, eta, timestep spacing, DeepCache).
fn inpainter_for_preset(
    preset: &Preset,
    sd: Arc<StableDiffusion>,
    openpose: Option<Arc<ControlNetModel>>,
) -> StableDiffusionInpainter {
    StableDiffusionInpainter::with_sampler(sd, openpose, Sampling::of(preset).inpaint_sampler())
}

/// Face and hand detailing (the preset's `detail:` section) on the renderer's models. The
/// work directory keeps each batch's detailed frames next to the renderer's: a finished
/// batch's are read back, and its regions only tracked (no model runs), so the batches that
/// are detailed continue the same tracks as in an uninterrupted render. The models are
/// loaded when the first batch needs a detail pass.
pub struct SharedModelDetailer {
    shared: Arc<SharedModels>,
    preset: Preset,
    work: WorkDir,
    stop: StopFlag,
    notify: Notifier,
    /// `detail` events with `--json`.
    json: Option<Arc<JsonProgress>>,
    stage: DetailStage,
}

/// Before the first detail pass only the tracks are kept; then the whole detailer.
enum DetailStage {
    Tracking(RegionPlanner),
    Detailing(FaceHandDetailer<StableDiffusionInpainter>),
    /// Only while switching from one to the other.
    Switching,
}

/// `{"event":"detail",...}`: what detailing did to one batch (with `--json`).
#[derive(Serialize)]
struct DetailEvent<'a> {
    event: &'static str,
    batch: usize,
    frames: usize,
    /// The detailed frames were read back from the work directory (no diffusion pass).
    restored: bool,
    /// Diffusion passes run for this batch.
    inpainted: usize,
    regions: &'a [RegionReport],
}

impl SharedModelDetailer {
    pub fn new(
        shared: Arc<SharedModels>,
        preset: &Preset,
        fps: f64,
        work: WorkDir,
        stop: StopFlag,
        notify: Notifier,
        json: Option<Arc<JsonProgress>>,
    ) -> Result<Option<Self>, DetailError> {
        let Some(config) = detailer_config(preset, fps)? else {
            return Ok(None);
        };
        Ok(Some(SharedModelDetailer {
            shared,
            preset: preset.clone(),
            work,
            stop,
            notify,
            json,
            stage: DetailStage::Tracking(RegionPlanner::new(config)),
        }))
    }

    /// The detailer, loading the models on first use.
    fn detailer(&mut self) -> Result<&mut FaceHandDetailer<StableDiffusionInpainter>, StageError> {
        if let DetailStage::Tracking(_) = self.stage {
            let DetailStage::Tracking(planner) =
                std::mem::replace(&mut self.stage, DetailStage::Switching)
            else {
                unreachable!("matched just above")
            };
            let models = load_models(&self.shared, &self.notify)?;
            let openpose = self
                .shared
                .config()
                .controlnet_of_kind(&models, ControlKind::Openpose);
            let inpainter = inpainter_for_preset(&self.preset, models.sd.clone(), openpose);
            let detailer = FaceHandDetailer::from_planner(planner, inpainter)?
                .with_stop_flag(self.stop.clone());
            self.stage = DetailStage::Detailing(detailer);
        }
        match &mut self.stage {
            DetailStage::Detailing(detailer) => Ok(detailer),
            _ => Err("face/hand detailing failed to load earlier in this run".into()),
        }
    }

    fn report(&self, batch: &Batch, frames: usize, restored: bool, detail: &BatchDetail) {
        match &self.json {
            Some(json) => json.emit(&DetailEvent {
                event: "detail",
                batch: batch.index,
                frames,
                restored,
                inpainted: detail.inpainted,
                regions: &detail.regions,
            }),
            None if restored => (self.notify)(&format!(
                "detail: batch {}: detailed frames from the work directory",
                batch.index
            )),
            None => (self.notify)(&format!(
                "detail: batch {}: {} region(s) repainted on {frames} frame(s)",
                batch.index, detail.inpainted
            )),
        }
    }
}

impl Detailer for SharedModelDetailer {
    fn name(&self) -> &str {
        "face-hands"
    }

    fn detail_batch(
        &mut self,
        batch: &Batch,
        inputs: &[PreparedFrame],
        outputs: &mut [Frame],
    ) -> Result<(), StageError> {
        let stored = match self.work.load_detailed(batch) {
            Ok(stored) => stored.filter(|frames| frames.len() == outputs.len()),
            Err(e) => {
                (self.notify)(&format!("{e}; detailing batch {} again", batch.index));
                None
            }
        };
        if let Some(frames) = stored {
            let size = (frames[0].width, frames[0].height);
            let planner = match &mut self.stage {
                DetailStage::Tracking(planner) => planner,
                DetailStage::Detailing(detailer) => detailer.planner_mut(),
                DetailStage::Switching => {
                    return Err("face/hand detailing failed to load earlier in this run".into())
                }
            };
            let detail = planner.track_batch(batch, inputs, size)?;
            outputs.clone_from_slice(&frames);
            self.report(batch, outputs.len(), true, &detail);
            return Ok(());
        }
        let detail = self
            .detailer()?
            .detail_batch_report(batch, inputs, outputs)?;
        self.work.save_detailed(batch, outputs)?;
        self.report(batch, outputs.len(), false, &detail);
        Ok(())
    }
}
