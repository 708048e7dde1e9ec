//! The jobs file of `rotoscope batch`: YAML with unknown keys rejected and errors located as
//! `file:line:column: field.path: message`, like presets.
//!
//! ```yaml
//! defaults:                 # optional: any job setting below except name, input, output
//!   preset: presets/smoke.yaml
//!   seed: 7
//! jobs:
//!   - name: intro           # optional (default: the output's file name); unique
//!     input: clips/intro.mp4
//!     output: out/intro.mp4 # .mp4, or a directory ending in / for a PNG sequence
//!     preset: anime         # a preset file, or a bundled preset's name
//!     prompt: "..."         # replaces the preset's prompt
//!     negative_prompt: "..."
//!     seed: 5               # replaces sampler.seed
//!     frames: "10..40"      # frames A (inclusive) to B (exclusive); "10.." and "..40" too
//!     work_dir: tmp/intro   # finished batches (default: OUTPUT.work)
//! ```
//!
//! Relative paths are resolved against the jobs file's folder. A preset that is neither an
//! existing file there nor a path (`anime`) names a bundled preset. Two jobs writing the same
//! output, or with the same name, are an error before anything runs.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Deserializer};

use crate::app::args::FrameSelection;
use crate::preset::{field_prefix, locate_yaml_error};

#[derive(Debug, thiserror::Error)]
pub enum JobsFileError {
    #[error("{}: cannot read the jobs file: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A syntax, type or unknown-key error, located in the file.
    #[error("{origin}:{line}:{column}: {}{message}", field_prefix(.field))]
    Parse {
        origin: String,
        line: usize,
        column: usize,
        field: String,
        message: String,
    },
    /// A rule broken across fields or jobs (found after parsing).
    #[error("{origin}: {field}: {message}")]
    Invalid {
        origin: String,
        field: String,
        message: String,
    },
}

/// Settings every job may give and `defaults` may supply.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSettings {
    /// Preset file or bundled preset name.
    pub preset: Option<String>,
    pub prompt: Option<String>,
    pub negative_prompt: Option<String>,
    pub seed: Option<u64>,
    #[serde(default, deserialize_with = "frame_selection")]
    pub frames: Option<FrameSelection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJob {
    name: Option<String>,
    input: PathBuf,
    output: PathBuf,
    work_dir: Option<PathBuf>,
    // The job's own settings (not `#[serde(flatten)]`: serde cannot deny unknown fields
    // through it).
    preset: Option<String>,
    prompt: Option<String>,
    negative_prompt: Option<String>,
    seed: Option<u64>,
    #[serde(default, deserialize_with = "frame_selection")]
    frames: Option<FrameSelection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJobsFile {
    #[serde(default)]
    defaults: JobSettings,
    jobs: Vec<RawJob>,
}

fn frame_selection<'de, D: Deserializer<'de>>(d: D) -> Result<Option<FrameSelection>, D::Error> {
    let text = Option::<String>::deserialize(d)?;
    text.map(|t| t.parse().map_err(serde::de::Error::custom))
        .transpose()
}

/// One job, with defaults applied and paths resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSpec {
    pub name: String,
    pub input: PathBuf,
    pub output: PathBuf,
    /// A preset file path, or a bundled preset's name.
    pub preset: PathBuf,
    pub prompt: Option<String>,
    pub negative_prompt: Option<String>,
    pub seed: Option<u64>,
    pub frames: Option<FrameSelection>,
    pub work_dir: Option<PathBuf>,
}

/// Read and check a jobs file.
pub fn load_jobs(path: &Path) -> Result<Vec<JobSpec>, JobsFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| JobsFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let base = path.parent().unwrap_or(Path::new(""));
    parse_jobs(&text, &path.display().to_string(), base)
}

/// Parse jobs from YAML `text`; `origin` names it in errors, `base` is the folder relative
/// paths start from.
pub fn parse_jobs(text: &str, origin: &str, base: &Path) -> Result<Vec<JobSpec>, JobsFileError> {
    let raw: RawJobsFile = serde_yaml_ng::from_str(text).map_err(|e| {
        let at = locate_yaml_error(&e);
        JobsFileError::Parse {
            origin: origin.to_string(),
            line: at.line,
            column: at.column,
            field: at.field,
            message: at.message,
        }
    })?;
    let invalid = |field: String, message: String| JobsFileError::Invalid {
        origin: origin.to_string(),
        field,
        message,
    };
    if raw.jobs.is_empty() {
        return Err(invalid("jobs".into(), "lists no job".into()));
    }
    let defaults = raw.defaults;
    let mut jobs = Vec::with_capacity(raw.jobs.len());
    let mut outputs: HashMap<PathBuf, usize> = HashMap::new();
    let mut names: HashMap<String, usize> = HashMap::new();
    for (i, job) in raw.jobs.into_iter().enumerate() {
        let field = |name: &str| format!("jobs[{i}].{name}");
        let output = normalize(&base.join(&job.output));
        let name = job.name.unwrap_or_else(|| {
            output
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| format!("job {}", i + 1))
        });
        if name.trim().is_empty() {
            return Err(invalid(field("name"), "must not be empty".into()));
        }
        if let Some(first) = outputs.insert(output.clone(), i) {
            return Err(invalid(
                field("output"),
                format!(
                    "{} is also the output of jobs[{first}]: two jobs would overwrite each other",
                    output.display()
                ),
            ));
        }
        if let Some(first) = names.insert(name.clone(), i) {
            return Err(invalid(
                field("name"),
                format!("{name:?} is also the name of jobs[{first}]; give each job its own name"),
            ));
        }
        let preset = job
            .preset
            .as_ref()
            .or(defaults.preset.as_ref())
            .ok_or_else(|| invalid(field("preset"), "missing (and no defaults.preset)".into()))?;
        // Keep the trailing `/` that makes an output a PNG-sequence directory.
        let output_text = job.output.to_string_lossy();
        let output = if output_text.ends_with('/') && !output.as_os_str().is_empty() {
            PathBuf::from(format!("{}/", output.display()))
        } else {
            output
        };
        jobs.push(JobSpec {
            name,
            input: base.join(&job.input),
            output,
            preset: resolve_preset(preset, base),
            prompt: job.prompt.or(defaults.prompt.clone()),
            negative_prompt: job.negative_prompt.or(defaults.negative_prompt.clone()),
            seed: job.seed.or(defaults.seed),
            frames: job.frames.or(defaults.frames),
            work_dir: job.work_dir.map(|w| base.join(w)),
        });
    }
    Ok(jobs)
}

