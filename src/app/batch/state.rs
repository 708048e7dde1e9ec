//! Which jobs of a jobs file are finished: `<jobs>.state.json` next to the jobs file records,
//! per output, the settings key of the job that wrote it and the output's size and
//! modification time right after.
//!
//! A job is skipped only when its output exists, was written by a job with the same key
//! (input fingerprint, preset fingerprint after the job's overrides, frame range, renderer
//! version) and is unchanged since. A changed job renders again over its own old output; an
//! output the record does not account for (no record, or changed since) was made by something
//! else and is only overwritten with `--force`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::preprocess::cache::{write_atomic, CacheError};

const STATE_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{}: cannot read the batch state: {reason}", path.display())]
    Read { path: PathBuf, reason: String },
    #[error("{}: cannot write the batch state: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: CacheError,
    },
}

/// Size and modification time of an output (for a PNG-sequence directory: of its files).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputStamp {
    pub bytes: u64,
    pub files: u64,
    /// Latest modification time, in nanoseconds since the Unix epoch.
    pub modified_ns: u64,
}

impl OutputStamp {
    /// The stamp of `path`, or `None` when it does not exist.
    pub fn of(path: &Path) -> Option<Self> {
        let meta = std::fs::metadata(path).ok()?;
        let nanos = |m: &std::fs::Metadata| {
            m.modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos() as u64)
        };
        if !meta.is_dir() {
            return Some(Self {
                bytes: meta.len(),
                files: 1,
                modified_ns: nanos(&meta),
            });
        }
        let mut stamp = Self {
            bytes: 0,
            files: 0,
            modified_ns: 0,
        };
        for entry in std::fs::read_dir(path).ok()?.flatten() {
            if let Ok(meta) = entry.metadata() {
                if meta.is_file() {
                    stamp.bytes += meta.len();
                    stamp.files += 1;
                    stamp.modified_ns = stamp.modified_ns.max(nanos(&meta));
                }
            }
        }
        Some(stamp)
    }
}

/// The record of one finished job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinishedJob {
    pub name: String,
    /// [`job_key`] of the job that wrote the output.
    pub key: String,
    pub stamp: OutputStamp,
    pub frames: u64,
    /// Rendered with tiny random test models.
    #[serde(default)]
    pub test_weights: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct StateFile {
    version: u32,
    /// By output path (as the jobs file resolves it).
    outputs: BTreeMap<String, FinishedJob>,
}

/// What to do with a job whose settings key is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Render; `overwrite` when an existing output may be replaced (our own older output,
    /// or `--force`).
    Render { overwrite: bool },
    /// Finished by an earlier run with the same settings.
    Skip(FinishedJob),
    /// The output exists and this batch did not write it (or it changed since).
    Foreign,
}

/// The state of one jobs file.
#[derive(Debug)]
pub struct BatchState {
    path: PathBuf,
    file: StateFile,
}

/// `jobs.yaml` → `jobs.state.json`, next to it.
pub fn state_path(jobs_file: &Path) -> PathBuf {
    jobs_file.with_extension("state.json")
}

/// Hex SHA-256 of everything that decides a job's output, as text parts.
pub fn job_key(parts: &[&str]) -> String {
    let mut hash = Sha256::new();
    for part in parts {
        hash.update((part.len() as u64).to_le_bytes());
        hash.update(part.as_bytes());
    }
    hex::encode(hash.finalize())
}

