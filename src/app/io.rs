//! The job's input and output: the input opened as the preset and the frame selection
//! ask, the output checked before any work starts, and the sink the frames go to.

use std::ops::Range;
use std::path::Path;

use crate::app::args::{FrameSelection, OutputTarget};
use crate::app::error::JobInputError;
use crate::app::job::RenderJob;
use crate::pipeline::stages::FrameSink;
use crate::video::encode::{frames_to_seconds, Mp4Settings, Mp4Writer};
use crate::video::png_sequence::PngSequenceWriter;
use crate::video::{probe_with, ReadOptions, VideoInfo, VideoReader};

/// The frames `--frames` selects from a clip described by `whole`; `None` = all of them.
pub fn frame_range(
    whole: &VideoInfo,
    frames: Option<FrameSelection>,
) -> Result<Option<Range<u64>>, JobInputError> {
    let Some(selection) = frames else {
        return Ok(None);
    };
    let range = selection
        .resolve(whole.frame_count)
        .map_err(|reason| JobInputError::BadValue {
            what: "--frames",
            value: selection.to_string(),
            reason,
        })?;
    Ok(Some(range))
}

/// Open the input the way the preset and `--frames` ask; also the whole clip's frame count.
/// Without `--frames` the reader's own scan is the only pass over the file; with it, a probe
/// first finds the clip's length.
pub fn open_input(
    input: &Path,
    options: &ReadOptions,
    frames: Option<FrameSelection>,
) -> anyhow::Result<(VideoReader, u64)> {
    let mut options = options.clone();
    let mut clip_frames = None;
    if frames.is_some() {
        let whole = probe_with(input, &options)?;
        clip_frames = Some(whole.frame_count);
        options.frames = frame_range(&whole, frames)?;
    }
    // The video module refuses inputs without frames (VideoError::ZeroFrames).
    let reader = VideoReader::open_with(input, options)?;
    let clip_frames = clip_frames.unwrap_or(reader.info().frame_count);
    Ok((reader, clip_frames))
}

/// Refuse outputs we must not write before any decoding work starts.
pub fn check_output(target: &OutputTarget, input: &Path, force: bool) -> anyhow::Result<()> {
    let path = target.path();
    if let (Ok(out), Ok(inp)) = (path.canonicalize(), input.canonicalize()) {
        if out == inp {
            return Err(JobInputError::OutputUnwritable {
                path: path.to_path_buf(),
                reason: "it is the input file".into(),
            }
            .into());
        }
    }
    match target {
        OutputTarget::Mp4(path) => {
            let extension = path
                .extension()
                .map(|e| e.to_string_lossy().to_ascii_lowercase());
            if !matches!(extension.as_deref(), Some("mp4" | "m4v" | "mov")) {
                return Err(JobInputError::BadValue {
                    what: "-o",
                    value: path.display().to_string(),
                    reason: "the output must be an .mp4 file, or a directory (ending in /) \
                             for a PNG sequence"
                        .into(),
                }
                .into());
            }
            if path.exists() && !force {
                return Err(JobInputError::OutputExists {
                    path: path.to_path_buf(),
                }
                .into());
            }
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                let unwritable = |reason: String| JobInputError::OutputUnwritable {
                    path: path.to_path_buf(),
                    reason,
                };
                if parent.exists() && !parent.is_dir() {
                    return Err(
                        unwritable(format!("{} is not a directory", parent.display())).into(),
                    );
                }
                std::fs::create_dir_all(parent).map_err(|e| {
                    unwritable(format!("cannot create directory {}: {e}", parent.display()))
                })?;
            }
            Ok(())
        }
        // The PNG writer refuses a directory holding a sequence unless --force.
        OutputTarget::PngSequence(_) => Ok(()),
    }
}

/// Where the frames go: an MP4 writer (with the source's audio under the frames) or a PNG
/// sequence (which a resumed render may overwrite).
pub fn create_sink(
    target: &OutputTarget,
    job: &RenderJob,
    info: &VideoInfo,
    (width, height): (u32, u32),
    resuming: bool,
) -> anyhow::Result<Box<dyn FrameSink>> {
    Ok(match target {
        OutputTarget::Mp4(path) => {
            let mut settings = Mp4Settings::new(width, height, info.fps);
            settings.crf = job.preset.output.crf as f32;
            settings.preset = job.preset.output.encoder_preset.clone();
            settings.overwrite = job.force;
            if info.has_audio {
                settings.audio_source = Some(job.input.clone());
                // With --frames, only the audio under the selected frames; otherwise the
                // whole track, as long as it is.
                if job.frames.is_some() {
                    let frames = info.start_frame..info.start_frame + info.frame_count;
                    settings.audio_range = Some(frames_to_seconds(&frames, info.fps));
                }
            }
            Box::new(Mp4Writer::create(path, settings)?)
        }
        OutputTarget::PngSequence(dir) => {
            Box::new(PngSequenceWriter::create(dir, job.force || resuming)?)
        }
    })
}
