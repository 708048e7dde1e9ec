//! The CPU kernels of [`crate::nn::linear::Linear`]: in f32 one gemm per batch entry, reading
//! and writing through strides; in bf16 the products of [`super::gemm_bf16`] over the input
//! rounded to pairs; both onto an output pre-loaded with the bias (and residual).

use candle_core::{Result, Tensor};
use gemm::{gemm, Parallelism};
use rayon::prelude::*;

use super::cpu::{with_cpu_f32, SharedMut};
use super::gemm_bf16::{
    gemm_bf16, interleave_planes, to_pairs, PairsA, WeightPanels, MR, NR,
};
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

/// The output buffer of `len` values pre-loaded with the bias (+ residual, in the output
/// layout), and whether anything was pre-loaded (otherwise it is uninitialised and the
/// product must overwrite it). `channels_first`: planes of `rows` values share one bias.
fn preloaded_output(
    bias: Option<&Tensor>,
    residual: Option<&Tensor>,
    len: usize,
    out_dim: usize,
    rows: usize,
    channels_first: bool,
) -> Result<(Vec<f32>, bool)> {
    let has_init = residual.is_some() || bias.is_some();
    let mut out = match residual {
        Some(r) => r.contiguous()?.flatten_all()?.to_vec1::<f32>()?,
        // SAFETY: every element is written, by the bias below or else by the product (which
        // then does not read the output).
        None => unsafe { uninit_f32(len) },
    };
    if let Some(bias) = bias {
        let bias = bias.to_vec1::<f32>()?;
        // Onto the residual, or as the initial value: one pass either way.
        let add = residual.is_some();
        let apply = |v: &mut f32, b: f32| *v = if add { *v + b } else { b };
        if channels_first {
            // Each (entry, channel) plane of `rows` values shares one bias.
            out.par_chunks_mut(rows.max(1)).enumerate().for_each(|(i, plane)| {
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
    Ok((out, has_init))
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
    let (mut out, has_init) = preloaded_output(bias, residual, batch * per_entry, out_dim, rows, channels_first)?;
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

/// How [`linear_bf16`] reads its input, per batch entry of `rows` rows and `in` features.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum InputLayout {
    /// `(rows, in)` row-major: tokens.
    Tokens,
    /// `(in, rows)`: channel planes of a `(b, c, h, w)` tensor.
    ChannelsFirst,
}

/// Output rows per task: 16 microkernel tiles.
const ROWS_PER_TASK: usize = 16 * MR;

/// `x · Wᵀ + bias (+ residual)` in bf16 with f32 accumulation, tokens out: `(batch, rows, out)`.
/// The input is rounded to bf16 pairs once per call, as `input` lays it out.
pub(crate) fn linear_bf16(
    panels: &WeightPanels,
    bias: Option<&Tensor>,
    x: &Tensor,
    batch: usize,
    rows: usize,
    input: InputLayout,
    residual: Option<&Tensor>,
) -> Result<Vec<f32>> {
    let (out_dim, kp) = (panels.rows(), panels.pairs());
    let in_dim = x.elem_count() / (batch * rows).max(1);
    let per_entry = rows * out_dim;
    let (mut out, has_init) =
        preloaded_output(bias, residual, batch * per_entry, out_dim, rows, false)?;
    if rows == 0 || out_dim == 0 {
        return Ok(out);
    }
    let mut pairs = vec![0u32; rows * kp];
    with_cpu_f32(x, "linear input", |input_data| {
        for (bi, dst) in out.chunks_mut(per_entry).enumerate() {
            let entry = &input_data[bi * rows * in_dim..(bi + 1) * rows * in_dim];
            // A: pair k of row r at r·a_row + k·a_pair.
            let a = match input {
                InputLayout::Tokens => {
                    pairs
                        .par_chunks_mut(kp * 64)
                        .zip(entry.par_chunks(in_dim * 64))
                        .for_each(|(d, s)| {
                            for (d, s) in d.chunks_exact_mut(kp).zip(s.chunks_exact(in_dim)) {
                                to_pairs(s, d);
                            }
                        });
                    PairsA { ptr: pairs.as_ptr(), row: kp, pair: 1 }
                }
                InputLayout::ChannelsFirst => {
                    interleave_planes(entry, in_dim, &mut pairs);
                    PairsA { ptr: pairs.as_ptr(), row: 1, pair: rows }
                }
            };
            let out_ptr = SharedMut::new(dst);
            let row_tasks = rows.div_ceil(ROWS_PER_TASK);
            let col_panels = out_dim.div_ceil(NR);
            (0..row_tasks * col_panels).into_par_iter().for_each(|task| {
                let (rt, p) = (task / col_panels, task % col_panels);
                let r0 = rt * ROWS_PER_TASK;
                let m = ROWS_PER_TASK.min(rows - r0);
                let n = NR.min(out_dim - p * NR);
                let a_task = a.rows_from(r0);
                // SAFETY: A holds rows × kp pairs at its strides, the panel kp × NR; this task
                // writes rows r0..r0+m, columns p·NR..p·NR+n of the entry's output only.
                unsafe {
                    gemm_bf16(
                        m,
                        n,
                        kp,
                        a_task,
                        panels.panel(p),
                        out_ptr.at(r0 * out_dim + p * NR),
                        out_dim,
                        has_init,
                    )
                };
            });
        }
        Ok(())
    })?;
    Ok(out)
}

/// `tokens` `(b, rows, c)` transposed onto `residual` `(b, c, rows)`: the channels-first output
/// of a projection whose product ran in token layout.
pub(crate) fn add_transposed(tokens: &[f32], residual: &mut [f32], rows: usize, channels: usize) {
    residual
        .par_chunks_mut(rows.max(1))
        .enumerate()
        .for_each(|(plane, dst)| {
            let (b, c) = (plane / channels, plane % channels);
            let src = &tokens[b * rows * channels..(b + 1) * rows * channels];
            for (r, d) in dst.iter_mut().enumerate() {
                *d += src[r * channels + c];
            }
        });
}
