//! A `.tflite` reader and interpreter for the MediaPipe pose / hand / face models.
//!
//! Why not TensorFlow: the models are small, use a dozen builtin ops, and the project must
//! run without TensorFlow or ONNX tooling. The file is read with a hand-written, bounds-checked
//! FlatBuffers reader ([`flatbuffer`]) over just the `schema.fbs` tables we need ([`schema`])
//! rather than committed `flatc` output: ~10 tables by slot number are less code to review than
//! thousands of generated lines, and every read is checked (generated Rust accessors are unsafe
//! without a verifier pass).
//!
//! Execution: constant weights are decoded once at load (float16 → f32, sparse → dense; the
//! DEQUANTIZE / DENSIFY ops that do this in TFLite are folded away). Ops then run on dense
//! f32 NHWC arrays with dedicated kernels ([`kernels`]): convolutions as im2col + GEMM through
//! the `gemm` crate (candle's own CPU matmul kernel), depthwise convolutions as a direct loop
//! over contiguous channels. This is the documented alternative to running each op as candle
//! tensor ops: candle 0.11 has no depthwise kernel (grouped conv splits into one conv per
//! channel), no zero PAD op on NHWC, no half-pixel bilinear resize, and its NCHW convs would
//! need a transpose around every layer. Inputs and outputs are candle [`Tensor`]s.
//!
//! Supported builtin ops: ADD, SUB, MUL, DIV, MAXIMUM, MINIMUM (broadcasting), AVERAGE_POOL_2D,
//! MAX_POOL_2D, CONCATENATION, CONV_2D, DEPTHWISE_CONV_2D (any depth multiplier),
//! DEPTH_TO_SPACE, DEQUANTIZE (float16), DENSIFY, FULLY_CONNECTED, LOGISTIC, MEAN, PAD, PRELU,
//! RELU, RELU6, RELU_N1_TO_1, TANH, RESHAPE, RESIZE_BILINEAR; fused activations NONE, RELU,
//! RELU_N1_TO_1, RELU6, TANH. Anything else fails at load, naming the file and the operator.
//!
//! [`Tensor`]: candle_core::Tensor

pub mod array;
pub mod builtin;
pub mod error;
pub mod flatbuffer;
pub mod kernels;
pub mod model;
pub mod ops;
pub mod padding;
pub mod schema;
pub mod sparsity;

pub use array::Array;
pub use error::TfliteError;
pub use model::{TensorInfo, TfliteModel};
