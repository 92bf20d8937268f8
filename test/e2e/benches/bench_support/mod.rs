//! Helpers shared by the harness-less benches of this crate.

#![allow(dead_code)] // each bench uses a subset

use std::process::ExitCode;

/// The bench's `main`: nothing to list for `cargo test --benches` (`--list`), otherwise runs
/// `run` and turns its error into a message and a failing exit code.
pub fn main(name: &str, run: fn() -> anyhow::Result<()>) -> ExitCode {
    if std::env::args().any(|arg| arg == "--list") {
        return ExitCode::SUCCESS;
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name} failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The median of `values` (the upper one of an even count); 0 for none.
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}
