//! The `rotoscope` binary: parse the command line, run it, print one error line and exit
//! with the code of the policy in `rotoscope::cli::error` (2 = bad input, 1 = failure).

use std::process::ExitCode;

use clap::Parser;
use rotoscope::cli::{exit_code, run, Cli};

fn main() -> ExitCode {
    // Keep big tensors in the heap instead of fresh zero-filled mmaps every step (see
    // `rotoscope::alloc`; measured effect there). Before any thread starts.
    rotoscope::alloc::tune_malloc();
    // clap prints usage errors itself and exits with 2 (bad input), --help / --version with 0.
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // `{:#}` prints the whole chain on one line: "context: cause: root cause".
            eprintln!("error: {err:#}");
            ExitCode::from(exit_code(&err))
        }
    }
}
