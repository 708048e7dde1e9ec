//! Errors of the video module. Every variant names the file it is about, and the frame
//! index where one is involved, so a message alone tells the user what to fix.

use std::ops::Range;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum VideoError {
    #[error("{}: file not found", path.display())]
    NotFound { path: PathBuf },

    #[error("{}: not a video file ({reason})", path.display())]
    NotAVideo { path: PathBuf, reason: String },

    #[error("{}: contains no video stream (streams: {streams})", path.display())]
    NoVideoStream { path: PathBuf, streams: String },

    #[error("{}: the video stream has no frames", path.display())]
    ZeroFrames { path: PathBuf },

    #[error("{}: no decoder for video codec {codec:?} in this FFmpeg build", path.display())]
    UnsupportedCodec { path: PathBuf, codec: String },

    /// The file ends early. `frame` is the first output frame that cannot be decoded,
    /// when the damage could be located.
    #[error(
        "{}: file is truncated or damaged{}: {detail}",
        path.display(),
        frame.map(|f| format!(" from frame {f} on")).unwrap_or_default()
    )]
    Truncated {
        path: PathBuf,
        frame: Option<u64>,
        detail: String,
    },

    #[error("{}: decoding failed at frame {frame}: {source}", path.display())]
    DecodeFailed {
        path: PathBuf,
        frame: u64,
        #[source]
        source: ffmpeg_next::Error,
    },

    #[error(
        "{}: frame range {}..{} is outside the video's {frame_count} frames (or empty)",
        path.display(), range.start, range.end
    )]
    InvalidRange {
        path: PathBuf,
        range: Range<u64>,
        frame_count: u64,
    },

    #[error("{}: {reason}", path.display())]
    InvalidSettings { path: PathBuf, reason: String },

    #[error("{}: already exists (use --force to overwrite)", path.display())]
    OutputExists { path: PathBuf },

    #[error("{}: cannot write output: {reason}", path.display())]
    Unwritable { path: PathBuf, reason: String },

    #[error(
        "{}: frame {frame} is {got_width}x{got_height} with {got_bytes} bytes, expected {width}x{height} RGB24",
        path.display()
    )]
    FrameMismatch {
        path: PathBuf,
        frame: u64,
        width: u32,
        height: u32,
        got_width: u32,
        got_height: u32,
        got_bytes: usize,
    },

    #[error("{}: no frames were written; nothing to save", path.display())]
    NothingWritten { path: PathBuf },

    #[error("{}: FFmpeg has no {name} encoder (Debian's libavcodec59 provides it)", path.display())]
    EncoderMissing { path: PathBuf, name: String },

    #[error("{}: {context}: {source}", path.display())]
    Ffmpeg {
        path: PathBuf,
        context: String,
        #[source]
        source: ffmpeg_next::Error,
    },

    #[error("{}: {context}: {source}", path.display())]
    Io {
        path: PathBuf,
        context: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{}: PNG encoding of frame {frame} failed: {source}", path.display())]
    Png {
        path: PathBuf,
        frame: u64,
        #[source]
        source: image::ImageError,
    },
}

impl VideoError {
    pub(crate) fn ffmpeg(
        path: impl Into<PathBuf>,
        context: impl Into<String>,
        source: ffmpeg_next::Error,
    ) -> Self {
        Self::Ffmpeg {
            path: path.into(),
            context: context.into(),
            source,
        }
    }

    pub(crate) fn io(
        path: impl Into<PathBuf>,
        context: impl Into<String>,
        source: std::io::Error,
    ) -> Self {
        Self::Io {
            path: path.into(),
            context: context.into(),
            source,
        }
    }

    /// The file the error is about.
    pub fn path(&self) -> &std::path::Path {
        match self {
            Self::NotFound { path }
            | Self::NotAVideo { path, .. }
            | Self::NoVideoStream { path, .. }
            | Self::ZeroFrames { path }
            | Self::UnsupportedCodec { path, .. }
            | Self::Truncated { path, .. }
            | Self::DecodeFailed { path, .. }
            | Self::InvalidRange { path, .. }
            | Self::InvalidSettings { path, .. }
            | Self::OutputExists { path }
            | Self::Unwritable { path, .. }
            | Self::FrameMismatch { path, .. }
            | Self::NothingWritten { path }
            | Self::EncoderMissing { path, .. }
            | Self::Ffmpeg { path, .. }
            | Self::Io { path, .. }
            | Self::Png { path, .. } => path,
        }
    }
}
