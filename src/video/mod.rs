//! Video in and out: decoding any file Debian's FFmpeg 5.1 reads into upright RGB frames
//! on a constant-rate grid, and writing H.264 MP4 (with the source's audio) or PNG
//! sequences. See the submodules for the policies (frame timing, rotation, odd sizes,
//! audio, damaged files).

pub mod audio;
pub mod decode;
pub mod encode;
pub mod error;
pub mod frame;
pub mod input;
pub mod orientation;
pub mod output;
pub mod png_sequence;
pub mod probe;
pub mod rational;
mod scale;
pub mod timing;

pub use audio::AudioHandling;
pub use decode::{ReadOptions, VideoReader};
pub use encode::{frames_to_seconds, Mp4Settings, Mp4Summary, Mp4Writer};
pub use error::VideoError;
pub use frame::Frame;
pub use png_sequence::{PngSequenceSummary, PngSequenceWriter};
pub use probe::{probe, probe_with, VideoInfo};
pub use rational::Rational;
pub use scale::even_size;
