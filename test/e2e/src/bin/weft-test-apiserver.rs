//! `weft-test-apiserver [--listen ADDR] [--netns NAME] [--kubeconfig PATH]`: runs the test API
//! server for the lab until SIGINT or SIGTERM, printing its URL and the kubeconfig it wrote.
//! `--netns` listens inside that network namespace (where a node's agent can reach it).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use tokio::signal::unix::{signal, SignalKind};
use weft_e2e::apiserver::{ApiServer, ApiServerOptions};

fn main() -> Result<()> {
    let mut options = ApiServerOptions::default();
    let mut kubeconfig = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--listen" => options.listen = value()?.parse::<SocketAddr>()?,
            "--netns" => options.netns = Some(value()?),
            "--kubeconfig" => kubeconfig = Some(PathBuf::from(value()?)),
            "-h" | "--help" => {
                println!(
                    "usage: weft-test-apiserver [--listen ADDR] [--netns NAME] [--kubeconfig PATH]"
                );
                return Ok(());
            }
            other => bail!("unknown argument {other:?}"),
        }
    }
    let server = ApiServer::start_with(options)?;
    println!("url: {}", server.url());
    if let Some(path) = kubeconfig {
        server.write_kubeconfig(&path)?;
        println!("kubeconfig: {}", path.display());
    }
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let mut term = signal(SignalKind::terminate())?;
            tokio::select! {
                r = tokio::signal::ctrl_c() => r,
                _ = term.recv() => Ok(()),
            }
        })?;
    drop(server);
    Ok(())
}
