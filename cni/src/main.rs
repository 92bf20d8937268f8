//! `weft`: the CNI plugin binary. Reads the CNI environment and stdin, forwards the verb to the
//! node agent over its unix socket, and prints the result or the CNI error object on stdout.

#![forbid(unsafe_code)]

use std::io::Write;
use std::process::ExitCode;

use weft_cni::env::RawEnv;
use weft_cni::plugin::{self, UnixSocketAgent};

fn main() -> ExitCode {
    let env = RawEnv::from_process();
    let outcome =
        plugin::read_stdin(&env).and_then(|stdin| plugin::run(&env, &stdin, &UnixSocketAgent));
    let (text, status) = match outcome {
        Ok(Some(output)) => (Some(output), ExitCode::SUCCESS),
        Ok(None) => (None, ExitCode::SUCCESS),
        Err(err) => (Some(err.to_json()), ExitCode::FAILURE),
    };
    if let Some(text) = text {
        let mut stdout = std::io::stdout().lock();
        // A runtime that closed our stdout cannot be told anything more; the exit status stands.
        let _ = writeln!(stdout, "{text}").and_then(|()| stdout.flush());
    }
    status
}
