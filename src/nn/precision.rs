//! The precision the layers of [`crate::nn`] keep their weights in, chosen while a model is
//! built: f32 (the default, which the parity tests against diffusers hold to) or bf16 (half
//! the memory; the CPU kernels multiply in bf16 with f32 accumulation, see
//! [`crate::nn::kernels::gemm_bf16`]). Activations stay f32 either way.
//!
//! The loaders build a model inside [`with_weight_precision`]; every layer constructor reads
//! [`weight_precision`] once, so a built model never changes precision. Like
//! [`crate::nn::path`], the choice is per thread and scoped.

use std::cell::Cell;

/// The precision of a layer's weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum WeightPrecision {
    #[default]
    F32,
    /// bfloat16 weights, f32 activations and accumulation.
    Bf16,
}

thread_local! {
    static CHOSEN: Cell<WeightPrecision> = const { Cell::new(WeightPrecision::F32) };
}

/// The precision layers built on this thread keep their weights in.
pub fn weight_precision() -> WeightPrecision {
    CHOSEN.with(Cell::get)
}

/// Runs `f` (which builds layers) with `precision` chosen on this thread, restoring the
/// previous choice afterwards, also when `f` panics.
pub fn with_weight_precision<R>(precision: WeightPrecision, f: impl FnOnce() -> R) -> R {
    struct Restore(WeightPrecision);
    impl Drop for Restore {
        fn drop(&mut self) {
            CHOSEN.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(CHOSEN.with(|c| c.replace(precision)));
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choice_is_scoped() {
        assert_eq!(weight_precision(), WeightPrecision::F32);
        let inner = with_weight_precision(WeightPrecision::Bf16, weight_precision);
        assert_eq!(inner, WeightPrecision::Bf16);
        assert_eq!(weight_precision(), WeightPrecision::F32);
    }
}
