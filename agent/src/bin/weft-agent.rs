//! `weft-agent`: the node daemon. Parses flags, sets up logging, and hands over to the library.

#![forbid(unsafe_code)]

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use weft_agent::config::{self, AgentConfig};

#[derive(Parser, Debug)]
#[command(name = "weft-agent", version, about = "Weft node agent")]
struct Args {
    /// Agent configuration file (YAML).
    #[arg(long, default_value = config::DEFAULT_PATH)]
    config: PathBuf,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// On shutdown, detach the uplink NIC from the bridge and move the node's addresses and
    /// routes back to it.
    #[arg(long)]
    restore_uplink: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Install the `weft` plugin into cniBinDir and write 10-weft.conflist into cniConfDir
    /// (atomically), warning about CNI configs that would be chosen before Weft's.
    InstallCni {
        /// The plugin binary to copy (default: `weft` next to this executable).
        #[arg(long)]
        plugin: Option<PathBuf>,
        /// Also install the chained plugins the conflist references (portmap, bandwidth) and
        /// `loopback` (which CRI runtimes run) from this directory, each only if cniBinDir
        /// has none yet (e.g. `/usr/lib/cni`, or the image's copy).
        #[arg(long)]
        chained_plugins_from: Option<PathBuf>,
    },
    /// Install the systemd-networkd and udev drop-ins that keep networkd and udev away from
    /// Weft's routes, rules and interfaces (opt-in, idempotent; never touches foreign files).
    InstallHostConfig {
        /// Install below this directory instead of `/`.
        #[arg(long, default_value = "/")]
        root: PathBuf,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = AgentConfig::load(&args.config)?;
    // Only the daemon writes logFile; one-shot commands (install-cni, install-host-config) log
    // to stderr.
    let log_file = if args.command.is_none() {
        config.log_file.as_str()
    } else {
        ""
    };
    init_logs(args.log_format, log_file)?;
    match args.command {
        Some(Command::InstallCni {
            plugin,
            chained_plugins_from,
        }) => return install_cni(&config, plugin, chained_plugins_from),
        Some(Command::InstallHostConfig { root }) => return install_host_config(&config, &root),
        None => {}
    }
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let options = weft_agent::node::RunOptions {
        restore_uplink: args.restore_uplink,
    };
    runtime.block_on(weft_agent::node::run_with(
        config,
        shutdown_signal(),
        options,
    ))?;
    Ok(())
}

/// Logs to stderr, and also appended to `logFile` when the config sets one.
fn init_logs(format: LogFormat, log_file: &str) -> anyhow::Result<()> {
    use tracing_subscriber::fmt::writer::{BoxMakeWriter, MakeWriterExt};
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let writer = if log_file.is_empty() {
        BoxMakeWriter::new(std::io::stderr)
    } else {
        if let Some(dir) = std::path::Path::new(log_file).parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create the directory of logFile {log_file}"))?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_file)
            .with_context(|| format!("cannot open logFile {log_file}"))?;
        BoxMakeWriter::new(std::io::stderr.and(std::sync::Arc::new(file)))
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(log_file.is_empty())
        .with_writer(writer);
    match format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    Ok(())
}

fn install_cni(
    config: &AgentConfig,
    plugin: Option<PathBuf>,
    chained_plugins_from: Option<PathBuf>,
) -> anyhow::Result<()> {
    let plugin = match plugin {
        Some(path) => path,
        None => std::env::current_exe()?.with_file_name(weft_agent::cniconf::PLUGIN_BINARY),
    };
    let input = weft_agent::cniconf::ConflistInput {
        agent_socket: config.cni_socket.clone(),
        chained: config.cni_chained_plugins.clone(),
        cni_version: config
            .conflist_cni_version()
            .context("cniVersion was validated at load")?,
    };
    let report = weft_agent::cniconf::install(
        &input,
        Some(&plugin),
        &config.cni_bin_dir,
        &config.cni_conf_dir,
    )?;
    println!(
        "installed {} and {} ({})",
        report
            .plugin
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        report.conflist.display(),
        if report.conflist_changed {
            "changed"
        } else {
            "unchanged"
        }
    );
    if let Some(source) = chained_plugins_from {
        for path in weft_agent::cniconf::install_chained(&input, &source, &config.cni_bin_dir)? {
            println!("installed {}", path.display());
        }
    }
    if !report.order.weft_wins() {
        println!(
            "warning: a runtime would load {} before Weft's file; {}",
            report.order.chosen.as_deref().unwrap_or("nothing"),
            weft_agent::cniconf::multus_pin_hint(&config.cni_conf_dir)
        );
    }
    Ok(())
}

fn install_host_config(config: &AgentConfig, root: &std::path::Path) -> anyhow::Result<()> {
    use weft_agent::hoststate::install::{self, FileOutcome};
    let report = install::install(root, config)?;
    for (path, outcome) in &report.files {
        let what = match outcome {
            FileOutcome::Created => "created",
            FileOutcome::Updated => "updated",
            FileOutcome::Unchanged => "unchanged",
        };
        println!("{what} {}", path.display());
    }
    if report.changed() {
        println!(
            "apply with `networkctl reload` (or restart systemd-networkd) and `udevadm control --reload`"
        );
    } else {
        println!("nothing changed");
    }
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
