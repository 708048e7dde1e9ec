//! Which implementation a layer runs: the hand-written CPU kernel of [`crate::nn::kernels`]
//! or the portable path built from candle ops, which runs on any candle device.
//!
//! A layer takes the fast path only when its tensors are f32 on the CPU and the calling
//! thread has not chosen [`KernelPath::Portable`]; anything else (another device or dtype)
//! runs the portable path. The choice is read on the thread that calls the layer, before the
//! kernel hands work to rayon, so the override needs no propagation to worker threads.

use std::cell::Cell;

use candle_core::Tensor;

use crate::nn::kernels::cpu::all_cpu_f32;

/// The implementation the layers of [`crate::nn`] run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KernelPath {
    /// The CPU kernels where they apply (f32 on the CPU), the portable path elsewhere.
    #[default]
    Fast,
    /// candle ops only, on every device.
    Portable,
}

thread_local! {
    static CHOSEN: Cell<KernelPath> = const { Cell::new(KernelPath::Fast) };
}

/// The path chosen on this thread ([`KernelPath::Fast`] unless inside [`with_kernel_path`]).
pub fn kernel_path() -> KernelPath {
    CHOSEN.with(Cell::get)
}

/// Runs `f` with `path` chosen on this thread, restoring the previous choice afterwards
/// (also when `f` panics), so tests running in parallel do not see each other's choice.
pub fn with_kernel_path<R>(path: KernelPath, f: impl FnOnce() -> R) -> R {
    struct Restore(KernelPath);
    impl Drop for Restore {
        fn drop(&mut self) {
            CHOSEN.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(CHOSEN.with(|c| c.replace(path)));
    f()
}

/// True when a layer over `tensors` runs its CPU kernel.
pub(crate) fn use_fast_kernel(tensors: &[&Tensor]) -> bool {
    kernel_path() == KernelPath::Fast && all_cpu_f32(tensors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn override_is_scoped_and_nested() {
        let x = Tensor::zeros(4, DType::F32, &Device::Cpu).unwrap();
        assert_eq!(kernel_path(), KernelPath::Fast);
        assert!(use_fast_kernel(&[&x]));
        with_kernel_path(KernelPath::Portable, || {
            assert!(!use_fast_kernel(&[&x]));
            with_kernel_path(KernelPath::Fast, || assert!(use_fast_kernel(&[&x])));
            assert_eq!(kernel_path(), KernelPath::Portable);
        });
        assert_eq!(kernel_path(), KernelPath::Fast);
        let half = x.to_dtype(DType::F16).unwrap();
        assert!(!use_fast_kernel(&[&x, &half]));
    }
}
