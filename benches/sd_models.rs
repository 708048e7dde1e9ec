//! `cargo bench --bench sd_models [-- ARGS]`: runs `rotoscope bench ARGS` (release build).
//!
//! The benchmark itself is the `rotoscope bench` subcommand (see `src/bench/`): it needs to
//! start itself once per case (to measure each case's peak memory in a fresh process), which
//! the installed binary can do without cargo. This target only forwards to it.

use std::process::Command;

fn main() {
    // cargo passes `--bench` to harness=false targets; it is not a `rotoscope bench` flag.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let status = Command::new(env!("CARGO_BIN_EXE_rotoscope"))
        .arg("bench")
        .args(&args)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => std::process::exit(s.code().unwrap_or(1)),
        Err(e) => {
            eprintln!("cannot run {}: {e}", env!("CARGO_BIN_EXE_rotoscope"));
            std::process::exit(1);
        }
    }
}
