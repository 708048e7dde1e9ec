//! Temporal-consistency conditioning for frame-by-frame rendering (docs/ARCHITECTURE.md, "Temporal-consistency conditioning"): what ties
//! frame t to the frames before it and to the clip's anchor frame.
//!
//! * [`temporalnet`]: the control image of a TemporalNet ControlNet, the previous output
//!   frame, optionally warped to frame t by the input's optical flow;
//! * [`flow_init`]: the img2img start image of frame t, the previous output warped by the
//!   input's flow (where the flow is trusted);
//! * [`cross_frame`]: a self-attention hook that lets every frame attend to the anchor
//!   frame's and the previous frame's keys/values at the same denoising step;
//! * [`anchor`]: which frame is the anchor, and its rendered output;
//! * [`input_flow`]: the optical flow between consecutive input frames, shared by the above;
//! * [`settings`]: the preset's `temporal` section.
//!
//! Everything here is deterministic and depends only on u8 frames (the previous output as
//! written to disk, the input frames), so a resumed render rebuilds exactly the state an
//! uninterrupted one had at a batch start.

pub mod anchor;
pub mod cross_frame;
pub mod flow_init;
pub mod input_flow;
pub mod temporalnet;
