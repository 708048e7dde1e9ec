//! `rotoscope batch`: many render jobs from one YAML file.

use std::path::PathBuf;

use clap::Args;

use super::CliError;

#[derive(Debug, Args)]
pub struct BatchArgs {
    /// YAML file listing (input, preset, output) jobs
    #[arg(value_name = "JOBS.yaml")]
    pub jobs: PathBuf,
}

pub fn run(_args: BatchArgs) -> anyhow::Result<()> {
    Err(CliError::NotYetAvailable {
        command: "batch",
        area: "resumable batch jobs arrive with the batch-rendering issue",
    }
    .into())
}
