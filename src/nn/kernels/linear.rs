//! The CPU kernel of [`crate::nn::linear::Linear`]: one gemm per batch entry, reading and
//! writing through strides, onto an output pre-loaded with the bias (and residual).

use candle_core::{Result, Tensor};
use gemm::{gemm, Parallelism};
use rayon::prelude::*;

use super::cpu::with_cpu_f32;
use crate::alloc::uninit_f32;

/// How the gemm reads the input and writes the output, per batch entry.
#[derive(Clone, Copy)]
pub(crate) struct Strides {
    /// Input element (row r, feature i) at `r·in_row + i·in_col`.
    pub(crate) in_row: isize,
    pub(crate) in_col: isize,
    /// Output element (row r, feature o) at `r·out_row + o·out_col`.
    pub(crate) out_row: isize,
    pub(crate) out_col: isize,
}

/// One gemm per batch entry of `rows` rows. The output buffer starts as bias (+ residual,
/// which must already be in the output layout); `channels_first` says the output is
/// `(out, rows)` per entry rather than `(rows, out)`.
pub(crate) fn linear_gemm(
    weight: &Tensor,
    bias: Option<&Tensor>,
    x: &Tensor,
    batch: usize,
    rows: usize,
    st: Strides,
    residual: Option<&Tensor>,
    channels_first: bool,
) -> Result<Vec<f32>> {
    let (out_dim, in_dim) = weight.dims2()?;
    let per_entry = rows * out_dim;
    let has_init = residual.is_some() || bias.is_some();
    let mut out = match residual {
        Some(r) => r.contiguous()?.flatten_all()?.to_vec1::<f32>()?,
        // SAFETY: every element is written below, by the bias or else by the gemm (which
        // then does not read the output).
        None => unsafe { uninit_f32(batch * per_entry) },
    };
    if let Some(bias) = bias {
        let bias = bias.to_vec1::<f32>()?;
        // Onto the residual, or as the initial value: one pass either way.
        let add = residual.is_some();
        let apply = |v: &mut f32, b: f32| *v = if add { *v + b } else { b };
        if channels_first {
            // Each (entry, channel) plane of `rows` values shares one bias.
            out.par_chunks_mut(rows).enumerate().for_each(|(i, plane)| {
                let b = bias[i % out_dim];
                plane.iter_mut().for_each(|v| apply(v, b));
            });
        } else {
            out.par_chunks_mut(out_dim * 64).for_each(|chunk| {
                for (v, &b) in chunk.iter_mut().zip(bias.iter().cycle()) {
                    apply(v, b);
                }
            });
        }
    }
    with_cpu_f32(x, "linear input", |input| {
        with_cpu_f32(weight, "linear weight", |weight| {
            let threads = rayon::current_num_threads();
            let in_per_entry = rows * in_dim;
            for (bi, dst) in out.chunks_mut(per_entry).enumerate() {
                // SAFETY: dst holds rows × out values addressed through the output strides;
                // the input entry holds rows × in values addressed through the input strides;
                // the weight is (out, in) row-major, read as the (in, out) matrix Wᵀ.
                unsafe {
                    gemm(
                        rows,
                        out_dim,
                        in_dim,
                        dst.as_mut_ptr(),
                        st.out_col,
                        st.out_row,
                        has_init,
                        input.as_ptr().add(bi * in_per_entry),
                        st.in_col,
                        st.in_row,
                        weight.as_ptr(),
                        in_dim as isize,
                        1,
                        1.0,
                        1.0,
                        false,
                        false,
                        false,
                        Parallelism::Rayon(threads),
                    );
                }
            }
            Ok(())
        })
    })?;
    Ok(out)
}
