//! Model weights kept from one job to the next: `rotoscope batch` runs many jobs, and jobs
//! on the same models (same model stack, same ControlNets, compared by value) should load
//! them once. Only one set is kept: when the next job needs different models, the old ones
//! are dropped *before* the new ones are read, so two SD stacks never sit in memory at once.
//! The cache holds the run's device (opened once) and reads every model onto it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use candle_core::Device;

use crate::loaders::sd_models::{ModelKey, ModelWeights, SdModelsError};
use crate::loaders::source::HubOptions;

/// See the module docs.
pub struct ModelCache {
    device: Device,
    slot: Mutex<Option<(ModelKey, Arc<ModelWeights>)>>,
    loads: AtomicUsize,
}

impl ModelCache {
    /// An empty cache whose models are read onto `device`.
    pub fn new(device: Device) -> Self {
        Self {
            device,
            slot: Mutex::new(None),
            loads: AtomicUsize::new(0),
        }
    }

    /// The device the models are read onto.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The weights `key` names: the cached ones when their key is equal, else loaded now
    /// (after dropping the cached ones).
    pub fn weights(
        &self,
        key: &ModelKey,
        hub: &HubOptions,
    ) -> Result<Arc<ModelWeights>, SdModelsError> {
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((cached, weights)) = slot.as_ref() {
            if cached == key {
                return Ok(weights.clone());
            }
        }
        // Free the previous models before reading the next ones (peak memory: one stack).
        *slot = None;
        let weights = Arc::new(ModelWeights::load(key, hub, &self.device)?);
        self.loads.fetch_add(1, Ordering::SeqCst);
        *slot = Some((key.clone(), weights.clone()));
        Ok(weights)
    }

    /// Whether the weights for `key` are cached.
    pub fn holds(&self, key: &ModelKey) -> bool {
        self.slot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(|(cached, _)| cached == key)
    }

    /// How many times weights were read from disk (a job on cached models adds nothing).
    pub fn loads(&self) -> usize {
        self.loads.load(Ordering::SeqCst)
    }

    /// Drop the cached weights.
    pub fn clear(&self) {
        *self.slot.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::DeviceChoice;
    use crate::loaders::model_stack::ModelStackSpec;
    use std::path::Path;

    /// The key of a preset with `model.base` and at most one ControlNet (fixture folders).
    fn key(base: &str, controlnet: Option<&str>) -> ModelKey {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pipeline");
        let path = |name: &str| fixtures.join(name).to_string_lossy().into_owned();
        ModelKey {
            models: ModelStackSpec::new(path(base)),
            controlnets: controlnet.map(path).into_iter().collect(),
        }
    }

    fn cache() -> ModelCache {
        ModelCache::new(DeviceChoice::Cpu.open().unwrap())
    }

    #[test]
    fn equal_models_load_once_and_different_ones_replace_them() {
        let cache = cache();
        let hub = HubOptions::from_lookup(false, |_| None);
        let first = key(".", Some("controlnet_a"));
        let a = cache.weights(&first, &hub).unwrap();
        // Another prompt and seed, same models (the key holds neither): the same weights.
        let other_prompt = first.clone();
        let b = cache.weights(&other_prompt, &hub).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(cache.loads(), 1);
        assert!(cache.holds(&first));

        // Without the ControlNet: other models, loaded; the old ones are gone from the cache.
        let without = key(".", None);
        drop((a, b));
        let c = cache.weights(&without, &hub).unwrap();
        assert_eq!(cache.loads(), 2);
        assert!(c.nets.is_empty());
        assert!(!cache.holds(&first));
        assert!(cache.holds(&without));
        cache.clear();
        assert!(!cache.holds(&without));
    }

    #[test]
    fn missing_models_are_not_cached() {
        let cache = cache();
        let hub = HubOptions::from_lookup(false, |_| None);
        let missing = key("no-such-folder", None);
        assert!(cache.weights(&missing, &hub).is_err());
        assert_eq!(cache.loads(), 0);
        assert!(!cache.holds(&missing));
    }
}
