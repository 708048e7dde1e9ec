//! Fused activation functions (`ActivationFunctionType`) and the standalone activation ops.

use super::parallel::for_each_row;
use pulp::Arch;

/// Elements per parallel task for cheap elementwise loops.
pub const ELEMENTWISE_CHUNK: usize = 1 << 15;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    None,
    Relu,
    ReluN1To1,
    Relu6,
    Tanh,
}

impl Activation {
    #[inline]
    pub fn apply_scalar(self, x: f32) -> f32 {
        match self {
            Activation::None => x,
            Activation::Relu => x.max(0.0),
            Activation::ReluN1To1 => x.clamp(-1.0, 1.0),
            Activation::Relu6 => x.clamp(0.0, 6.0),
            Activation::Tanh => x.tanh(),
        }
    }

    pub fn apply(self, data: &mut [f32]) {
        match self {
            Activation::None => {}
            Activation::Relu => map_in_place(data, |x| x.max(0.0)),
            Activation::ReluN1To1 => map_in_place(data, |x| x.clamp(-1.0, 1.0)),
            Activation::Relu6 => map_in_place(data, |x| x.clamp(0.0, 6.0)),
            Activation::Tanh => map_in_place(data, f32::tanh),
        }
    }
}

impl Activation {
    /// Like [`Self::apply`] on the calling thread (for data already inside a parallel task).
    pub fn apply_serial(self, data: &mut [f32]) {
        match self {
            Activation::None => {}
            Activation::Relu => map_serial(data, |x| x.max(0.0)),
            Activation::ReluN1To1 => map_serial(data, |x| x.clamp(-1.0, 1.0)),
            Activation::Relu6 => map_serial(data, |x| x.clamp(0.0, 6.0)),
            Activation::Tanh => map_serial(data, f32::tanh),
        }
    }
}

fn map_serial(data: &mut [f32], f: impl Fn(f32) -> f32) {
    Arch::new().dispatch(|| {
        for x in data.iter_mut() {
            *x = f(*x);
        }
    })
}

/// `x = f(x)` over `data`, in parallel chunks, each compiled for the CPU's widest SIMD
/// instruction set (pulp dispatch) so simple `f`s auto-vectorise.
pub fn map_in_place(data: &mut [f32], f: impl Fn(f32) -> f32 + Sync + Send + Copy) {
    for_each_row(data, ELEMENTWISE_CHUNK, ELEMENTWISE_CHUNK, |_, chunk| {
        Arch::new().dispatch(|| {
            for x in chunk.iter_mut() {
                *x = f(*x);
            }
        })
    });
}

/// LOGISTIC: 1 / (1 + e^-x).
pub fn logistic(data: &mut [f32]) {
    map_in_place(data, |x| 1.0 / (1.0 + (-x).exp()));
}

/// PRELU with `alpha` broadcast over the trailing dims of `data` (alpha's length divides
/// the data and repeats, e.g. per-channel alpha of shape [1, 1, C] over NHWC).
pub fn prelu(data: &mut [f32], alpha: &[f32]) {
    let period = alpha.len();
    let chunk = (ELEMENTWISE_CHUNK / period).max(1) * period;
    for_each_row(data, chunk, chunk, |_, chunk| {
        Arch::new().dispatch(|| {
            for row in chunk.chunks_exact_mut(period) {
                for (x, &a) in row.iter_mut().zip(alpha) {
                    *x = if *x < 0.0 { *x * a } else { *x };
                }
            }
        })
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activations() {
        let mut v = vec![-7.0, -0.5, 0.5, 7.0];
        Activation::Relu6.apply(&mut v);
        assert_eq!(v, vec![0.0, 0.0, 0.5, 6.0]);
        let mut v = vec![-7.0, -0.5, 0.5, 7.0];
        Activation::ReluN1To1.apply(&mut v);
        assert_eq!(v, vec![-1.0, -0.5, 0.5, 1.0]);
        let mut v = vec![-2.0, 3.0, -4.0, 5.0];
        prelu(&mut v, &[0.5, 0.25]);
        assert_eq!(v, vec![-1.0, 3.0, -2.0, 5.0]);
        let mut v = vec![0.0];
        logistic(&mut v);
        assert_eq!(v, vec![0.5]);
    }
}
