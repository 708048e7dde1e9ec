//! NHWC f32 kernels of the supported TFLite builtin ops. Each kernel is a pure function of
//! its input arrays and static parameters prepared at load; large loops run on rayon's
//! pool, and the hot inner loops (GEMM tiles, depthwise taps) use `pulp`'s runtime SIMD
//! dispatch.

pub mod activation;
pub mod binary;
pub mod conv;
pub mod depthwise;
pub mod fully_connected;
pub mod packed_gemm;
pub mod parallel;
pub mod pool;
pub mod reduce;
pub mod resize;
pub mod shape;
pub mod taps;