impl BatchState {
    /// The state at `path` (empty when the file does not exist).
    pub fn load(path: &Path) -> Result<Self, StateError> {
        let file = match std::fs::read_to_string(path) {
            Ok(text) => {
                let file: StateFile =
                    serde_json::from_str(&text).map_err(|e| StateError::Read {
                        path: path.to_path_buf(),
                        reason: e.to_string(),
                    })?;
                if file.version == STATE_VERSION {
                    file
                } else {
                    // Another format: nothing in it can be trusted to mean "finished".
                    StateFile::default()
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => StateFile::default(),
            Err(e) => {
                return Err(StateError::Read {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                })
            }
        };
        Ok(Self {
            path: path.to_path_buf(),
            file,
        })
    }

    /// See [`Decision`].
    pub fn decide(&self, output: &Path, key: &str, force: bool) -> Decision {
        let Some(stamp) = OutputStamp::of(output) else {
            return Decision::Render { overwrite: force };
        };
        let record = self.file.outputs.get(&output_key(output));
        match record {
            Some(done) if done.stamp == stamp && done.key == key && !force => {
                Decision::Skip(done.clone())
            }
            // Our own output, for other settings (or --force): render it again.
            Some(done) if done.stamp == stamp => Decision::Render { overwrite: true },
            _ if force => Decision::Render { overwrite: true },
            _ => Decision::Foreign,
        }
    }

    /// Record a finished job and write the state file.
    pub fn record(
        &mut self,
        output: &Path,
        name: &str,
        key: &str,
        frames: u64,
        test_weights: bool,
    ) -> Result<(), StateError> {
        if let Some(stamp) = OutputStamp::of(output) {
            self.file.outputs.insert(
                output_key(output),
                FinishedJob {
                    name: name.to_string(),
                    key: key.to_string(),
                    stamp,
                    frames,
                    test_weights,
                },
            );
        }
        self.file.version = STATE_VERSION;
        // Serializing plain data cannot fail.
        let text = serde_json::to_string_pretty(&self.file).unwrap_or_default();
        write_atomic(&self.path, text.as_bytes()).map_err(|source| StateError::Write {
            path: self.path.clone(),
            source,
        })
    }
}

fn output_key(output: &Path) -> String {
    output
        .to_string_lossy()
        .trim_end_matches(['/', '\\'])
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finished_changed_and_foreign_outputs() {
        let dir = tempfile::tempdir().unwrap();
        let state_file = state_path(&dir.path().join("jobs.yaml"));
        assert_eq!(state_file, dir.path().join("jobs.state.json"));
        let out = dir.path().join("a.mp4");
        let key = job_key(&["input", "preset"]);
        assert_ne!(key, job_key(&["inputp", "reset"]), "parts are delimited");

        let mut state = BatchState::load(&state_file).unwrap();
        assert_eq!(
            state.decide(&out, &key, false),
            Decision::Render { overwrite: false }
        );
        std::fs::write(&out, b"video").unwrap();
        state.record(&out, "a", &key, 3, false).unwrap();

        let state = BatchState::load(&state_file).unwrap();
        match state.decide(&out, &key, false) {
            Decision::Skip(done) => assert_eq!((done.name.as_str(), done.frames), ("a", 3)),
            other => panic!("{other:?}"),
        }
        // Changed settings: our own output is rendered again; --force renders anyway.
        let other_key = job_key(&["input", "other preset"]);
        assert_eq!(
            state.decide(&out, &other_key, false),
            Decision::Render { overwrite: true }
        );
        assert_eq!(
            state.decide(&out, &key, true),
            Decision::Render { overwrite: true }
        );
        // Rewritten by something else: not ours any more.
        std::fs::write(&out, b"another video").unwrap();
        assert_eq!(state.decide(&out, &key, false), Decision::Foreign);
        assert_eq!(
            state.decide(&out, &key, true),
            Decision::Render { overwrite: true }
        );
        let never = dir.path().join("b.mp4");
        std::fs::write(&never, b"x").unwrap();
        assert_eq!(state.decide(&never, &key, false), Decision::Foreign);
    }

    #[test]
    fn png_directories_are_stamped_by_their_files() {
        let dir = tempfile::tempdir().unwrap();
        let seq = dir.path().join("seq");
        std::fs::create_dir(&seq).unwrap();
        std::fs::write(seq.join("frame_000000.png"), b"12").unwrap();
        let first = OutputStamp::of(&seq).unwrap();
        assert_eq!((first.bytes, first.files), (2, 1));
        std::fs::write(seq.join("frame_000001.png"), b"345").unwrap();
        assert_ne!(OutputStamp::of(&seq).unwrap(), first);
        assert!(OutputStamp::of(&dir.path().join("none")).is_none());
    }

    #[test]
    fn an_unreadable_state_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.state.json");
        std::fs::write(&path, "{not json").unwrap();
        let err = BatchState::load(&path).unwrap_err().to_string();
        assert!(err.contains("jobs.state.json"), "{err}");
    }
}
