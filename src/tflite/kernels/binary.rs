//! Elementwise binary ops with NumPy-style broadcasting (ADD, MUL, SUB, ...).

use super::parallel::for_each_row_zip;
use pulp::Arch;

use super::activation::{Activation, ELEMENTWISE_CHUNK};
use crate::tflite::array::Array;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Maximum,
    Minimum,
}

impl BinaryOp {
    #[inline]
    fn apply(self, a: f32, b: f32) -> f32 {
        match self {
            BinaryOp::Add => a + b,
            BinaryOp::Sub => a - b,
            BinaryOp::Mul => a * b,
            BinaryOp::Div => a / b,
            BinaryOp::Maximum => a.max(b),
            BinaryOp::Minimum => a.min(b),
        }
    }
}

/// Broadcast output shape of two shapes (right-aligned, 1s stretch).
pub fn broadcast_shape(a: &[usize], b: &[usize]) -> Result<Vec<usize>, String> {
    let rank = a.len().max(b.len());
    (0..rank)
        .map(|i| {
            let da = if i + a.len() >= rank {
                a[i + a.len() - rank]
            } else {
                1
            };
            let db = if i + b.len() >= rank {
                b[i + b.len() - rank]
            } else {
                1
            };
            match (da, db) {
                (x, y) if x == y => Ok(x),
                (1, y) => Ok(y),
                (x, 1) => Ok(x),
                _ => Err(format!("shapes {a:?} and {b:?} do not broadcast")),
            }
        })
        .collect()
}

/// `a = op(a, b)` elementwise for equal shapes, each chunk compiled for the CPU's widest
/// SIMD set so the loop vectorises.
fn zip_in_place(a: &mut [f32], b: &[f32], f: impl Fn(f32, f32) -> f32 + Sync + Send + Copy) {
    for_each_row_zip(
        a,
        ELEMENTWISE_CHUNK,
        b,
        ELEMENTWISE_CHUNK,
        ELEMENTWISE_CHUNK,
        |x, y| {
            Arch::new().dispatch(|| {
                for (x, &y) in x.iter_mut().zip(y) {
                    *x = f(*x, y);
                }
            })
        },
    );
}

/// `op(a, b)` with broadcasting. When `a` is given up by its owner (`owned`), equal shapes
/// are computed in its buffer.
pub fn binary_owned(
    op: BinaryOp,
    a: Array,
    b: &Array,
    activation: Activation,
) -> Result<Array, String> {
    if a.shape != b.shape {
        return binary(op, &a, b, activation);
    }
    let mut a = a;
    match op {
        BinaryOp::Add => zip_in_place(&mut a.data, &b.data, |x, y| x + y),
        BinaryOp::Sub => zip_in_place(&mut a.data, &b.data, |x, y| x - y),
        BinaryOp::Mul => zip_in_place(&mut a.data, &b.data, |x, y| x * y),
        BinaryOp::Div => zip_in_place(&mut a.data, &b.data, |x, y| x / y),
        BinaryOp::Maximum => zip_in_place(&mut a.data, &b.data, f32::max),
        BinaryOp::Minimum => zip_in_place(&mut a.data, &b.data, f32::min),
    }
    activation.apply(&mut a.data);
    Ok(a)
}

pub fn binary(op: BinaryOp, a: &Array, b: &Array, activation: Activation) -> Result<Array, String> {
    if a.shape == b.shape {
        return binary_owned(op, a.clone(), b, activation);
    }
    let shape = broadcast_shape(&a.shape, &b.shape)?;
    let data = {
        let rank = shape.len();
        // Strides of each operand in the output index space (0 along broadcast dims).
        let operand_strides = |s: &[usize]| {
            let own = super::shape::strides(s);
            (0..rank)
                .map(|i| {
                    if i + s.len() < rank {
                        0
                    } else {
                        let d = i + s.len() - rank;
                        if s[d] == 1 {
                            0
                        } else {
                            own[d]
                        }
                    }
                })
                .collect::<Vec<_>>()
        };
        let (sa, sb) = (operand_strides(&a.shape), operand_strides(&b.shape));
        let n: usize = shape.iter().product();
        let mut out = Vec::with_capacity(n);
        let mut index = vec![0usize; rank];
        for _ in 0..n {
            let ia: usize = index.iter().zip(&sa).map(|(i, s)| i * s).sum();
            let ib: usize = index.iter().zip(&sb).map(|(i, s)| i * s).sum();
            out.push(activation.apply_scalar(op.apply(a.data[ia], b.data[ib])));
            for d in (0..rank).rev() {
                index[d] += 1;
                if index[d] < shape[d] {
                    break;
                }
                index[d] = 0;
            }
        }
        out
    };
    Ok(Array::new(shape, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasting_add_with_activation() {
        let a = Array::new(vec![2, 2], vec![1.0, -2.0, 3.0, -4.0]);
        let b = Array::new(vec![2], vec![10.0, 1.0]);
        let c = binary(BinaryOp::Add, &a, &b, Activation::Relu).unwrap();
        assert_eq!(c.shape, vec![2, 2]);
        assert_eq!(c.data, vec![11.0, 0.0, 13.0, 0.0]);
        let col = Array::new(vec![2, 1], vec![2.0, 3.0]);
        let d = binary(BinaryOp::Mul, &a, &col, Activation::None).unwrap();
        assert_eq!(d.data, vec![2.0, -4.0, 9.0, -12.0]);
        assert!(broadcast_shape(&[2, 3], &[2]).is_err());
    }
}
