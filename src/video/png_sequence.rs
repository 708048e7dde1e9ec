//! Writing frames as a numbered PNG sequence (`frame_000123.png`, numbered by
//! [`Frame::index`]).
//!
//! Each file is written under a temporary name and renamed, so a crash never leaves a
//! half-written PNG that looks finished. A directory that already holds a sequence is
//! refused unless `overwrite`, in which case the old `frame_*.png` files are removed
//! first (a shorter new sequence must not inherit stale frames).

use std::fs::{self, File};
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::{ExtendedColorType, ImageEncoder};

use super::error::VideoError;
use super::frame::Frame;
use super::input::absolute;
use super::output::write_atomically;

/// File name of frame `index` in a sequence directory.
pub fn frame_file_name(index: u64) -> String {
    format!("frame_{index:06}.png")
}

fn is_sequence_file(name: &str) -> bool {
    name.strip_prefix("frame_")
        .and_then(|rest| {
            rest.strip_suffix(".tmp.png")
                .or_else(|| rest.strip_suffix(".png"))
        })
        .is_some_and(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
}

/// What [`PngSequenceWriter::finish`] produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PngSequenceSummary {
    pub dir: PathBuf,
    pub frames: u64,
}

/// Writes frames into a directory as PNG files.
#[derive(Debug)]
pub struct PngSequenceWriter {
    dir: PathBuf,
    frames: u64,
}

impl PngSequenceWriter {
    /// Uses (and creates if needed) `dir`. Refuses a directory that already holds
    /// `frame_*.png` files unless `overwrite`.
    pub fn create(dir: impl AsRef<Path>, overwrite: bool) -> Result<Self, VideoError> {
        let dir = absolute(dir.as_ref());
        match fs::metadata(&dir) {
            Ok(meta) if !meta.is_dir() => {
                return Err(VideoError::Unwritable {
                    path: dir,
                    reason: "it exists and is not a directory".into(),
                })
            }
            Ok(_) => {
                let existing = sequence_files(&dir)?;
                if !existing.is_empty() {
                    if !overwrite {
                        return Err(VideoError::OutputExists { path: dir });
                    }
                    for file in existing {
                        fs::remove_file(&file).map_err(|e| VideoError::Unwritable {
                            path: dir.clone(),
                            reason: format!("cannot remove old {}: {e}", file.display()),
                        })?;
                    }
                }
            }
            Err(_) => fs::create_dir_all(&dir).map_err(|e| VideoError::Unwritable {
                path: dir.clone(),
                reason: format!("cannot create the directory: {e}"),
            })?,
        }
        Ok(Self { dir, frames: 0 })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes `frame` as `frame_<index>.png`; returns the file's path.
    pub fn write(&mut self, frame: &Frame) -> Result<PathBuf, VideoError> {
        let path = self.dir.join(frame_file_name(frame.index));
        if !frame.is_consistent() {
            return Err(VideoError::FrameMismatch {
                path,
                frame: frame.index,
                width: frame.width,
                height: frame.height,
                got_width: frame.width,
                got_height: frame.height,
                got_bytes: frame.data.len(),
            });
        }
        // A resumed render replaces the frames its interrupted run wrote.
        write_atomically(&path, true, |temp| write_png(temp, frame))?;
        self.frames += 1;
        Ok(path)
    }

    /// Ends the sequence.
    pub fn finish(self) -> Result<PngSequenceSummary, VideoError> {
        Ok(PngSequenceSummary {
            dir: self.dir,
            frames: self.frames,
        })
    }
}

/// One frame as an RGB PNG at `path` (fast compression: sequences and work directories are
/// intermediate files, written at render speed).
pub fn write_png(path: &Path, frame: &Frame) -> Result<(), VideoError> {
    let file = File::create(path).map_err(|e| VideoError::Unwritable {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let encoder = PngEncoder::new_with_quality(
        BufWriter::new(file),
        CompressionType::Fast,
        FilterType::Adaptive,
    );
    encoder
        .write_image(
            &frame.data,
            frame.width,
            frame.height,
            ExtendedColorType::Rgb8,
        )
        .map_err(|source| VideoError::Png {
            path: path.to_path_buf(),
            frame: frame.index,
            source,
        })
}

fn sequence_files(dir: &Path) -> Result<Vec<PathBuf>, VideoError> {
    let entries = fs::read_dir(dir).map_err(|e| VideoError::io(dir, "cannot list directory", e))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| VideoError::io(dir, "cannot list directory", e))?;
        if entry.file_name().to_str().is_some_and(is_sequence_file) {
            files.push(entry.path());
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(index: u64, value: u8) -> Frame {
        Frame::new(index, 3, 2, vec![value; 18]).unwrap()
    }

    #[test]
    fn names() {
        assert_eq!(frame_file_name(123), "frame_000123.png");
        assert_eq!(frame_file_name(1_234_567), "frame_1234567.png");
        assert!(is_sequence_file("frame_000001.png"));
        assert!(is_sequence_file("frame_000001.tmp.png"));
        assert!(!is_sequence_file("frame_.png"));
        assert!(!is_sequence_file("frame_12a.png"));
        assert!(!is_sequence_file("notes.png"));
    }

    #[test]
    fn writes_readable_pngs_and_guards_existing_sequences() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("seq");
        let mut writer = PngSequenceWriter::create(&dir, false).unwrap();
        for i in 5..8 {
            writer.write(&frame(i, i as u8 * 10)).unwrap();
        }
        let summary = writer.finish().unwrap();
        assert_eq!(summary.frames, 3);
        let img = image::open(dir.join("frame_000006.png")).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (3, 2));
        assert_eq!(img.get_pixel(2, 1).0, [60, 60, 60]);
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 3, "no temporary files left: {names:?}");

        assert!(matches!(
            PngSequenceWriter::create(&dir, false),
            Err(VideoError::OutputExists { .. })
        ));
        fs::write(dir.join("keep.txt"), b"user file").unwrap();
        let mut writer = PngSequenceWriter::create(&dir, true).unwrap();
        writer.write(&frame(0, 1)).unwrap();
        assert!(
            !dir.join("frame_000005.png").exists(),
            "stale frames removed"
        );
        assert!(dir.join("keep.txt").exists(), "other files untouched");
    }

    #[test]
    fn refuses_a_file_as_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("f");
        fs::write(&file, b"").unwrap();
        assert!(matches!(
            PngSequenceWriter::create(&file, true),
            Err(VideoError::Unwritable { .. })
        ));
    }
}
