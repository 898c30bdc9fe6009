//! The `switchyard` binary: parse the command line, load config, set up logging, serve.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use switchyard::config::{Config, LogFormat};
use switchyard::server::Server;

#[derive(Parser)]
#[command(
    name = "switchyard",
    version,
    about = "A Pusher Channels compatible realtime server"
)]
struct Cli {
    /// TOML config file; without it the defaults apply (one app: app-id / app-key / app-secret).
    #[arg(long, short)]
    config: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("switchyard: {e}");
            std::process::exit(2);
        }
    };
    init_tracing(&config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let server = Server::bind(config.clone())
            .await
            .with_context(|| format!("binding {}:{}", config.server.host, config.server.port))?;
        server.run(shutdown_signal()).await;
        Ok(())
    })
}

fn init_tracing(config: &Config) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log.level)
        .with_context(|| format!("invalid log.level {:?}", config.log.level))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
