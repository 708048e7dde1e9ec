//! The command line (docs/ARCHITECTURE.md, "Command line"): one file per subcommand, each with its clap `Args` struct
//! and a `run` function. To add a subcommand: create `src/cli/NAME.rs` with
//! `pub struct NameArgs` (`#[derive(clap::Args)]`) and `pub fn run(args: NameArgs) ->
//! anyhow::Result<()>`, add a variant to [`Command`] and a line to [`run`].
//! Errors follow the exit-code policy in [`error`].

pub mod batch;
pub mod bench;
pub mod error;
pub mod models;
pub mod plan;
pub mod preprocess;
pub mod render;
pub mod score;
pub mod still;

use std::io::Write;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::device::{DeviceChoice, DeviceError};

pub use error::{exit_code, CliError, EXIT_BAD_INPUT, EXIT_FAILURE};

#[derive(Debug, Parser)]
#[command(
    name = "rotoscope",
    version,
    about = "Turn motion clips into frame-consistent styled animation (SD1.5 + ControlNet, CPU)",
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Render a clip in a preset's style (MP4 with the source's audio, or a PNG sequence)
    Render(render::RenderArgs),
    /// Render one character in given poses (one image per pose, or a grid)
    Still(still::StillArgs),
    /// Write pose and soft-edge maps (PNG) and OpenPose JSON for every frame
    Preprocess(preprocess::PreprocessArgs),
    /// Show how a clip would be split into batches, with a memory and time estimate
    Plan(plan::PlanArgs),
    /// Temporal-consistency metrics of an output against its input
    Score(score::ScoreArgs),
    /// Run many (input, preset, output) jobs from a YAML file, resumably
    Batch(batch::BatchArgs),
    /// Download or list the models presets refer to
    Models(models::ModelsArgs),
    /// Time the networks and preprocessors against torch/TFLite in the same run (developers)
    Bench(bench::BenchArgs),
}

/// Run a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Render(args) => render::run(args),
        Command::Still(args) => still::run(args),
        Command::Preprocess(args) => preprocess::run(args),
        Command::Plan(args) => plan::run(args),
        Command::Score(args) => score::run(args),
        Command::Batch(args) => batch::run(args),
        Command::Models(args) => models::run(args),
        Command::Bench(args) => bench::run(args),
    }
}

/// Open `--device` once for the run. A device this build or machine cannot open is a bad
/// flag value (exit code 2).
pub fn open_device(choice: DeviceChoice) -> Result<candle_core::Device, CliError> {
    choice.open().map_err(|err| CliError::BadFlag {
        flag: "--device",
        value: choice.to_string(),
        reason: match err {
            DeviceError::Open { source, .. } => format!("cannot be opened: {source}"),
            other => other.to_string(),
        },
    })
}

/// Write to stdout; a reader that went away (`| head`) is not an error.
pub fn print_stdout(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("writing to stdout"),
    }
}
