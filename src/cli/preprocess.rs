//! `rotoscope preprocess`: pose and soft-edge maps for every frame of a clip.

use std::path::PathBuf;

use clap::Args;

use super::CliError;

#[derive(Debug, Args)]
pub struct PreprocessArgs {
    /// Input video
    #[arg(value_name = "INPUT")]
    pub input: PathBuf,
    /// Output directory (PNG maps + OpenPose JSON per frame)
    #[arg(short = 'o', long = "output", value_name = "DIR")]
    pub output: PathBuf,
    /// Estimate poses (OpenPose maps and *_keypoints.json)
    #[arg(long)]
    pub pose: bool,
    /// Compute soft-edge (HED) maps
    #[arg(long)]
    pub softedge: bool,
    /// Progress as JSON lines on stdout
    #[arg(long)]
    pub json: bool,
}

pub fn run(_args: PreprocessArgs) -> anyhow::Result<()> {
    Err(CliError::NotYetAvailable {
        command: "preprocess",
        area: "pose and soft-edge preprocessing arrive with the preprocessor issues",
    }
    .into())
}
