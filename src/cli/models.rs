//! `rotoscope models`: fetch or list the models presets refer to.

use clap::{Args, Subcommand};

use super::CliError;

#[derive(Debug, Args)]
pub struct ModelsArgs {
    #[command(subcommand)]
    pub action: ModelsAction,
}

#[derive(Debug, Subcommand)]
pub enum ModelsAction {
    /// Download the models the bundled presets use (through the Hugging Face hub cache)
    Fetch,
    /// List the models presets refer to and whether each is available locally
    List,
}

pub fn run(_args: ModelsArgs) -> anyhow::Result<()> {
    Err(CliError::NotYetAvailable {
        command: "models",
        area: "model download and listing arrive with the model-loading issue",
    }
    .into())
}
