//! The reference side: `scripts/bench_torch.py` in the reference Python environment.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{run_child, BenchCase, BenchOptions, Measurement, Result};

/// Environment variable naming the reference Python (torch, diffusers, ai-edge-litert).
pub const PYTHON_ENV: &str = "ROTOSCOPE_REF_PYTHON";

/// The reference Python: `$ROTOSCOPE_REF_PYTHON`, else `/work/venv-ref/bin/python`, else
/// `.venv-ref/bin/python` under `project_dir`; `None` when none of them exists.
pub fn find_python(project_dir: &Path) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(PYTHON_ENV) {
        return Some(PathBuf::from(path)).filter(|p| p.exists());
    }
    [
        PathBuf::from("/work/venv-ref/bin/python"),
        project_dir.join(".venv-ref/bin/python"),
    ]
    .into_iter()
    .find(|p| p.exists())
}

/// Runs the reference for `case` (its [`BenchCase::torch_case`]). `ours` is our measurement
/// of the same case: for pose, the reference invokes each model as often per frame as our
/// tracker did.
pub fn measure(
    python: &Path,
    case: BenchCase,
    options: &BenchOptions,
    ours: &Measurement,
) -> Result<Measurement> {
    let case = case.torch_case();
    let mut command = Command::new(python);
    command
        .arg(&options.script)
        .arg(case.name())
        .arg("--runs")
        .arg(options.runs.max(1).to_string())
        .arg("--models")
        .arg(&options.models_dir);
    if case == BenchCase::Pose {
        let rates: Vec<String> = ours
            .per_frame_runs
            .iter()
            .filter(|(_, rate)| *rate > 0.0)
            .map(|(model, rate)| format!("{model}={rate}"))
            .collect();
        command
            .arg("--per-frame")
            .arg(rates.join(","))
            .arg("--frames")
            .arg(ours.seconds.len().max(1).to_string());
    }
    run_child(command, case)
}
