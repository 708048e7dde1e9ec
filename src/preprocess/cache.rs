//! On-disk cache of per-frame preprocessing results, so that a rerun (or a rerender) skips
//! frames already done with the same input and settings.
//!
//! Layout: one directory per cache (the `preprocess` output directory, or a render's work
//! directory), holding for each stage `STAGE_000123.png`, `STAGE_000123_keypoints.json`, ...
//! and a manifest `.STAGE.cache.json` with the key those files were made with. The key is
//! a hash of
//! * the **input fingerprint**: SHA-256 of the file size, modification time and the first and
//!   last MiB. Hashing a whole multi-gigabyte clip would take longer than preprocessing a
//!   short one; an edit, re-encode, truncation or replacement changes the size, the time or
//!   the container's head/tail (MP4 `moov`, MKV cues), so a stale hit needs the same size,
//!   mtime, head and tail — not something that happens by accident;
//! * the **stage settings** (everything that changes the output, including model identity
//!   and map size), given by the caller as text;
//! * [`CACHE_VERSION`], bumped when an algorithm changes its output.
//!
//! The frame index is the file name. A frame counts as done when all of its files exist;
//! each file is written under a temporary name and renamed, so an interrupted run never
//! leaves a half-written frame that looks done. When the key changes, the stage's old frame
//! files are deleted before anything new is written.

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Bump when preprocessing output changes for the same input and settings.
pub const CACHE_VERSION: u32 = 1;

