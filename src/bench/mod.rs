//! `rotoscope bench`: the networks at SD1.5 shapes (random detached weights) and the
//! preprocessors on a 512² frame, each timed against its reference (diffusers on torch, the
//! TFLite interpreter) in the same command, with the peak memory of both
//! (docs/ARCHITECTURE.md, "Performance").
//!
//! Every case runs in its own child process (ours: this executable with `bench --child CASE`;
//! the reference: `scripts/bench_torch.py CASE`), one after the other, so that each peak RSS
//! belongs to that case alone and the two sides never compete for the cores.

pub mod cases;
pub mod frame;
pub mod openvino;
pub mod report;
pub mod torch;
pub mod unet;

use std::path::PathBuf;
use std::process::Command;

use serde::{Deserialize, Serialize};

pub use cases::run_case;
pub use report::{markdown_table, median, Row};

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("unknown benchmark case {0:?} (known: {known})", known = BenchCase::names().join(", "))]
    UnknownCase(String),
    #[error("{case}: {source}")]
    Model {
        case: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{case}: needs {path} (install the preprocessor models with scripts/fetch-models.sh and set ROTOSCOPE_MODELS)")]
    MissingModel { case: &'static str, path: PathBuf },
    #[error("{case}: the clip {path} has no frames to time")]
    NoFrames { case: &'static str, path: PathBuf },
    #[error("cannot start {program}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{program} {case} failed ({status}): {stderr}")]
    ChildFailed {
        program: String,
        case: &'static str,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("{program} {case}: no JSON result line in its output: {stdout}")]
    BadOutput {
        program: String,
        case: &'static str,
        stdout: String,
    },
}

pub type Result<T> = std::result::Result<T, BenchError>;

/// What is timed. Names are the ones `--only` and `scripts/bench_torch.py` take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenchCase {
    /// One UNet step, batch 2, 32² latents (256² images).
    Unet32,
    /// One UNet step, batch 2, 64² latents (512² images).
    Unet64,
    /// As `Unet64`, the weights built in bf16 precision (`compute: bf16`).
    Unet64Bf16,
    /// ControlNet forward + the UNet step with its residuals, batch 2, 64² latents.
    ControlNet64,
    /// As `ControlNet64`, a DeepCache shallow step (branch 0): what 2 of every 3 steps cost
    /// with `deep_cache: {interval: 3}` (the reference: the DeepCache package on diffusers).
    DeepCache64,
    /// VAE encode of one 512² image.
    VaeEncode,
    /// VAE decode of one 64² latent.
    VaeDecode,
    /// Tiny VAE (TAESD, `AutoencoderTiny`) encode of one 512² image.
    TaesdEncode,
    /// Tiny VAE (TAESD) decode of one 64² latent.
    TaesdDecode,
    /// HED soft edges of one 512² frame.
    Hed,
    /// MediaPipe pose + hands + face with tracking, per 512² frame of the sample clip.
    Pose,
    /// One whole 512² frame of `presets/anime.yaml` (see [`frame`]).
    FrameAnime,
    /// One whole 512² frame of `presets/anime-fast.yaml` (see [`frame`]).
    FrameFast,
}

impl BenchCase {
    pub const ALL: [BenchCase; 13] = [
        BenchCase::Unet32,
        BenchCase::Unet64,
        BenchCase::Unet64Bf16,
        BenchCase::ControlNet64,
        BenchCase::DeepCache64,
        BenchCase::VaeEncode,
        BenchCase::VaeDecode,
        BenchCase::TaesdEncode,
        BenchCase::TaesdDecode,
        BenchCase::Hed,
        BenchCase::Pose,
        BenchCase::FrameAnime,
        BenchCase::FrameFast,
    ];

    /// What a plain `rotoscope bench` runs: every case but `frame-anime`, whose frame takes
    /// minutes (`--only frame-anime` runs it).
    pub fn default_cases() -> Vec<BenchCase> {
        Self::ALL
            .into_iter()
            .filter(|&c| c != BenchCase::FrameAnime)
            .collect()
    }

    pub fn name(self) -> &'static str {
        match self {
            BenchCase::Unet32 => "unet-32",
            BenchCase::Unet64 => "unet-64",
            BenchCase::Unet64Bf16 => "unet-64-bf16",
            BenchCase::ControlNet64 => "controlnet-64",
            BenchCase::DeepCache64 => "deepcache-64",
            BenchCase::VaeEncode => "vae-encode",
            BenchCase::VaeDecode => "vae-decode",
            BenchCase::TaesdEncode => "taesd-encode",
            BenchCase::TaesdDecode => "taesd-decode",
            BenchCase::Hed => "hed",
            BenchCase::Pose => "pose",
            BenchCase::FrameAnime => "frame-anime",
            BenchCase::FrameFast => "frame-fast",
        }
    }

    /// What one timed run is, for the table.
    pub fn description(self) -> &'static str {
        match self {
            BenchCase::Unet32 => "UNet step, batch 2, 32² latents",
            BenchCase::Unet64 => "UNet step, batch 2, 64² latents",
            BenchCase::Unet64Bf16 => "UNet step, batch 2, 64² latents, bf16 weights",
            BenchCase::ControlNet64 => "ControlNet + UNet step, batch 2, 64²",
            BenchCase::DeepCache64 => {
                "ControlNet + UNet DeepCache shallow step (branch 0), batch 2, 64²"
            }
            BenchCase::VaeEncode => "VAE encode 512²",
            BenchCase::VaeDecode => "VAE decode 512²",
            BenchCase::TaesdEncode => "TAESD encode 512²",
            BenchCase::TaesdDecode => "TAESD decode 512²",
            BenchCase::Hed => "HED 512² frame",
            BenchCase::Pose => "pose+hands+face, tracked, per 512² frame",
            BenchCase::FrameAnime => "whole 512² frame, preset anime (ref: torch UNet step)",
            BenchCase::FrameFast => "whole 512² frame, preset anime-fast (ref: torch UNet step)",
        }
    }

    /// The case the torch side runs for this one: the f32 UNet step for the bf16 step and
    /// for the whole frames (their ratio is frames per torch step), itself otherwise.
    pub fn torch_case(self) -> BenchCase {
        match self {
            BenchCase::Unet64Bf16 | BenchCase::FrameAnime | BenchCase::FrameFast => {
                BenchCase::Unet64
            }
            other => other,
        }
    }

    /// The case the OpenVINO side runs for this one: the SD networks (the bf16 UNet step
    /// against OpenVINO's UNet, which picks bf16 itself); `None` for the rest.
    pub fn openvino_case(self) -> Option<BenchCase> {
        match self {
            BenchCase::Unet32
            | BenchCase::Unet64
            | BenchCase::ControlNet64
            | BenchCase::VaeEncode
            | BenchCase::VaeDecode
            | BenchCase::TaesdEncode
            | BenchCase::TaesdDecode => Some(self),
            BenchCase::Unet64Bf16 => Some(BenchCase::Unet64),
            _ => None,
        }
    }

    pub fn names() -> Vec<&'static str> {
        Self::ALL.iter().map(|c| c.name()).collect()
    }

    pub fn parse(name: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|c| c.name() == name)
            .ok_or_else(|| BenchError::UnknownCase(name.to_string()))
    }
}

