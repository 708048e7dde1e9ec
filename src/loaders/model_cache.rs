//! Model weights kept from one job to the next: `rotoscope batch` runs many jobs, and jobs
//! on the same models (same model stack, same ControlNets, compared by value) should load
//! them once. Only one set is kept: when the next job needs different models, the old ones
//! are dropped *before* the new ones are read, so two SD stacks never sit in memory at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::loaders::source::HubOptions;
use crate::render::sd_renderer::{ModelKey, ModelWeights, SdRenderConfig, SdRenderError};

/// See the module docs.
#[derive(Default)]
pub struct ModelCache {
    slot: Mutex<Option<(ModelKey, Arc<ModelWeights>)>>,
    loads: AtomicUsize,
}

impl ModelCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// The weights `config` needs: the cached ones when their key is equal, else loaded now
    /// (after dropping the cached ones).
    pub fn weights(
        &self,
        config: &SdRenderConfig,
        hub: &HubOptions,
    ) -> Result<Arc<ModelWeights>, SdRenderError> {
        let key = ModelKey::of(config);
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((cached, weights)) = slot.as_ref() {
            if *cached == key {
                return Ok(weights.clone());
            }
        }
        // Free the previous models before reading the next ones (peak memory: one stack).
        *slot = None;
        let weights = Arc::new(ModelWeights::load(config, hub)?);
        self.loads.fetch_add(1, Ordering::SeqCst);
        *slot = Some((key, weights.clone()));
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
    use std::path::Path;

    fn config(base: &str, controlnet: Option<&str>) -> SdRenderConfig {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pipeline");
        let mut yaml = format!(
            "model: {{base: {}}}\nprompt: a\nresolution: {{width: 64, height: 64}}\n",
            fixtures.join(base).display()
        );
        if let Some(net) = controlnet {
            yaml.push_str(&format!(
                "controlnets:\n  - {{type: openpose, model: {}}}\n",
                fixtures.join(net).display()
            ));
        }
        let preset = crate::preset::Preset::from_yaml(&yaml, "test.yaml").unwrap();
        SdRenderConfig::from_preset(&preset, (64, 64), None)
    }

    #[test]
    fn equal_models_load_once_and_different_ones_replace_them() {
        let cache = ModelCache::new();
        let hub = HubOptions::from_lookup(false, |_| None);
        let first = config(".", Some("controlnet_a"));
        let a = cache.weights(&first, &hub).unwrap();
        // Another prompt and seed, same models: the same weights.
        let mut other_prompt = first.clone();
        other_prompt.prompt = "something else".into();
        other_prompt.seed = 99;
        let b = cache.weights(&other_prompt, &hub).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(cache.loads(), 1);
        assert!(cache.holds(&ModelKey::of(&first)));

        // Without the ControlNet: other models, loaded; the old ones are gone from the cache.
        let without = config(".", None);
        drop((a, b));
        let c = cache.weights(&without, &hub).unwrap();
        assert_eq!(cache.loads(), 2);
        assert!(c.nets.is_empty());
        assert!(!cache.holds(&ModelKey::of(&first)));
        assert!(cache.holds(&ModelKey::of(&without)));
        cache.clear();
        assert!(!cache.holds(&ModelKey::of(&without)));
    }

    #[test]
    fn missing_models_are_not_cached() {
        let cache = ModelCache::new();
        let hub = HubOptions::from_lookup(false, |_| None);
        let missing = config("no-such-folder", None);
        assert!(cache.weights(&missing, &hub).is_err());
        assert_eq!(cache.loads(), 0);
        assert!(!cache.holds(&ModelKey::of(&missing)));
    }
}
