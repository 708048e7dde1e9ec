//! Command-line errors and the exit-code policy.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | the program failed (internal error, missing FFmpeg encoder, not yet available, ...) |
//! | 2 | bad user input: missing / unreadable / invalid input file, bad preset (also a `detail:` section the rest of the preset cannot serve), bad flag value, output exists without `--force`, unwritable output, model files missing (offline), invalid jobs file |
//!
//! The binary prints one line, `error: <what>: <why>`, naming the file, field or frame.
//! [`exit_code`] decides the code by looking through the error's chain for the library's
//! error types; add a line there when a new error type can come from user input.

use std::path::PathBuf;

use crate::app::batch::JobsFileError;
use crate::app::error::JobInputError;
use crate::app::job::ModelsMissing;
use crate::detail::DetailError;
use crate::pipeline::plan::PlanError;
use crate::pipeline::runner::PipelineError;
use crate::preset::PresetError;
use crate::render::temporal::anchor::AnchorError;
use crate::video::VideoError;

pub const EXIT_FAILURE: u8 = 1;
pub const EXIT_BAD_INPUT: u8 = 2;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{flag} {value}: {reason}")]
    BadFlag {
        flag: &'static str,
        value: String,
        reason: String,
    },
    #[error("{}: already exists (use --force to overwrite)", path.display())]
    OutputExists { path: PathBuf },
    #[error("{}: cannot write output: {reason}", path.display())]
    OutputUnwritable { path: PathBuf, reason: String },
    #[error("`rotoscope {command}` is not yet available in this build ({area})")]
    NotYetAvailable {
        command: &'static str,
        area: &'static str,
    },
}

impl CliError {
    fn is_bad_input(&self) -> bool {
        !matches!(self, CliError::NotYetAvailable { .. })
    }
}

/// Whether a video error is the user's file or flag being wrong (vs. our or FFmpeg's failure).
pub fn video_error_is_bad_input(err: &VideoError) -> bool {
    match err {
        VideoError::NotFound { .. }
        | VideoError::NotAVideo { .. }
        | VideoError::NoVideoStream { .. }
        | VideoError::ZeroFrames { .. }
        | VideoError::UnsupportedCodec { .. }
        | VideoError::Truncated { .. }
        | VideoError::DecodeFailed { .. }
        | VideoError::InvalidRange { .. }
        | VideoError::InvalidSettings { .. }
        | VideoError::OutputExists { .. }
        | VideoError::Unwritable { .. } => true,
        VideoError::FrameMismatch { .. }
        | VideoError::NothingWritten { .. }
        | VideoError::EncoderMissing { .. }
        | VideoError::Ffmpeg { .. }
        | VideoError::Io { .. }
        | VideoError::Png { .. } => false,
    }
}

/// The process exit code for an error (see the module docs). The first error in the chain
/// whose type decides wins; an error no known type claims is a failure (1).
pub fn exit_code(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if let Some(e) = downcast::<CliError>(cause) {
            return code(e.is_bad_input());
        }
        if downcast::<PresetError>(cause).is_some()
            || downcast::<PlanError>(cause).is_some()
            || downcast::<ModelsMissing>(cause).is_some()
            || downcast::<JobInputError>(cause).is_some()
            || downcast::<JobsFileError>(cause).is_some()
        {
            return EXIT_BAD_INPUT;
        }
        if let Some(e) = downcast::<VideoError>(cause) {
            return code(video_error_is_bad_input(e));
        }
        // A detail section the preset cannot serve (no openpose ControlNet for it), bad
        // keypoint files; not a failing model or a frame without keypoints (our bug).
        if let Some(e) = downcast::<DetailError>(cause) {
            return code(e.is_bad_input());
        }
        if let Some(e) = downcast::<AnchorError>(cause) {
            match e {
                // `temporal.anchor: N` past the clip's end.
                AnchorError::Missing { .. } => return EXIT_BAD_INPUT,
                // The video's or preprocessor's own error (next in the chain) decides.
                AnchorError::Video { .. } | AnchorError::Preprocess { .. } => continue,
            }
        }
        if let Some(e) = downcast::<PipelineError>(cause) {
            match e {
                // An input with fewer frames than it declares, or none at all.
                PipelineError::InputEndedEarly { .. } | PipelineError::NoFrames => {
                    return EXIT_BAD_INPUT
                }
                // The stage's own error (next in the chain) decides.
                PipelineError::Decode { .. }
                | PipelineError::Preprocess { .. }
                | PipelineError::Render { .. }
                | PipelineError::Detail { .. }
                | PipelineError::Encode { .. }
                | PipelineError::Finish { .. } => continue,
                _ => return EXIT_FAILURE,
            }
        }
    }
    EXIT_FAILURE
}

