//! The layers the networks are built from (linear, conv2d, 3×3 convs, group norm, attention,
//! feed-forward), each with a fast CPU kernel from [`kernels`] and a portable path of candle
//! ops chosen by [`path`].

pub mod attention;
pub mod budget;
pub mod conv2d;
pub mod conv3x3;
pub mod feed_forward;
pub mod group_norm;
pub mod kernels;
pub(crate) mod layers;
pub mod linear;
pub mod path;
pub mod precision;
pub mod tensor_diff;
pub(crate) mod weights;

pub use budget::AttentionBudget;
pub use path::{kernel_path, with_kernel_path, KernelPath};
pub use precision::{weight_precision, with_weight_precision, WeightPrecision};
