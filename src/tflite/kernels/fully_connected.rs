//! FULLY_CONNECTED: `[M, K] · Wᵀ + b` with TFLite's `[N, K]` weight layout.

use super::activation::Activation;
use super::packed_gemm::{matmul_packed, PackedWeights};
use crate::alloc::uninit_f32;
use crate::tflite::array::Array;

#[derive(Debug, Clone)]
pub struct FullyConnected {
    weights: PackedWeights,
    pub units: usize,
    pub inputs: usize,
    pub keep_num_dims: bool,
    pub activation: Activation,
}

impl FullyConnected {
    /// `weights` is `[units][inputs]`; a missing bias is zero.
    pub fn new(
        weights: &[f32],
        bias: Option<&[f32]>,
        units: usize,
        inputs: usize,
        keep_num_dims: bool,
        activation: Activation,
    ) -> Self {
        let zeros = vec![0.0; units];
        let weights = PackedWeights::new(weights, bias.unwrap_or(&zeros), units, inputs);
        FullyConnected {
            weights,
            units,
            inputs,
            keep_num_dims,
            activation,
        }
    }

    pub fn run(&self, input: &Array) -> Result<Array, String> {
        if self.inputs == 0 || !input.len().is_multiple_of(self.inputs) {
            return Err(format!(
                "input of shape {:?} does not split into rows of {}",
                input.shape, self.inputs
            ));
        }
        let rows = input.len() / self.inputs;
        // SAFETY: the GEMM stores every element of its output.
        let mut out = unsafe { uninit_f32(rows * self.units) };
        matmul_packed(&input.data, &self.weights, self.activation, &mut out);
        let shape = if self.keep_num_dims && input.shape.last() == Some(&self.inputs) {
            let mut s = input.shape.clone();
            *s.last_mut().expect("non-empty shape") = self.units;
            s
        } else {
            vec![rows, self.units]
        };
        Ok(Array::new(shape, out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dense_layer() {
        let fc = FullyConnected::new(
            &[1.0, 2.0, 3.0, -1.0, 0.0, 1.0],
            Some(&[0.5, -10.0]),
            2,
            3,
            false,
            Activation::Relu,
        );
        let out = fc
            .run(&Array::new(vec![1, 1, 1, 3], vec![1.0, 1.0, 2.0]))
            .unwrap();
        assert_eq!(out.shape, vec![1, 2]);
        assert_eq!(out.data, vec![9.5, 0.0]);
    }
}
