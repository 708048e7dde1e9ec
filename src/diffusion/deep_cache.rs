//! DeepCache across the steps of one denoising run (the PyPI `DeepCache` package's
//! `DeepCacheSDHelper` with `skip_mode="uniform"`): every `interval`-th step runs the whole
//! UNet and keeps its deep features at the branch; the steps between run only the shallow
//! part from them ([`crate::models::unet::deep_cache`]). The ControlNets of a shallow step
//! make only the residuals it reads.

use candle_core::Tensor;

use crate::models::unet::deep_cache::{is_refresh_step, CacheBranch};
use crate::preset::deep_cache::DeepCacheSpec;

/// The preset's `deep_cache:`, resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeepCacheSettings {
    /// A full UNet pass every `interval` steps (1: every step, i.e. off).
    pub interval: usize,
    pub branch: CacheBranch,
}

impl DeepCacheSettings {
    /// The preset's `deep_cache:` (`None`: off).
    pub fn from_preset(spec: Option<&DeepCacheSpec>) -> Option<Self> {
        spec.map(|s| DeepCacheSettings {
            interval: s.interval as usize,
            branch: CacheBranch::from_id(s.branch as usize),
        })
    }
}

/// The features kept for one UNet call site of a run (one batch of latents).
#[derive(Debug, Default)]
pub struct DeepCacheSlot {
    features: Option<Tensor>,
}

impl DeepCacheSlot {
    /// The features step `step` (0 = the first step run) reuses; `None`: it refreshes
    /// (every `interval`-th step, and whenever nothing is kept yet).
    pub fn reused(&self, settings: &DeepCacheSettings, step: usize) -> Option<Tensor> {
        self.features
            .clone()
            .filter(|_| !is_refresh_step(step, settings.interval))
    }

    /// Keeps what a refresh returned (a reuse returns nothing and keeps the old features).
    pub fn keep(&mut self, features: Option<Tensor>) {
        if features.is_some() {
            self.features = features;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn a_slot_refreshes_until_it_holds_features_then_on_schedule() {
        let settings = DeepCacheSettings {
            interval: 2,
            branch: CacheBranch::from_id(0),
        };
        let mut slot = DeepCacheSlot::default();
        // Nothing kept yet: even an off-schedule step refreshes.
        assert!(slot.reused(&settings, 1).is_none());
        slot.keep(Some(Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap()));
        assert!(slot.reused(&settings, 1).is_some());
        assert!(slot.reused(&settings, 2).is_none());
        slot.keep(None);
        assert!(slot.reused(&settings, 3).is_some());
    }
}
