//! Where DeepCache (Ma et al. 2023, the PyPI `DeepCache` package's `DeepCacheSDHelper`)
//! splits the UNet, and the two kinds of call it makes.
//!
//! A *refresh* runs the whole UNet and keeps the features that enter the up path at the
//! cache branch; a *reuse* runs only the shallow part around it: `conv_in`, the down path up
//! to the branch, then the up path from the branch on, starting from the kept features. The
//! skip tensors the shallow up layers read are exactly the ones the shallow down layers make,
//! so the deep blocks, the mid block and the rest of the down path are not run at all.

use candle_core::Tensor;

/// The package's `cache_branch_id`: `block = id / 3`, `layer = id % 3`, both counted from
/// the shallow end (block 0 is the first down block and the last up block; layer 0 of an up
/// block is its last layer). The package's default, 0, keeps only the outermost layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheBranch {
    pub block: usize,
    pub layer: usize,
}

impl CacheBranch {
    pub fn from_id(id: usize) -> Self {
        CacheBranch {
            block: id / 3,
            layer: id % 3,
        }
    }
}

/// How one UNet call uses DeepCache.
#[derive(Debug, Clone, Copy)]
pub enum DeepCacheCall<'a> {
    /// Run everything; return the features entering the branch for later reuses.
    Refresh(CacheBranch),
    /// Run the shallow part only, from `features` of the last refresh.
    Reuse {
        branch: CacheBranch,
        features: &'a Tensor,
    },
}

impl DeepCacheCall<'_> {
    pub fn branch(&self) -> CacheBranch {
        match self {
            DeepCacheCall::Refresh(branch) | DeepCacheCall::Reuse { branch, .. } => *branch,
        }
    }
}

/// Whether step `step` (counted from the first step run) refreshes the cache: every
/// `interval`-th step, the first included (the package's `skip_mode="uniform"`).
pub fn is_refresh_step(step: usize, interval: usize) -> bool {
    interval <= 1 || step.is_multiple_of(interval)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn branch_ids_split_into_block_and_layer() {
        assert_eq!(CacheBranch::from_id(0), CacheBranch { block: 0, layer: 0 });
        assert_eq!(CacheBranch::from_id(5), CacheBranch { block: 1, layer: 2 });
        assert_eq!(CacheBranch::from_id(9), CacheBranch { block: 3, layer: 0 });
    }

    #[test]
    fn every_interval_th_step_refreshes() {
        let refreshes: Vec<bool> = (0..7).map(|i| is_refresh_step(i, 3)).collect();
        assert_eq!(
            refreshes,
            vec![true, false, false, true, false, false, true]
        );
        assert!((0..4).all(|i| is_refresh_step(i, 1)));
    }
}
