//! Errors of a job's inputs and outputs that are the user's to fix (exit code 2): a value
//! that does not fit (a frame range past the clip's end, an output that is not an .mp4),
//! an output that exists or cannot be written.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum JobInputError {
    /// `what` names the flag or jobs-file field (`--frames`, `-o`).
    #[error("{what} {value}: {reason}")]
    BadValue {
        what: &'static str,
        value: String,
        reason: String,
    },
    #[error("{}: already exists (use --force to overwrite)", path.display())]
    OutputExists { path: PathBuf },
    #[error("{}: cannot write output: {reason}", path.display())]
    OutputUnwritable { path: PathBuf, reason: String },
}
