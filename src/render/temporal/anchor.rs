//! The anchor frame: one frame of the clip (its first rendered frame, or `temporal.anchor:
//! N`) rendered once, whose keys/values every other frame's cross-frame attention sees, so
//! that the style does not drift from batch to batch. Its output is cached in the work
//! directory; a resumed render re-runs only its denoising pass (to rebuild the attention
//! cache, which is deterministic) and takes the image from disk.
//!
//! The anchor's input is read on its own (a seek to frame N and a fresh set of
//! preprocessors), independently of the stream of batches, so it is the same whichever batch
//! a render starts or resumes at.

use std::path::{Path, PathBuf};

use crate::pipeline::stages::{PreparedFrame, Preprocessor, StageError};
use crate::video::{Frame, ReadOptions, VideoError, VideoReader};

#[derive(Debug, thiserror::Error)]
pub enum AnchorError {
    #[error("anchor frame {index} of {}: {source}", path.display())]
    Video {
        path: PathBuf,
        index: u64,
        #[source]
        source: Box<VideoError>,
    },
    #[error("anchor frame {index} of {}: the clip ended before it", path.display())]
    Missing { path: PathBuf, index: u64 },
    #[error("anchor frame {index}: preprocess ({name})")]
    Preprocess {
        index: u64,
        name: String,
        #[source]
        source: StageError,
    },
}

/// The anchor frame's rendered output, at the render size; `output.index` is its input
/// frame index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedAnchor {
    pub output: Frame,
}

impl RenderedAnchor {
    pub fn index(&self) -> u64 {
        self.output.index
    }
}

/// Decode input frame `index` of `path` (on the grid `options` describe; `options.frames` is
/// replaced) and run `preprocessors` on it.
pub fn read_prepared_frame(
    path: &Path,
    options: &ReadOptions,
    index: u64,
    preprocessors: &mut [Box<dyn Preprocessor>],
) -> Result<PreparedFrame, AnchorError> {
    let video_err = |source| AnchorError::Video {
        path: path.to_path_buf(),
        index,
        source: Box::new(source),
    };
    let options = ReadOptions {
        frames: Some(index..index + 1),
        ..options.clone()
    };
    let mut reader = VideoReader::open_with(path, options).map_err(video_err)?;
    let frame = reader
        .next()
        .ok_or_else(|| AnchorError::Missing {
            path: path.to_path_buf(),
            index,
        })?
        .map_err(video_err)?;
    let mut prepared = PreparedFrame::new(frame);
    for pre in preprocessors.iter_mut() {
        pre.process(&mut prepared)
            .map_err(|source| AnchorError::Preprocess {
                index,
                name: pre.name().to_string(),
                source,
            })?;
    }
    Ok(prepared)
}
