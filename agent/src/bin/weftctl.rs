//! `weftctl`: the operator CLI. Parses flags and hands over to the agent library
//! (`weft_agent::ctl`); prints its output, or one line of error with exit code 1.

#![forbid(unsafe_code)]

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use weft_agent::ctl::{self, Cli};

fn main() -> ExitCode {
    match ctl::run(Cli::parse()) {
        Ok(outcome) => {
            let mut stdout = std::io::stdout().lock();
            // A closed pipe (`weftctl ... | head`) is not an error worth reporting.
            let _ = stdout.write_all(outcome.stdout.as_bytes());
            let _ = stdout.flush();
            ExitCode::from(outcome.code)
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(ctl::EXIT_FAILED)
        }
    }
}
