//! Running helper programs (ip, ovs-vsctl, ovs-ofctl, ...) from tests with readable errors.

use std::process::{Command, Output};

use anyhow::{bail, Context, Result};

/// Runs `program args...`, returning stdout; a non-zero exit becomes an error carrying stderr.
pub fn run(program: &str, args: &[&str]) -> Result<String> {
    run_env(program, args, &[])
}

/// Like [`run`] with extra environment variables.
pub fn run_env(program: &str, args: &[&str], env: &[(&str, &str)]) -> Result<String> {
    let mut command = Command::new(program);
    command.args(args);
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    check(program, args, output)
}

fn check(program: &str, args: &[&str], output: Output) -> Result<String> {
    if !output.status.success() {
        bail!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
