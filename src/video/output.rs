//! Writing outputs safely: never clobber without permission, never leave half a file
//! under the final name.
//!
//! A file is written to `<stem>.tmp.<ext>` next to the target and renamed onto it when
//! complete (a rename within one directory is atomic). Dropping an unfinished output
//! removes the temporary file.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use super::error::VideoError;
use super::input::absolute;

/// `clip.mp4` → `clip.tmp.mp4`; `clip` → `clip.tmp`.
pub fn temp_path_for(target: &Path) -> PathBuf {
    let stem = target
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "output".into());
    let name = match target.extension() {
        Some(ext) => format!("{stem}.tmp.{}", ext.to_string_lossy()),
        None => format!("{stem}.tmp"),
    };
    target.with_file_name(name)
}

/// Checks that `target` may be written (it does not exist, or `overwrite`; its directory
/// exists and is writable).
pub(crate) fn check_target(target: &Path, overwrite: bool) -> Result<(), VideoError> {
    match fs::metadata(target) {
        Ok(meta) if meta.is_dir() => {
            return Err(VideoError::Unwritable {
                path: target.to_path_buf(),
                reason: "it is a directory".into(),
            })
        }
        Ok(_) if !overwrite => {
            return Err(VideoError::OutputExists {
                path: target.to_path_buf(),
            })
        }
        _ => {}
    }
    let parent = parent_dir(target);
    match fs::metadata(&parent) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(VideoError::Unwritable {
            path: target.to_path_buf(),
            reason: format!("{} is not a directory", parent.display()),
        }),
        Err(e) => Err(VideoError::Unwritable {
            path: target.to_path_buf(),
            reason: format!("directory {} is not usable: {e}", parent.display()),
        }),
    }
}

fn parent_dir(target: &Path) -> PathBuf {
    match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Writes `target` complete or not at all: `write` fills the temporary file next to it, which
/// is then renamed onto `target` (an existing one is replaced only when `overwrite`). Returns
/// the target's absolute path.
pub fn write_atomically(
    target: &Path,
    overwrite: bool,
    write: impl FnOnce(&Path) -> Result<(), VideoError>,
) -> Result<PathBuf, VideoError> {
    let pending = PendingFile::create(target, overwrite)?;
    write(pending.temp())?;
    pending.commit()
}

/// A file being written under a temporary name.
#[derive(Debug)]
pub(crate) struct PendingFile {
    target: PathBuf,
    temp: PathBuf,
    overwrite: bool,
    committed: bool,
}

impl PendingFile {
    /// Checks the target and creates the (empty) temporary file, so permission problems
    /// show up now, with the OS's reason.
    pub fn create(target: &Path, overwrite: bool) -> Result<Self, VideoError> {
        let target = absolute(target);
        check_target(&target, overwrite)?;
        let temp = temp_path_for(&target);
        File::create(&temp).map_err(|e| VideoError::Unwritable {
            path: target.clone(),
            reason: format!("cannot create {}: {e}", temp.display()),
        })?;
        Ok(Self {
            target,
            temp,
            overwrite,
            committed: false,
        })
    }

    pub fn target(&self) -> &Path {
        &self.target
    }

    pub fn temp(&self) -> &Path {
        &self.temp
    }

    /// Moves the finished temporary file onto the target.
    pub fn commit(mut self) -> Result<PathBuf, VideoError> {
        if !self.overwrite && self.target.exists() {
            // Someone created the target while we were writing.
            return Err(VideoError::OutputExists {
                path: self.target.clone(),
            });
        }
        fs::rename(&self.temp, &self.target).map_err(|e| VideoError::Unwritable {
            path: self.target.clone(),
            reason: format!("cannot rename {} onto it: {e}", self.temp.display()),
        })?;
        self.committed = true;
        Ok(self.target.clone())
    }
}

impl Drop for PendingFile {
    fn drop(&mut self) {
        if !self.committed {
            match fs::remove_file(&self.temp) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                // Nothing better to do in a destructor; the name makes the leftover obvious.
                Err(_) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names() {
        assert_eq!(
            temp_path_for(Path::new("/a/clip.mp4")),
            Path::new("/a/clip.tmp.mp4")
        );
        assert_eq!(temp_path_for(Path::new("clip")), Path::new("clip.tmp"));
        assert_eq!(
            temp_path_for(Path::new("x/my.clip.mov")),
            Path::new("x/my.clip.tmp.mov")
        );
    }

    #[test]
    fn commit_renames_and_drop_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.mp4");
        let pending = PendingFile::create(&target, false).unwrap();
        let temp = pending.temp().to_path_buf();
        assert!(temp.exists());
        fs::write(&temp, b"data").unwrap();
        assert_eq!(pending.commit().unwrap(), target);
        assert_eq!(fs::read(&target).unwrap(), b"data");
        assert!(!temp.exists());

        // Exists now: refused without overwrite, accepted with it.
        assert!(matches!(
            PendingFile::create(&target, false),
            Err(VideoError::OutputExists { .. })
        ));
        let pending = PendingFile::create(&target, true).unwrap();
        let temp = pending.temp().to_path_buf();
        drop(pending);
        assert!(!temp.exists());
        assert_eq!(fs::read(&target).unwrap(), b"data");
    }

    #[test]
    fn bad_targets() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            PendingFile::create(dir.path(), true),
            Err(VideoError::Unwritable { .. })
        ));
        let missing = dir.path().join("no/such/dir/out.mp4");
        assert!(matches!(
            PendingFile::create(&missing, false),
            Err(VideoError::Unwritable { .. })
        ));
        let file = dir.path().join("file");
        fs::write(&file, b"").unwrap();
        assert!(matches!(
            PendingFile::create(&file.join("out.mp4"), false),
            Err(VideoError::Unwritable { .. })
        ));
    }
}
