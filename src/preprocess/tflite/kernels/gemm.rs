//! Matrix multiply through the `gemm` crate (the kernel candle's CPU matmul uses), behind a
//! safe, length-checked interface.

/// Row-major `c[m×n] = bias + a[m×k] · b` where `b` is `[n×k]` row-major (i.e. `aᵀ`-style
/// weights as TFLite stores them: one row of `k` weights per output channel).
/// `bias` (length n, optional) is broadcast over rows.
pub fn matmul_bt(
    a: &[f32],
    b_nk: &[f32],
    bias: Option<&[f32]>,
    c: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
) {
    assert_eq!(a.len(), m * k, "lhs length");
    assert_eq!(b_nk.len(), n * k, "rhs length");
    assert_eq!(c.len(), m * n, "output length");
    if let Some(bias) = bias {
        assert_eq!(bias.len(), n, "bias length");
        for row in c.chunks_exact_mut(n) {
            row.copy_from_slice(bias);
        }
    }
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if bias.is_none() {
            c.fill(0.0);
        }
        return;
    }
    let threads = if m * n * k >= 1 << 18 {
        rayon::current_num_threads()
    } else {
        1
    };
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the asserts above prove every index the strides reach is inside the slices:
    // a is m×k (row stride k, col stride 1), b is read as k×n with element (kk, j) at
    // j*k + kk, c is m×n (row stride n, col stride 1). `c` is uniquely borrowed.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            bias.is_some(),
            a.as_ptr(),
            1,
            k as isize,
            b_nk.as_ptr(),
            k as isize,
            1,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_naive_product_with_bias() {
        let (m, k, n) = (5, 7, 3);
        let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.11).cos()).collect();
        let bias = [0.5, -1.0, 2.0];
        let mut c = vec![f32::NAN; m * n];
        matmul_bt(&a, &b, Some(&bias), &mut c, m, k, n);
        for i in 0..m {
            for j in 0..n {
                let want: f32 =
                    bias[j] + (0..k).map(|kk| a[i * k + kk] * b[j * k + kk]).sum::<f32>();
                assert!(
                    (c[i * n + j] - want).abs() < 1e-5,
                    "({i},{j}) {} vs {want}",
                    c[i * n + j]
                );
            }
        }
        let mut c2 = vec![f32::NAN; m * n];
        matmul_bt(&a, &b, None, &mut c2, m, k, n);
        for i in 0..m {
            for j in 0..n {
                assert!((c2[i * n + j] + bias[j] - c[i * n + j]).abs() < 1e-5);
            }
        }
    }
}
