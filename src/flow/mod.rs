//! Dense optical flow on video frames (classical, no weights).
//!
//! Used by temporal conditioning (flow-warped latent init, TemporalNet's warped previous
//! frame) and by `rotoscope score` (warp error). The estimator is a coarse-to-fine dense
//! Lucas–Kanade with iterative warping: at every pyramid level the second image is warped by
//! the current flow and a Gaussian-windowed 2×2 least-squares system gives the update.
//! Texture-less regions keep the flow propagated from coarser levels (Tikhonov term), and a
//! median filter after each level removes outliers.

mod dense_lk;
mod field;
mod occlusion;
mod plane;
mod warp;

pub use dense_lk::{estimate_flow, FlowParams};
pub use field::FlowField;
pub use occlusion::consistency_mask;
pub use plane::Plane;
pub use warp::{warp_plane, warp_rgb};