/// One side's result for one case, as both children print it (one JSON line).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    pub case: String,
    /// Seconds of each timed run (after a warm-up run).
    pub seconds: Vec<f64>,
    /// Peak resident set size of the process that ran the case (weights included).
    pub peak_rss_bytes: u64,
    /// What ran (for the reference side: which implementation).
    #[serde(default)]
    pub reference: String,
    /// Pose only: model invocations per timed frame, by `.tflite` file name, so the reference
    /// runs the same networks as often.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub per_frame_runs: Vec<(String, f64)>,
    /// OpenVINO only: the inference precision the compiled model ran in (its
    /// `INFERENCE_PRECISION_HINT`, `bf16` by default on an AVX512-BF16 CPU).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inference_precision: Option<String>,
    /// Why the reference could not run (its package is not importable): not an error, the
    /// column says so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
}

impl Measurement {
    pub fn median(&self) -> f64 {
        median(&self.seconds)
    }
}

/// Options of one `rotoscope bench` run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub cases: Vec<BenchCase>,
    pub runs: usize,
    /// The reference Python; `None` skips the reference side.
    pub python: Option<PathBuf>,
    /// `scripts/bench_torch.py`.
    pub script: PathBuf,
    /// `scripts/bench_openvino.py`.
    pub openvino_script: PathBuf,
    /// `$ROTOSCOPE_MODELS` (MediaPipe and HED models).
    pub models_dir: PathBuf,
    /// The clip whose frames the preprocessors run on.
    pub clip: PathBuf,
}

/// The 1-, 5- and 15-minute load averages (`/proc/loadavg`), to judge how busy the machine was.
pub fn load_average() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut it = text.split_whitespace().map(|v| v.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

/// Peak resident set size of this process (Linux `VmHWM`), in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Runs `command` to completion and parses the last line of its stdout that is a
/// [`Measurement`].
pub fn run_child(mut command: Command, case: BenchCase) -> Result<Measurement> {
    let program = command.get_program().to_string_lossy().into_owned();
    let output = command.output().map_err(|source| BenchError::Spawn {
        program: program.clone(),
        source,
    })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        // The end of the output is where the error is.
        let tail: Vec<&str> = stderr.lines().rev().take(15).collect();
        return Err(BenchError::ChildFailed {
            program,
            case: case.name(),
            status: output.status,
            stderr: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
        });
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .rev()
        .find_map(|line| serde_json::from_str::<Measurement>(line).ok())
        .ok_or_else(|| BenchError::BadOutput {
            program,
            case: case.name(),
            stdout: stdout.chars().take(2000).collect(),
        })
}
