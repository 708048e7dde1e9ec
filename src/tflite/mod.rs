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
//! DEQUANTIZE / DENSIFY ops that do this in TFLite are folded away, as is any op on constants
//! only), zero spatial PADs are folded into the VALID conv that reads them, and the remaining
//! ops run in file order on dense f32 NHWC arrays with dedicated kernels ([`kernels`]). This
//! is the documented alternative to running each op as candle tensor ops: candle 0.11 has no
//! depthwise kernel (grouped conv runs one conv per channel), no zero PAD on NHWC, no
//! half-pixel bilinear resize, and its NCHW convs would need a transpose around every layer;
//! its CPU matmul (the `gemm` crate) also spends most of its time re-packing weights for these
//! small layer shapes. Instead:
//! - CONV_2D / FULLY_CONNECTED: weights packed once into 32-channel panels, a register-tiled
//!   GEMM reads NHWC rows in place (1×1 convs) or im2col rows, bias and clamp activations
//!   fused into the store ([`kernels::packed_gemm`]); convs with < 4 output channels use the
//!   depthwise tap kernel per channel and a channel sum.
//! - DEPTHWISE_CONV_2D: all taps of 8-vector blocks of an output row accumulate in registers
//!   ([`kernels::taps`]).
//! - Hot loops run under `pulp`'s runtime CPU dispatch (AVX-512 here, scalar elsewhere: the
//!   crate is built with gemm-common's pulp features so no dependency is rebuilt), and output
//!   rows are spread over rayon's pool.
//!
//! Inputs and outputs are candle [`Tensor`]s ([`TfliteModel::run`]); [`TfliteModel::run_arrays`]
//! skips the conversion and [`TfliteModel::profile`] times each operator.
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
pub use model::{OpTiming, TensorInfo, TfliteModel};
