//! Values several commands and jobs take: a frame selection (`--frames`, a job's
//! `frames`) and an output target (`-o`, a job's `output`).

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// `--frames A..B`: frames A (inclusive) to B (exclusive) of the input, counted from 0 at
/// the clip's frame rate. Either end may be left out: `100..` or `..48`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameSelection {
    pub start: Option<u64>,
    pub end: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "expected a frame range like 10..50, 10.. or ..50 (start inclusive, end exclusive), got {0:?}"
)]
pub struct FrameSelectionParseError(pub String);

impl FromStr for FrameSelection {
    type Err = FrameSelectionParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = || FrameSelectionParseError(text.to_string());
        let (start, end) = text.trim().split_once("..").ok_or_else(err)?;
        let bound = |s: &str| -> Result<Option<u64>, FrameSelectionParseError> {
            let s = s.trim();
            if s.is_empty() {
                Ok(None)
            } else {
                s.parse().map(Some).map_err(|_| err())
            }
        };
        let (start, end) = (bound(start)?, bound(end)?);
        if let (Some(s), Some(e)) = (start, end) {
            if s >= e {
                return Err(err());
            }
        }
        Ok(Self { start, end })
    }
}

impl fmt::Display for FrameSelection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(s) = self.start {
            write!(f, "{s}")?;
        }
        f.write_str("..")?;
        if let Some(e) = self.end {
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl FrameSelection {
    /// The concrete range within a clip of `frame_count` frames, or why it does not fit.
    pub fn resolve(&self, frame_count: u64) -> Result<Range<u64>, String> {
        let start = self.start.unwrap_or(0);
        let end = self.end.unwrap_or(frame_count);
        if end > frame_count {
            return Err(format!("the input has only {frame_count} frames"));
        }
        if start >= end {
            return Err(format!(
                "selects no frames (the input has {frame_count} frames)"
            ));
        }
        Ok(start..end)
    }
}

/// What `-o` names: an MP4 file, or a directory for a PNG sequence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutputTarget {
    Mp4(PathBuf),
    PngSequence(PathBuf),
}

impl OutputTarget {
    /// A path ending in `/` or naming an existing directory is a PNG sequence directory;
    /// anything else is an MP4 file.
    pub fn from_arg(path: &Path) -> Self {
        let text = path.as_os_str().to_string_lossy();
        if text.ends_with('/') || path.is_dir() {
            OutputTarget::PngSequence(path.to_path_buf())
        } else {
            OutputTarget::Mp4(path.to_path_buf())
        }
    }

    pub fn path(&self) -> &Path {
        match self {
            OutputTarget::Mp4(p) | OutputTarget::PngSequence(p) => p,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(text: &str) -> Result<FrameSelection, FrameSelectionParseError> {
        text.parse()
    }

    #[test]
    fn parses_closed_and_open_ranges() {
        assert_eq!(
            sel("10..50").unwrap(),
            FrameSelection {
                start: Some(10),
                end: Some(50)
            }
        );
        assert_eq!(
            sel("10..").unwrap(),
            FrameSelection {
                start: Some(10),
                end: None
            }
        );
        assert_eq!(
            sel("..50").unwrap(),
            FrameSelection {
                start: None,
                end: Some(50)
            }
        );
        assert_eq!(
            sel("..").unwrap(),
            FrameSelection {
                start: None,
                end: None
            }
        );
        assert_eq!(sel(" 3 .. 4 ").unwrap().to_string(), "3..4");
    }

    #[test]
    fn rejects_malformed_and_empty_ranges() {
        for bad in [
            "", "10", "10-50", "a..b", "-1..5", "50..10", "5..5", "1...4",
        ] {
            assert!(sel(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn resolves_against_the_clip_length() {
        assert_eq!(sel("..").unwrap().resolve(72), Ok(0..72));
        assert_eq!(sel("10..").unwrap().resolve(72), Ok(10..72));
        assert_eq!(sel("..20").unwrap().resolve(72), Ok(0..20));
        assert!(sel("..73")
            .unwrap()
            .resolve(72)
            .unwrap_err()
            .contains("only 72 frames"));
        assert!(sel("72..").unwrap().resolve(72).is_err());
    }

    #[test]
    fn output_kind_from_the_path() {
        assert_eq!(
            OutputTarget::from_arg(Path::new("out.mp4")),
            OutputTarget::Mp4("out.mp4".into())
        );
        assert_eq!(
            OutputTarget::from_arg(Path::new("frames/")),
            OutputTarget::PngSequence("frames/".into())
        );
        let dir = std::env::temp_dir();
        assert!(matches!(
            OutputTarget::from_arg(&dir),
            OutputTarget::PngSequence(_)
        ));
    }
}
