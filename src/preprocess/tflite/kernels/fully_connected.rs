//! FULLY_CONNECTED: `[M, K] · Wᵀ + b` with TFLite's `[N, K]` weight layout.

use super::activation::Activation;
use super::gemm::matmul_bt;
use crate::preprocess::tflite::array::Array;

#[derive(Debug, Clone)]
pub struct FullyConnected {
    /// `[units][inputs]`.
    pub weights: Vec<f32>,
    pub bias: Option<Vec<f32>>,
    pub units: usize,
    pub inputs: usize,
    pub keep_num_dims: bool,
    pub activation: Activation,
}

impl FullyConnected {
    pub fn run(&self, input: &Array) -> Result<Array, String> {
        if self.inputs == 0 || input.len() % self.inputs != 0 {
            return Err(format!(
                "input of shape {:?} does not split into rows of {}",
                input.shape, self.inputs
            ));
        }
        let rows = input.len() / self.inputs;
        let mut out = vec![0.0f32; rows * self.units];
        matmul_bt(
            &input.data,
            &self.weights,
            self.bias.as_deref(),
            &mut out,
            rows,
            self.inputs,
            self.units,
        );
        self.activation.apply(&mut out);
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
        let fc = FullyConnected {
            weights: vec![1.0, 2.0, 3.0, -1.0, 0.0, 1.0],
            bias: Some(vec![0.5, -10.0]),
            units: 2,
            inputs: 3,
            keep_num_dims: false,
            activation: Activation::Relu,
        };
        let out = fc
            .run(&Array::new(vec![1, 1, 1, 3], vec![1.0, 1.0, 2.0]))
            .unwrap();
        assert_eq!(out.shape, vec![1, 2]);
        assert_eq!(out.data, vec![9.5, 0.0]);
    }
}
