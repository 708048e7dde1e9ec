//! The second reference: `scripts/bench_openvino.py` in the reference Python environment
//! (OpenVINO's CPU plugin at its default settings, which picks bf16 on a CPU with
//! AVX512-BF16), for the SD network cases ([`BenchCase::openvino_case`]).

use std::path::Path;
use std::process::Command;

use super::{run_child, BenchCase, BenchOptions, Measurement, Result};

/// Runs OpenVINO for `case`; `None` for cases it has no counterpart of. A missing openvino
/// package is a [`Measurement`] with `unavailable` set, not an error.
pub fn measure(
    python: &Path,
    case: BenchCase,
    options: &BenchOptions,
) -> Option<Result<Measurement>> {
    let case = case.openvino_case()?;
    let mut command = Command::new(python);
    command
        .arg(&options.openvino_script)
        .arg(case.name())
        .arg("--runs")
        .arg(options.runs.max(1).to_string());
    Some(run_child(command, case))
}
