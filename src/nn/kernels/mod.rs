//! The hand-written CPU kernels under the layers of [`crate::nn`]: `std::arch`, gemm and
//! run-time-dispatched vector code over contiguous f32 host memory. Nothing here knows about
//! layers or weights; each layer in `nn/` calls its kernel when
//! [`crate::nn::path::use_fast_kernel`] says so and otherwise runs its portable candle path.

#[cfg(target_arch = "x86_64")]
mod attention_avx512;
pub(crate) mod conv3x3;
pub(crate) mod cpu;
pub mod fused_attention;
pub(crate) mod geglu;
pub mod gemm_bf16;
#[cfg(target_arch = "x86_64")]
mod gemm_bf16_avx512;
pub(crate) mod group_norm;
pub(crate) mod im2col;
pub(crate) mod linear;
pub(crate) mod simd;