const EDGE_BYTES: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("{}: cannot fingerprint input: {source}", path.display())]
    Fingerprint {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: cache I/O failed: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CacheError + '_ {
    move |source| CacheError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The quick content fingerprint of a file (see the module docs), as hex.
pub fn fingerprint_file(path: &Path) -> Result<String, CacheError> {
    let err = |source| CacheError::Fingerprint {
        path: path.to_path_buf(),
        source,
    };
    let mut file = fs::File::open(path).map_err(err)?;
    let meta = file.metadata().map_err(err)?;
    let len = meta.len();
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| (d.as_secs(), d.subsec_nanos()))
        .unwrap_or((0, 0));

    let mut hash = Sha256::new();
    hash.update(b"rotoscope input fingerprint v1\0");
    hash.update(len.to_le_bytes());
    hash.update(mtime.0.to_le_bytes());
    hash.update(mtime.1.to_le_bytes());
    let mut buf = vec![0u8; EDGE_BYTES.min(len) as usize];
    file.read_exact(&mut buf).map_err(err)?;
    hash.update(&buf);
    if len > EDGE_BYTES {
        let tail = EDGE_BYTES.min(len - EDGE_BYTES);
        file.seek(SeekFrom::Start(len - tail)).map_err(err)?;
        let mut buf = vec![0u8; tail as usize];
        file.read_exact(&mut buf).map_err(err)?;
        hash.update(&buf);
    }
    Ok(hex::encode(hash.finalize()))
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CacheError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    fs::write(&tmp, bytes).map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Manifest {
    version: u32,
    stage: String,
    key: String,
    input: String,
    settings: String,
}

/// The cache of one stage (e.g. `"pose"`) in one directory.
#[derive(Debug, Clone)]
pub struct StageCache {
    dir: PathBuf,
    stage: String,
    suffixes: Vec<String>,
    /// Whether the manifest matched: frames on disk are valid.
    reused: bool,
}

impl StageCache {
    /// Opens (creating `dir` if needed) the cache of `stage`, whose frames consist of one file
    /// per suffix (`".png"`, `"_keypoints.json"`). Frames made with another key are deleted.
    pub fn open(
        dir: &Path,
        stage: &str,
        suffixes: &[&str],
        input_fingerprint: &str,
        settings: &str,
    ) -> Result<Self, CacheError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let mut hash = Sha256::new();
        for part in [
            &CACHE_VERSION.to_string(),
            stage,
            input_fingerprint,
            settings,
        ] {
            hash.update(part.as_bytes());
            hash.update([0u8]);
        }
        let manifest = Manifest {
            version: CACHE_VERSION,
            stage: stage.to_string(),
            key: hex::encode(hash.finalize()),
            input: input_fingerprint.to_string(),
            settings: settings.to_string(),
        };
        let mut cache = StageCache {
            dir: dir.to_path_buf(),
            stage: stage.to_string(),
            suffixes: suffixes.iter().map(|s| s.to_string()).collect(),
            reused: false,
        };
        let manifest_path = cache.manifest_path();
        let existing = fs::read(&manifest_path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Manifest>(&b).ok());
        if existing.as_ref() == Some(&manifest) {
            cache.reused = true;
        } else {
            cache.remove_frames()?;
            let text = serde_json::to_vec_pretty(&manifest).expect("manifest serialises");
            write_atomic(&manifest_path, &text)?;
        }
        Ok(cache)
    }

    fn manifest_path(&self) -> PathBuf {
        self.dir.join(format!(".{}.cache.json", self.stage))
    }

    /// Whether existing frames were made with the same key.
    pub fn reused(&self) -> bool {
        self.reused
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `DIR/STAGE_000123SUFFIX`.
    pub fn path(&self, frame: u64, suffix: &str) -> PathBuf {
        self.dir.join(format!("{}_{frame:06}{suffix}", self.stage))
    }

    /// Whether every file of `frame` is present.
    pub fn is_done(&self, frame: u64) -> bool {
        self.suffixes.iter().all(|s| self.path(frame, s).is_file())
    }

    /// Writes one file of `frame`.
    pub fn write(&self, frame: u64, suffix: &str, bytes: &[u8]) -> Result<(), CacheError> {
        write_atomic(&self.path(frame, suffix), bytes)
    }

    /// Deletes this stage's frame files (exactly `STAGE_<digits><suffix>`, nothing else).
    fn remove_frames(&self) -> Result<(), CacheError> {
        let entries = fs::read_dir(&self.dir).map_err(io_err(&self.dir))?;
        let prefix = format!("{}_", self.stage);
        for entry in entries {
            let entry = entry.map_err(io_err(&self.dir))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some(rest) = name.strip_prefix(&prefix) else {
                continue;
            };
            let digits = rest.chars().take_while(|c| c.is_ascii_digit()).count();
            let ours = digits >= 6
                && self
                    .suffixes
                    .iter()
                    .any(|s| &rest[digits..] == s || rest[digits..] == format!("{s}.tmp"));
            if ours {
                let path = entry.path();
                fs::remove_file(&path).map_err(io_err(&path))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_changes_with_content_and_size() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.bin");
        fs::write(&a, vec![7u8; 3 << 20]).unwrap();
        let fa = fingerprint_file(&a).unwrap();
        assert_eq!(fa, fingerprint_file(&a).unwrap());
        assert_eq!(fa.len(), 64);
        // A change in the last MiB is seen.
        let mut data = vec![7u8; 3 << 20];
        *data.last_mut().unwrap() = 8;
        let b = dir.path().join("b.bin");
        fs::write(&b, &data).unwrap();
        let mtime = fs::metadata(&a).unwrap().modified().unwrap();
        fs::File::options()
            .write(true)
            .open(&b)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        assert_ne!(fa, fingerprint_file(&b).unwrap());
        // Small files are hashed whole.
        let c = dir.path().join("c.bin");
        fs::write(&c, b"abc").unwrap();
        assert_ne!(fingerprint_file(&c).unwrap(), fa);
        assert!(fingerprint_file(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn frames_survive_same_key_and_are_dropped_on_new_key() {
        let dir = tempfile::tempdir().unwrap();
        let suffixes = [".png", "_keypoints.json"];
        let c = StageCache::open(dir.path(), "pose", &suffixes, "in1", "s1").unwrap();
        assert!(!c.reused());
        c.write(3, ".png", b"png").unwrap();
        assert!(!c.is_done(3), "only one of two files");
        c.write(3, "_keypoints.json", b"{}").unwrap();
        assert!(c.is_done(3) && !c.is_done(4));
        assert_eq!(c.path(3, ".png"), dir.path().join("pose_000003.png"));
        fs::write(dir.path().join("notes.txt"), b"mine").unwrap();
        fs::write(dir.path().join("softedge_000003.png"), b"other stage").unwrap();

        let again = StageCache::open(dir.path(), "pose", &suffixes, "in1", "s1").unwrap();
        assert!(again.reused() && again.is_done(3));

        let changed = StageCache::open(dir.path(), "pose", &suffixes, "in1", "s2").unwrap();
        assert!(!changed.reused() && !changed.is_done(3));
        assert!(dir.path().join("notes.txt").exists());
        assert!(dir.path().join("softedge_000003.png").exists());

        let other_input = StageCache::open(dir.path(), "pose", &suffixes, "in2", "s2").unwrap();
        assert!(!other_input.reused());
    }
}
