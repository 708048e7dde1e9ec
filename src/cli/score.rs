//! `rotoscope score`: temporal-consistency metrics (DESIGN §7).

use std::path::PathBuf;

use clap::Args;

use super::CliError;

#[derive(Debug, Args)]
pub struct ScoreArgs {
    /// The source clip
    #[arg(value_name = "INPUT")]
    pub input: PathBuf,
    /// The rendered clip
    #[arg(value_name = "OUTPUT")]
    pub output: PathBuf,
    /// Print the metrics as JSON
    #[arg(long)]
    pub json: bool,
}

pub fn run(_args: ScoreArgs) -> anyhow::Result<()> {
    Err(CliError::NotYetAvailable {
        command: "score",
        area: "warp and seam error metrics arrive with the temporal-consistency issue",
    }
    .into())
}
