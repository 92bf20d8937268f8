//! `weftctl`: the operator CLI. Parses flags and hands over to the agent library.

#![forbid(unsafe_code)]

use clap::Parser;

#[derive(Parser, Debug)]
#[command(name = "weftctl", version, about = "Weft operator CLI")]
struct Args {}

fn main() -> anyhow::Result<()> {
    let _args = Args::parse();
    Ok(())
}
