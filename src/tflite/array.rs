//! The interpreter's working value: a dense, row-major f32 array (NHWC for images).

/// Dense row-major f32 data with its shape. Activations and float constants are `Array`s;
/// integer constants (shapes, paddings, axes) are kept apart as `Vec<i32>`.
#[derive(Debug, Clone, PartialEq)]
pub struct Array {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl Array {
    /// Panics if `data` does not match `shape` (a kernel bug, never user input).
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        assert_eq!(
            shape.iter().product::<usize>(),
            data.len(),
            "array data does not match shape {shape:?}"
        );
        Array { shape, data }
    }

    pub fn zeros(shape: Vec<usize>) -> Self {
        let n = shape.iter().product();
        Array {
            shape,
            data: vec![0.0; n],
        }
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// `(n, h, w, c)` of a rank-4 NHWC array.
    pub fn nhwc(&self) -> Option<(usize, usize, usize, usize)> {
        match self.shape[..] {
            [n, h, w, c] => Some((n, h, w, c)),
            _ => None,
        }
    }
}
