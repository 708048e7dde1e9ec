//! Memory-bounded scaled dot-product attention: `softmax(Q Kᵀ / √d) V` without ever holding the
//! full `N × N` score matrix.
//!
//! At SD1.5's first block with 64×64 latents and batch 2 the full matrix is
//! 2·8 heads × 4096 × 4096 × 4 B = 1 GiB (3 GiB with cross-frame keys). On the fast path (CPU,
//! f32) the kernel of [`crate::nn::kernels::fused_attention`] computes it in L2-sized blocks (a
//! few MiB in all). On the portable path candle ops run on blocks bounded by
//! [`AttentionBudget`]: queries are processed in chunks whose
//! score block fits the budget, every query row still seeing all keys at once, so the result is
//! the same softmax as the unchunked one; only when even a few query rows cannot hold a full key
//! row (very long key sequences) are keys chunked too, with a running (online) softmax as in
//! flash attention.

use candle_core::{Result, Tensor, D};

use crate::nn::budget::AttentionBudget;
use crate::nn::kernels::fused_attention::{fused_attention, FusedBlocks};
use crate::nn::path::use_fast_kernel;

/// Fewest query rows worth a matmul before switching to key chunking.
const MIN_QUERY_ROWS: usize = 32;

/// How a `(heads, queries, keys)` problem is cut into blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunking {
    /// Heads (batch × heads slices) per block.
    pub heads: usize,
    /// Query rows per block.
    pub queries: usize,
    /// Keys per block; fewer than all keys means online softmax across key blocks.
    pub keys: usize,
}

impl Chunking {
    /// The largest blocks within `budget` for `heads` slices of `queries × keys` scores.
    pub fn for_budget(heads: usize, queries: usize, keys: usize, budget: AttentionBudget) -> Self {
        let budget = budget.max_scores.max(1);
        let (heads, queries, keys) = (heads.max(1), queries.max(1), keys.max(1));
        let key_chunk = if keys.saturating_mul(MIN_QUERY_ROWS.min(queries)) <= budget {
            keys
        } else {
            (budget / MIN_QUERY_ROWS.min(queries)).max(1)
        };
        // Rows = (head, query) pairs whose scores against one key block fit the budget.
        let rows = (budget / key_chunk).max(1);
        if rows >= heads * queries {
            Self {
                heads,
                queries,
                keys: key_chunk,
            }
        } else if rows >= heads {
            Self {
                heads,
                queries: rows / heads,
                keys: key_chunk,
            }
        } else {
            let q = queries.min(rows);
            Self {
                heads: (rows / q).max(1),
                queries: q,
                keys: key_chunk,
            }
        }
    }
}

/// `(b, n, heads·d)` → `(b·heads, n, d)`, contiguous.
pub fn split_heads(x: &Tensor, heads: usize) -> Result<Tensor> {
    let (b, n, inner) = x.dims3()?;
    x.reshape((b, n, heads, inner / heads))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((b * heads, n, inner / heads))
}

/// `(b·heads, n, d)` → `(b, n, heads·d)`, contiguous.
pub fn merge_heads(x: &Tensor, heads: usize) -> Result<Tensor> {
    let (bh, n, d) = x.dims3()?;
    x.reshape((bh / heads, heads, n, d))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((bh / heads, n, heads * d))
}

/// Multi-head attention on projected tensors: `q` `(b, n_q, heads·d)`, `k`/`v`
/// `(b, n_k, heads·d)` → `(b, n_q, heads·d)`, with scale `1/√d`. On CPU in f32 this runs the
/// fused kernel; otherwise candle ops on budget-sized blocks.
pub fn multi_head_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    budget: AttentionBudget,
) -> Result<Tensor> {
    let (_, n_q, inner) = q.dims3()?;
    if heads == 0 || inner % heads != 0 {
        candle_core::bail!("attention: {heads} heads do not divide {inner} channels");
    }
    if use_fast_kernel(&[q, k, v]) {
        let blocks = FusedBlocks::for_budget(n_q, k.dim(1)?, budget);
        return fused_attention(q, k, v, heads, blocks);
    }
    let head_dim = inner / heads;
    let q = split_heads(&(q * (1.0 / (head_dim as f64).sqrt()))?, heads)?;
    let k = split_heads(k, heads)?;
    let v = split_heads(v, heads)?;
    let chunking = Chunking::for_budget(q.dim(0)?, n_q, k.dim(1)?, budget);
    let out = chunked_attention(&q, &k, &v, chunking)?;
    merge_heads(&out, heads)
}

