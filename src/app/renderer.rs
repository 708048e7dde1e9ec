//! The frame renderer of a job, built on the render thread when the first batch needs
//! rendering: the SD renderer on the job's shared models, with the cross-frame attention
//! anchor rendered first (or its attention rebuilt from the work directory), or the
//! AnimateDiff batch renderer (`crate::render::motion`).

use std::path::PathBuf;
use std::sync::Arc;

use crate::loaders::sd_models::LoadedModels;
use crate::pipeline::resume::{ChainedRenderer, Notifier, RendererFactory, WorkDir};
use crate::pipeline::stages::{PreparedFrame, Preprocessor};
use crate::preprocess::registry::{build_preprocessors, PreprocessorOptions};
use crate::preset::ControlKind;
use crate::render::sd_renderer::{SdRenderError, SdRenderer};
use crate::render::shared_models::SharedModels;
use crate::render::temporal::anchor::read_prepared_frame;
use crate::video::ReadOptions;

/// A UNet whose first level has fewer channels is a random test model (SD1.5 has 320).
pub const TEST_MODEL_CHANNELS: usize = 64;

/// Whether a UNet's channels say it is a random test model.
pub fn is_test_model(unet_channels: &[usize]) -> bool {
    unet_channels
        .first()
        .is_some_and(|&c| c < TEST_MODEL_CHANNELS)
}

/// The anchor frame's input, read when the renderer is built.
pub struct AnchorInput {
    pub path: PathBuf,
    pub options: ReadOptions,
    pub index: u64,
    /// The first rendered frame.
    pub first_frame: u64,
    pub preprocess: PreprocessorOptions,
    pub maps: Vec<ControlKind>,
}

/// The shared models, loaded on first use, with a word to the user when that happens.
pub fn load_models(
    shared: &SharedModels,
    notify: &Notifier,
) -> Result<Arc<LoadedModels>, SdRenderError> {
    if shared.is_loaded() {
        return shared.get();
    }
    let base = &shared.config().models.base;
    if shared.weights_cached() {
        notify(&format!(
            "models already loaded: {base} (shared with the previous job)"
        ));
    } else {
        notify(&format!("loading models: {base}"));
    }
    let models = shared.get()?;
    if is_test_model(models.unet_channels()) {
        notify(&format!(
            "note: {base} is a tiny test model with random weights (UNet channels {:?}): its \
             images are patterns from random weights, not a trained style",
            models.unet_channels()
        ));
    }
    Ok(models)
}

/// Builds the renderer on the shared models, and renders the anchor frame (or rebuilds its
/// attention cache from the cached output) when cross-frame attention needs it. Runs on the
/// render thread, only when a batch needs rendering.
pub fn renderer_factory(
    shared: Arc<SharedModels>,
    anchor: AnchorInput,
    notify: Notifier,
) -> RendererFactory {
    Box::new(move |work: &WorkDir, batch: &[PreparedFrame]| {
        let models = load_models(&shared, &notify)?;
        let mut renderer = SdRenderer::new(shared.config().clone(), models);
        if renderer.config().needs_anchor() {
            // The first rendered frame, when it is the anchor, is preprocessed exactly as the
            // pipeline does it (fresh trackers): take it from the batch when it is there.
            let in_batch = batch
                .iter()
                .find(|f| f.source.index == anchor.index && anchor.index == anchor.first_frame);
            let read;
            let prepared = match in_batch {
                Some(frame) => frame,
                None => {
                    let mut preprocessors: Vec<Box<dyn Preprocessor>> =
                        build_preprocessors(&anchor.maps, &anchor.preprocess)?;
                    read = read_prepared_frame(
                        &anchor.path,
                        &anchor.options,
                        anchor.index,
                        &mut preprocessors,
                    )?;
                    &read
                }
            };
            let cached = work.load_anchor(anchor.index)?;
            let reused = cached.is_some();
            if let Some(fresh) = renderer.prepare_anchor(prepared, cached)? {
                work.save_anchor(&fresh)?;
            }
            let (bytes, _) = renderer.attention_cache_bytes();
            notify(&format!(
                "anchor frame {}{}: cross-frame attention keeps {:.1} MB per reference frame",
                anchor.index,
                if reused {
                    " (output from the work directory)"
                } else {
                    ""
                },
                bytes as f64 / 1e6
            ));
        }
        Ok(Box::new(renderer) as Box<dyn ChainedRenderer>)
    })
}
