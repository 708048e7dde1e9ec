//! The encoders as pipeline sinks: H.264 MP4 with the source's audio, or a PNG sequence.

use crate::video::audio::AudioHandling;
use crate::video::encode::{Mp4Summary, Mp4Writer};
use crate::video::png_sequence::PngSequenceWriter;
use crate::video::Frame;

use super::stages::{FrameSink, SinkSummary, StageError};

impl FrameSink for Mp4Writer {
    fn write_frame(&mut self, frame: &Frame) -> Result<(), StageError> {
        Ok(self.write(frame)?)
    }

    fn finish(self: Box<Self>) -> Result<SinkSummary, StageError> {
        let summary = Mp4Writer::finish(*self)?;
        Ok(describe_mp4(summary))
    }
}

fn describe_mp4(summary: Mp4Summary) -> SinkSummary {
    let audio = match &summary.audio {
        AudioHandling::None => "no audio".to_string(),
        AudioHandling::Copied { codec } => format!("audio copied ({codec})"),
        AudioHandling::Reencoded { from } => format!("audio re-encoded to AAC from {from}"),
    };
    SinkSummary {
        detail: format!(
            "H.264 MP4 {}x{}, {} frames, {audio}",
            summary.encoded_width, summary.encoded_height, summary.frames
        ),
        path: summary.path,
        frames: summary.frames,
    }
}

impl FrameSink for PngSequenceWriter {
    fn write_frame(&mut self, frame: &Frame) -> Result<(), StageError> {
        self.write(frame)?;
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<SinkSummary, StageError> {
        let summary = PngSequenceWriter::finish(*self)?;
        Ok(SinkSummary {
            detail: format!("PNG sequence, {} frames (no audio)", summary.frames),
            path: summary.dir,
            frames: summary.frames,
        })
    }
}