/// `softmax(q kᵀ) v` for `q` `(h, n_q, d)` (already scaled), `k`/`v` `(h, n_k, d)`, computed block
/// by block as `chunking` says. Exposed so tests can force every chunking direction.
pub fn chunked_attention(q: &Tensor, k: &Tensor, v: &Tensor, chunking: Chunking) -> Result<Tensor> {
    let (h, n_q, _) = q.dims3()?;
    let n_k = k.dim(1)?;
    let (hc, qc, kc) = (
        chunking.heads.max(1),
        chunking.queries.max(1),
        chunking.keys.max(1),
    );
    if hc >= h && qc >= n_q && kc >= n_k {
        return attention_block(q, k, v);
    }
    let mut head_blocks = Vec::with_capacity(h.div_ceil(hc));
    for h0 in (0..h).step_by(hc) {
        let hn = hc.min(h - h0);
        let (k_h, v_h) = (k.narrow(0, h0, hn)?, v.narrow(0, h0, hn)?);
        let mut query_blocks = Vec::with_capacity(n_q.div_ceil(qc));
        for q0 in (0..n_q).step_by(qc) {
            let q_block = q.narrow(0, h0, hn)?.narrow(1, q0, qc.min(n_q - q0))?;
            let out = if kc >= n_k {
                attention_block(&q_block, &k_h, &v_h)?
            } else {
                online_softmax_attention(&q_block, &k_h, &v_h, kc)?
            };
            query_blocks.push(out);
        }
        head_blocks.push(Tensor::cat(&query_blocks, 1)?);
    }
    Tensor::cat(&head_blocks, 0)
}

/// One block with all keys: plain softmax.
fn attention_block(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
    let scores = q.matmul(&k.t()?)?;
    let probs = candle_nn::ops::softmax_last_dim(&scores)?;
    drop(scores);
    probs.matmul(v)
}