/// A preset entry: a file next to the jobs file, an absolute path, or a bundled name.
fn resolve_preset(preset: &str, base: &Path) -> PathBuf {
    let path = Path::new(preset);
    let beside = base.join(path);
    let is_bare_name = path.components().count() == 1 && path.extension().is_none();
    if path.is_absolute() || (is_bare_name && !beside.exists()) {
        path.to_path_buf()
    } else {
        beside
    }
}

/// `a/./b/../c` → `a/c`, without touching the file system (outputs may not exist yet).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<JobSpec>, JobsFileError> {
        parse_jobs(text, "jobs.yaml", Path::new("/data"))
    }

    #[test]
    fn defaults_apply_and_paths_resolve_against_the_file() {
        let jobs = parse(
            "defaults: {preset: p/smoke.yaml, seed: 3, frames: '0..10'}\n\
             jobs:\n\
             - {input: a.mp4, output: out/a.mp4}\n\
             - name: second\n  input: /abs/b.mp4\n  output: out/b/\n  preset: anime\n  seed: 9\n  \
             frames: '5..'\n  prompt: a cat\n  work_dir: w\n",
        )
        .unwrap();
        assert_eq!(jobs.len(), 2);
        let a = &jobs[0];
        assert_eq!(a.name, "a.mp4");
        assert_eq!(a.input, Path::new("/data/a.mp4"));
        assert_eq!(a.output, Path::new("/data/out/a.mp4"));
        assert_eq!(a.preset, Path::new("/data/p/smoke.yaml"));
        assert_eq!(
            (a.seed, a.frames.unwrap().to_string()),
            (Some(3), "0..10".into())
        );
        let b = &jobs[1];
        assert_eq!(b.name, "second");
        assert_eq!(b.input, Path::new("/abs/b.mp4"));
        assert_eq!(b.output.to_string_lossy(), "/data/out/b/");
        assert_eq!(b.preset, Path::new("anime"), "a bundled preset's name");
        assert_eq!(
            (b.seed, b.frames.unwrap().to_string()),
            (Some(9), "5..".into())
        );
        assert_eq!(b.prompt.as_deref(), Some("a cat"));
        assert_eq!(b.work_dir.as_deref(), Some(Path::new("/data/w")));
    }

    #[test]
    fn errors_name_file_line_column_and_field() {
        let err = parse("jobs:\n  - input: a.mp4\n    output: a.mp4\n    preset: x\n    sed: 4\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("jobs.yaml:5:5: jobs[0]: unknown field `sed`"),
            "{err}"
        );

        let err = parse("jobs:\n  - {input: a.mp4, output: a.mp4, preset: x, frames: '9..3'}\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("jobs.yaml:2:"), "{err}");
        assert!(err.contains("frame range"), "{err}");

        let err = parse("jobs:\n  - {input: a.mp4, preset: x}\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing field `output`"), "{err}");
    }

    #[test]
    fn duplicate_outputs_names_and_missing_presets_are_refused() {
        let err = parse(
            "defaults: {preset: x}\njobs:\n  - {input: a.mp4, output: out/a.mp4}\n  \
             - {input: b.mp4, output: ./out/../out/a.mp4}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("jobs[1].output") && err.contains("jobs[0]"),
            "{err}"
        );

        let err = parse(
            "defaults: {preset: x}\njobs:\n  - {name: n, input: a.mp4, output: a.mp4}\n  \
             - {name: n, input: b.mp4, output: b.mp4}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("jobs[1].name"), "{err}");

        let err = parse("jobs:\n  - {input: a.mp4, output: a.mp4}\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("jobs[0].preset: missing"), "{err}");
        assert!(parse("jobs: []\n")
            .unwrap_err()
            .to_string()
            .contains("lists no job"));
    }
}
