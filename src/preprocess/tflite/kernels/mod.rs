//! NHWC f32 kernels of the supported TFLite builtin ops. Each kernel is a pure function of
//! its input arrays and static parameters; large loops run on rayon's pool and matrix
//! products go through `gemm`.

pub mod activation;
pub mod binary;
pub mod conv;
pub mod depthwise;
pub mod fully_connected;
pub mod gemm;
pub mod pool;
pub mod reduce;
pub mod resize;
pub mod shape;
