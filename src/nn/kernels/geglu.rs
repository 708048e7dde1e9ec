//! The CPU kernel of the GEGLU activation in [`crate::nn::feed_forward`].

use candle_core::{Result, Storage, Tensor};
use rayon::prelude::*;

use super::simd::geglu_row;

/// `value · gelu_erf(gate)` for f32 CPU `h = [value, gate]` along the last dimension
/// (`inner` values each).
pub(crate) fn geglu_cpu(h: &Tensor, inner: usize) -> Result<Tensor> {
    let h = h.contiguous()?;
    let mut dims = h.dims().to_vec();
    let (storage, layout) = h.storage_and_layout();
    let (Storage::Cpu(cpu), Some((start, end))) = (&*storage, layout.contiguous_offsets()) else {
        candle_core::bail!("geglu: contiguous CPU input expected");
    };
    let src = &cpu.as_slice::<f32>()?[start..end];
    // SAFETY: every row is written below.
    let mut out = unsafe { crate::alloc::uninit_f32(src.len() / 2) };
    out.par_chunks_mut(inner)
        .zip(src.par_chunks(2 * inner))
        .with_min_len(16)
        .for_each(|(o, h)| geglu_row(h, o));
    let Some(last) = dims.last_mut() else {
        candle_core::bail!("geglu: scalar input");
    };
    *last = inner;
    Tensor::from_vec(out, dims, h.device())
}
