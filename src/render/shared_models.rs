//! The render's SD models, loaded on first use and shared by the frame renderer, the
//! AnimateDiff batch renderer and the face / hand detailers.

use std::sync::{Arc, Mutex};

use crate::loaders::model_cache::ModelCache;
use crate::loaders::sd_models::LoadedModels;
use crate::loaders::source::HubOptions;
use crate::render::sd_config::SdRenderConfig;
use crate::render::sd_renderer::SdRenderError;

/// Models loaded on first use, shared by everything that needs them (the renderer, a
/// detailer): loading is skipped entirely when nothing asks. The weights come from a
/// [`ModelCache`], so consecutive jobs on the same models load them once, onto the cache's
/// device.
pub struct SharedModels {
    config: SdRenderConfig,
    hub: HubOptions,
    cache: Arc<ModelCache>,
    loaded: Mutex<Option<Arc<LoadedModels>>>,
}

impl SharedModels {
    /// Models whose weights come from (and stay in) `cache`.
    pub fn with_cache(config: SdRenderConfig, hub: HubOptions, cache: Arc<ModelCache>) -> Self {
        Self {
            config,
            hub,
            cache,
            loaded: Mutex::new(None),
        }
    }

    pub fn config(&self) -> &SdRenderConfig {
        &self.config
    }

    pub fn hub(&self) -> &HubOptions {
        &self.hub
    }

    /// Whether the models are loaded already.
    pub fn is_loaded(&self) -> bool {
        self.loaded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// Whether the weights are in the cache already (loaded by an earlier job), so that
    /// [`Self::get`] only encodes the prompt.
    pub fn weights_cached(&self) -> bool {
        self.cache.holds(&self.config.model_key())
    }

    /// The models, loading them on the first call.
    pub fn get(&self) -> Result<Arc<LoadedModels>, SdRenderError> {
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(models) = loaded.as_ref() {
            return Ok(models.clone());
        }
        let weights = self.cache.weights(&self.config.model_key(), &self.hub)?;
        let models = Arc::new(LoadedModels::from_weights(
            &weights,
            self.config.text_prompt(),
        )?);
        *loaded = Some(models.clone());
        Ok(models)
    }
}
