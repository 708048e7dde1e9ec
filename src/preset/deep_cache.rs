//! The preset section `deep_cache` (off when absent): DeepCache step caching, as the PyPI
//! `DeepCache` package's `DeepCacheSDHelper.set_params` takes it.
//!
//! ```yaml
//! deep_cache:
//!   interval: 3     # a full UNet pass every 3rd step; the 2 between reuse its deep features
//!   branch: 0       # cache_branch_id: where the UNet is split (0 = outermost, the fastest)
//! ```
//!
//! It applies to the SD frame renderer, `still` and the face / hand detailer; AnimateDiff
//! batches (`temporal.motion_module`) refuse it.

use serde::{Deserialize, Deserializer, Serialize};

use crate::preset::deserialize_checked;

/// Branch ids of an SD1.x / SD2.x UNet: 4 blocks of 3 layers.
pub const MAX_BRANCH: u32 = 11;

/// `deep_cache`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct DeepCacheSpec {
    pub interval: u32,
    pub branch: u32,
}

impl Default for DeepCacheSpec {
    fn default() -> Self {
        DeepCacheSpec {
            interval: 3,
            branch: 0,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawDeepCacheSpec {
    interval: u32,
    branch: u32,
}

impl Default for RawDeepCacheSpec {
    fn default() -> Self {
        let d = DeepCacheSpec::default();
        RawDeepCacheSpec {
            interval: d.interval,
            branch: d.branch,
        }
    }
}

impl DeepCacheSpec {
    /// The rules the deserializer enforces, for settings built or changed in code.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=100).contains(&self.interval) {
            return Err(format!(
                "interval: {} is not in 1..=100 (1 runs the whole UNet every step)",
                self.interval
            ));
        }
        if self.branch > MAX_BRANCH {
            return Err(format!(
                "branch: {} is not in 0..={MAX_BRANCH} (block = branch / 3, layer = branch % 3)",
                self.branch
            ));
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for DeepCacheSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_checked(
            deserializer,
            "DeepCacheSpec",
            &["interval", "branch"],
            |raw: RawDeepCacheSpec| {
                let spec = DeepCacheSpec {
                    interval: raw.interval,
                    branch: raw.branch,
                };
                spec.validate().map(|()| spec)
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_ranges() {
        let spec: DeepCacheSpec = serde_yaml_ng::from_str("{}").unwrap();
        assert_eq!(spec, DeepCacheSpec::default());
        let spec: DeepCacheSpec = serde_yaml_ng::from_str("{interval: 2, branch: 5}").unwrap();
        assert_eq!((spec.interval, spec.branch), (2, 5));
        for bad in ["{interval: 0}", "{branch: 12}", "{step: 3}"] {
            assert!(
                serde_yaml_ng::from_str::<DeepCacheSpec>(bad).is_err(),
                "{bad}"
            );
        }
    }
}
