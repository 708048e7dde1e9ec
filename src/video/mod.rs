//! Video in and out, on FFmpeg 5.1 (Debian's libav*) through `ffmpeg-next`.
//!
//! ```no_run
//! use rotoscope::video::{Mp4Settings, Mp4Writer, VideoReader};
//! # fn main() -> Result<(), rotoscope::video::VideoError> {
//! let reader = VideoReader::open("in.mov")?;
//! let info = reader.info().clone(); // exact frame count, upright size, output fps
//! let mut settings = Mp4Settings::new(info.width, info.height, info.fps);
//! settings.audio_source = Some("in.mov".into()); // copy its audio
//! let mut writer = Mp4Writer::create("out.mp4", settings)?;
//! for frame in reader {
//!     writer.write(&frame?)?; // tight RGB24, upright
//! }
//! writer.finish()?; // written as out.tmp.mp4, renamed now
//! # Ok(()) }
//! ```
//!
//! # Reading ([`VideoReader`], [`probe()`])
//! - Anything FFmpeg 5.1 demuxes and decodes: MP4/MOV/MKV/WebM/TS/AVI, H.264, HEVC
//!   (8/10-bit), VP9, ProRes, ... Cover art streams are never taken for the video.
//! - Frames are on a constant-rate grid (default: the stream's average rate, snapped to
//!   a standard rate such as 24000/1001 when close; see [`rational::choose_output_fps`];
//!   override with [`ReadOptions::fps`]). Variable-frame-rate input is mapped exactly as
//!   FFmpeg's `fps` filter does (duplicates over gaps, drops on crowding; tests compare
//!   pixel for pixel), see [`timing`].
//! - [`VideoInfo::frame_count`] is exact before decoding starts: opening scans all packets
//!   once (demux only) and the iterator yields exactly that many frames.
//! - Frames are upright: the display matrix (or a legacy `rotate` tag) is applied, so a
//!   portrait phone clip yields portrait frames ([`orientation`]). Pixels are stored
//!   pixels (non-square pixel aspect ratios are not resampled); interlaced video is
//!   not deinterlaced.
//! - YUV→RGB uses the stream's tagged matrix and range (untagged: BT.709 from 720 lines
//!   up, BT.601 below, as players assume).
//! - Frame ranges ([`ReadOptions::frames`], `A..B` on the output grid) seek to the last
//!   keyframe before `A`; frames keep their index on the whole clip's grid.
//! - Damaged input, no panics: see [`decode`] and [`VideoError`] (`NotFound`,
//!   `NotAVideo`, `NoVideoStream`, `ZeroFrames`, `UnsupportedCodec`, `Truncated { frame }`,
//!   `DecodeFailed { frame }`, ...). Every error names the file, and the frame where one
//!   is involved.
//! - Memory is flat: one decoded picture waits for its slot; nothing grows with length.
//!
//! # Writing ([`Mp4Writer`], [`PngSequenceWriter`])
//! - H.264 (libx264) yuv420p MP4, CRF and preset from [`Mp4Settings`], BT.709 tagged,
//!   `+faststart`. Odd sizes are padded by one repeated column/row (yuv420p needs even
//!   sizes; see [`encode`]).
//! - Audio from [`Mp4Settings::audio_source`]: copied without re-encoding when MP4 holds
//!   the codec (AAC, MP3, AC-3, E-AC-3, Opus, ALAC), else re-encoded to AAC (PCM, FLAC,
//!   Vorbis, ...); cut to [`Mp4Settings::audio_range`] for partial renders
//!   ([`frames_to_seconds`]). See [`audio`].
//! - Outputs are written under a temporary name and renamed when complete; an existing
//!   target is refused unless `overwrite` (`--force`); an unfinished writer that is
//!   dropped leaves nothing behind. PNG sequences are `frame_000123.png`, each file
//!   written under a temporary name too.
//!
//! FFmpeg's own log goes to stderr at level "error"; set `ROTOSCOPE_FFMPEG_LOG`
//! (quiet, warning, info, verbose, debug) to change it.

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
pub use decode::VideoReader;
pub use encode::{frames_to_seconds, Mp4Settings, Mp4Summary, Mp4Writer};
pub use error::VideoError;
pub use frame::Frame;
pub use png_sequence::{PngSequenceSummary, PngSequenceWriter};
pub use probe::{probe, probe_with, ReadOptions, VideoInfo};
pub use scale::even_size;