/// One query block against keys taken `key_chunk` at a time, keeping per row the running
/// maximum `m`, the running normaliser `l` and the unnormalised output `acc`.
fn online_softmax_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    key_chunk: usize,
) -> Result<Tensor> {
    let n_k = k.dim(1)?;
    let mut state: Option<(Tensor, Tensor, Tensor)> = None;
    for k0 in (0..n_k).step_by(key_chunk) {
        let len = key_chunk.min(n_k - k0);
        let scores = q.matmul(&k.narrow(1, k0, len)?.t()?)?;
        let block_max = scores.max_keepdim(D::Minus1)?;
        let (m, correction) = match &state {
            None => (block_max, None),
            Some((m_prev, _, _)) => {
                let m = m_prev.maximum(&block_max)?;
                let correction = (m_prev - &m)?.exp()?;
                (m, Some(correction))
            }
        };
        let p = scores.broadcast_sub(&m)?.exp()?;
        let row_sum = p.sum_keepdim(D::Minus1)?;
        let pv = p.matmul(&v.narrow(1, k0, len)?)?;
        state = Some(match (state, correction) {
            (Some((_, l, acc)), Some(c)) => {
                let l = ((l * &c)? + row_sum)?;
                let acc = (acc.broadcast_mul(&c)? + pv)?;
                (m, l, acc)
            }
            _ => (m, row_sum, pv),
        });
    }
    match state {
        Some((_, l, acc)) => acc.broadcast_div(&l),
        None => candle_core::bail!("attention over an empty key sequence"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    fn naive(q: &Tensor, k: &Tensor, v: &Tensor) -> Tensor {
        let scores = q.matmul(&k.t().unwrap()).unwrap();
        candle_nn::ops::softmax(&scores, D::Minus1)
            .unwrap()
            .matmul(v)
            .unwrap()
    }

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        crate::nn::tensor_diff::max_abs_diff(a, b).unwrap()
    }

    fn random(shape: (usize, usize, usize), scale: f64) -> Tensor {
        (Tensor::randn(0f32, 1.0, shape, &Device::Cpu).unwrap() * scale).unwrap()
    }

    #[test]
    fn every_chunking_direction_matches_the_full_matrix() {
        let (h, n_q, n_k, d) = (6, 37, 53, 8);
        // Scaled up so the softmax is peaked and the online rescaling really matters.
        let q = random((h, n_q, d), 2.0);
        let k = random((h, n_k, d), 2.0);
        let v = random((h, n_k, d), 1.0);
        let reference = naive(&q, &k, &v);
        let cases = [
            (h, n_q, n_k), // single block
            (h, 5, n_k),   // query chunks only
            (h, n_q, 7),   // key chunks only (online softmax)
            (h, 4, 11),    // both
            (1, 9, n_k),   // head chunks
            (4, 3, 2),     // all three, uneven tails everywhere
            (h, 1, 1),     // degenerate blocks
        ];
        for (hc, qc, kc) in cases {
            let out = chunked_attention(
                &q,
                &k,
                &v,
                Chunking {
                    heads: hc,
                    queries: qc,
                    keys: kc,
                },
            )
            .unwrap();
            let err = max_abs_diff(&out, &reference);
            assert!(err < 1e-5, "chunking ({hc}, {qc}, {kc}): max abs err {err}");
        }
    }

    #[test]
    fn budget_bounds_every_score_block() {
        let budget = AttentionBudget {
            max_scores: 1 << 20,
        };
        for (h, n_q, n_k) in [
            (16, 4096, 4096),
            (16, 4096, 12288),
            (512, 4096, 4096),
            (2, 64, 1 << 22),
            (16, 4096, 77),
        ] {
            let c = Chunking::for_budget(h, n_q, n_k, budget);
            assert!(
                c.heads * c.queries * c.keys <= budget.max_scores,
                "{h} {n_q} {n_k}: {c:?}"
            );
            assert!(c.heads >= 1 && c.queries >= 1 && c.keys >= 1);
        }
        // Short keys (cross-attention to 77 text tokens): no key chunking, big query blocks.
        let c = Chunking::for_budget(16, 4096, 77, AttentionBudget::default());
        assert_eq!((c.heads, c.queries, c.keys), (16, 4096, 77));
        // SD1.5 64² self-attention: all heads, query blocks, full key rows.
        let c = Chunking::for_budget(16, 4096, 4096, AttentionBudget::default());
        assert_eq!((c.heads, c.queries, c.keys), (16, 256, 4096));
    }

    #[test]
    fn multi_head_attention_matches_per_head_reference() {
        let (b, n, heads, d) = (2, 19, 3, 4);
        let q = random((b, n, heads * d), 1.0);
        let k = random((b, n + 5, heads * d), 1.0);
        let v = random((b, n + 5, heads * d), 1.0);
        let tiny = AttentionBudget { max_scores: 50 };
        let out = multi_head_attention(&q, &k, &v, heads, tiny).unwrap();
        let scale = 1.0 / (d as f64).sqrt();
        for bi in 0..b {
            for hi in 0..heads {
                let sl = |t: &Tensor| {
                    t.get(bi)
                        .unwrap()
                        .narrow(1, hi * d, d)
                        .unwrap()
                        .unsqueeze(0)
                        .unwrap()
                };
                let expect = naive(&(sl(&q) * scale).unwrap(), &sl(&k), &sl(&v));
                let err = max_abs_diff(&sl(&out), &expect);
                assert!(err < 1e-5, "batch {bi} head {hi}: {err}");
            }
        }
    }
}
