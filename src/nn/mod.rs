//! Layers and kernels the networks are built from: linear, conv2d, 3×3 convs, group norm,
//! attention, and the CPU helpers under them.

pub mod attention;
mod attention_avx512;
pub mod conv2d;
pub mod conv3x3;
pub(crate) mod cpu;
pub mod fused_attention;
pub mod group_norm;
pub(crate) mod kernels;
pub(crate) mod layers;
pub(crate) mod linear;
pub mod tensor_diff;
