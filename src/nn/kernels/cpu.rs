//! Low-level helpers for the hand-written CPU kernels.

use candle_core::{CpuStorage, DType, Layout, Result, Storage, Tensor};

/// True when every tensor is f32 on the CPU, i.e. the hand-written kernels apply.
pub(crate) fn all_cpu_f32(tensors: &[&Tensor]) -> bool {
    tensors
        .iter()
        .all(|t| t.device().is_cpu() && t.dtype() == DType::F32)
}

/// The contiguous f32 data of a CPU storage (a custom op's operand), or an error naming
/// `what`.
pub(crate) fn contiguous_f32<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
    what: &str,
) -> Result<&'a [f32]> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&storage.as_slice::<f32>()?[start..end]),
        None => candle_core::bail!("{what}: operands must be contiguous"),
    }
}

/// Runs `f` on the contiguous f32 data of a CPU tensor (`what` names it in errors).
pub(crate) fn with_cpu_f32<R>(
    t: &Tensor,
    what: &str,
    f: impl FnOnce(&[f32]) -> Result<R>,
) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(cpu) => f(contiguous_f32(cpu, layout, what)?),
        _ => candle_core::bail!("{what}: CPU tensor expected"),
    }
}

/// A raw output pointer shared by parallel workers that write disjoint regions.
#[derive(Clone, Copy)]
pub(crate) struct SharedMut(*mut f32);

// SAFETY: only used for buffers whose regions are partitioned among workers.
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

impl SharedMut {
    pub(crate) fn new(buffer: &mut [f32]) -> Self {
        Self(buffer.as_mut_ptr())
    }

    /// # Safety
    /// `offset` must stay within the buffer and the caller must write only its own region.
    pub(crate) unsafe fn at(self, offset: usize) -> *mut f32 {
        self.0.add(offset)
    }
}
