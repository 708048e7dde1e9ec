//! Command-line errors and the exit-code policy.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | the program failed (internal error, missing FFmpeg encoder, not yet available, ...) |
//! | 2 | bad user input: missing / unreadable / invalid input file, bad preset (also a `detail:` section the rest of the preset cannot serve), bad flag value, output exists without `--force`, unwritable output |
//!
//! The binary prints one line, `error: <what>: <why>`, naming the file, field or frame.
//! [`exit_code`] decides the code by looking through the error's chain for the library's
//! error types; add a line there when a new error type can come from user input.

use std::path::PathBuf;

use crate::detail::DetailError;
use crate::preset::PresetError;
use crate::render::pipeline::PipelineError;
use crate::render::plan::PlanError;
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
        if let Some(e) = cause.downcast_ref::<CliError>() {
            return code(e.is_bad_input());
        }
        if cause.downcast_ref::<PresetError>().is_some()
            || cause.downcast_ref::<PlanError>().is_some()
        {
            return EXIT_BAD_INPUT;
        }
        if let Some(e) = cause.downcast_ref::<VideoError>() {
            return code(video_error_is_bad_input(e));
        }
        // A detail section the preset cannot serve (no openpose ControlNet for it), bad
        // keypoint files; not a failing model or a frame without keypoints (our bug).
        if let Some(e) = cause.downcast_ref::<DetailError>() {
            return code(e.is_bad_input());
        }
        if let Some(e) = cause.downcast_ref::<PipelineError>() {
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
