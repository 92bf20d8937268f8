//! `weft-agent`: the node daemon. Parses flags and hands over to the agent library.

#![forbid(unsafe_code)]

use clap::Parser;

#[derive(Parser, Debug)]
#[command(name = "weft-agent", version, about = "Weft node agent")]
struct Args {}

fn main() -> anyhow::Result<()> {
    let _args = Args::parse();
    Ok(())
}