/// `cause` as a `T`, also when it is a `Box<T>`: a `#[source] Box<T>` field shows up in the
/// chain as the box itself (it implements `Error`), which `downcast_ref::<T>` does not see.
fn downcast<'a, T: std::error::Error + 'static>(
    cause: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    cause
        .downcast_ref::<T>()
        .or_else(|| cause.downcast_ref::<Box<T>>().map(|boxed| &**boxed))
}

fn code(bad_input: bool) -> u8 {
    if bad_input {
        EXIT_BAD_INPUT
    } else {
        EXIT_FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn user_errors_exit_2_wherever_they_sit_in_the_chain() {
        let preset = PresetError::Parse {
            origin: "p.yaml".into(),
            line: 1,
            column: 1,
            field: String::new(),
            message: "x".into(),
        };
        let err = Err::<(), _>(preset).context("loading preset").unwrap_err();
        assert_eq!(exit_code(&err), 2);

        let truncated = VideoError::Truncated {
            path: "in.mp4".into(),
            frame: Some(3),
            detail: "cut".into(),
        };
        let err = anyhow::Error::new(PipelineError::Decode {
            frame: 3,
            source: Box::new(truncated),
        })
        .context("rendering in.mp4");
        assert_eq!(exit_code(&err), 2);

        let err = anyhow::Error::new(PipelineError::InputEndedEarly {
            got: 1,
            expected: 2,
        });
        assert_eq!(exit_code(&err), 2);
        let err = anyhow::Error::new(CliError::OutputExists {
            path: "o.mp4".into(),
        });
        assert_eq!(exit_code(&err), 2);

        // A preset detailing hands with the openpose ControlNet it does not have, found
        // while rendering: the message names the preset field.
        let err = anyhow::Error::new(PipelineError::Detail {
            name: "face-hands".into(),
            batch: 0,
            source: Box::new(DetailError::NoOpenposeControlNet { section: "hands" }),
        })
        .context("rendering in.mp4");
        assert_eq!(exit_code(&err), 2);
        assert!(
            format!("{err:#}").contains("detail.hands.controlnet"),
            "{err:#}"
        );
    }

    #[test]
    fn anchor_frame_errors_follow_their_cause() {
        let in_render = |anchor: AnchorError| {
            anyhow::Error::new(PipelineError::Render {
                renderer: "sd15".into(),
                batch: 0,
                start: 0,
                end: 8,
                source: Box::new(anchor),
            })
            .context("rendering in.mp4")
        };
        let undecodable = AnchorError::Video {
            path: "in.mp4".into(),
            index: 40,
            source: Box::new(VideoError::DecodeFailed {
                path: "in.mp4".into(),
                frame: 40,
                source: ffmpeg_next::Error::InvalidData,
            }),
        };
        assert_eq!(exit_code(&in_render(undecodable)), 2);
        let past_the_end = AnchorError::Missing {
            path: "in.mp4".into(),
            index: 400,
        };
        assert_eq!(exit_code(&in_render(past_the_end)), 2);
        let io_failure = AnchorError::Video {
            path: "in.mp4".into(),
            index: 0,
            source: Box::new(VideoError::Io {
                path: "in.mp4".into(),
                context: "reading".into(),
                source: std::io::Error::other("disk"),
            }),
        };
        assert_eq!(exit_code(&in_render(io_failure)), 1);
    }

    #[test]
    fn program_failures_exit_1() {
        let err = anyhow::Error::new(CliError::NotYetAvailable {
            command: "still",
            area: "x",
        });
        assert_eq!(exit_code(&err), 1);
        let err = anyhow::Error::new(PipelineError::Panicked {
            stage: "render",
            message: "x".into(),
        });
        assert_eq!(exit_code(&err), 1);
        let missing = VideoError::EncoderMissing {
            path: "o.mp4".into(),
            name: "libx264".into(),
        };
        let err = anyhow::Error::new(PipelineError::Finish {
            source: Box::new(missing),
        });
        assert_eq!(exit_code(&err), 1);
        assert_eq!(exit_code(&anyhow::anyhow!("something else")), 1);
        // A frame the pose preprocessor never saw is the pipeline's fault.
        let err = anyhow::Error::new(PipelineError::Detail {
            name: "face-hands".into(),
            batch: 2,
            source: Box::new(DetailError::NoKeypoints { frame: 17 }),
        });
        assert_eq!(exit_code(&err), 1);
    }
}
