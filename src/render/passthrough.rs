//! The renderer used until the Stable Diffusion renderer exists: every frame comes out as
//! it went in. It exercises the whole pipeline (decode, batching, blending, encode, audio).

use crate::pipeline::plan::Batch;
use crate::video::Frame;

use crate::pipeline::stages::{FrameRenderer, PreparedFrame, StageError};

#[derive(Debug, Default, Clone, Copy)]
pub struct PassThroughRenderer;

impl FrameRenderer for PassThroughRenderer {
    fn name(&self) -> &str {
        "passthrough"
    }

    fn output_size(&self, input_width: u32, input_height: u32) -> (u32, u32) {
        (input_width, input_height)
    }

    fn render_batch(
        &mut self,
        _batch: &Batch,
        frames: &[PreparedFrame],
    ) -> Result<Vec<Frame>, StageError> {
        Ok(frames.iter().map(|f| f.source.clone()).collect())
    }
}
