//! `rotoscope still`: pose transfer for character sheets.

use std::path::PathBuf;

use clap::Args;

use super::CliError;

#[derive(Debug, Args)]
pub struct StillArgs {
    /// Pose images (OpenPose maps) or OpenPose JSON files, one output image each
    #[arg(long = "pose", value_name = "FILE", required = true, num_args = 1..)]
    pub poses: Vec<PathBuf>,
    /// Preset file, or the name of a bundled preset
    #[arg(short = 'p', long = "preset", value_name = "PRESET")]
    pub preset: PathBuf,
    /// Output PNG (with several poses: OUT-0.png, OUT-1.png, ... unless --grid)
    #[arg(short = 'o', long = "output", value_name = "OUT.png")]
    pub output: PathBuf,
    /// Seed (overrides the preset's sampler.seed)
    #[arg(long)]
    pub seed: Option<u64>,
    /// Put all poses in one grid image
    #[arg(long)]
    pub grid: bool,
}

pub fn run(_args: StillArgs) -> anyhow::Result<()> {
    Err(CliError::NotYetAvailable {
        command: "still",
        area: "pose-transfer still rendering arrives with the Stable Diffusion renderer",
    }
    .into())
}
