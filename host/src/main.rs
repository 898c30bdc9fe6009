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
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Work with adapter components.
    Plugin {
        #[command(subcommand)]
        action: PluginAction,
    },
}

#[derive(clap::Subcommand)]
enum PluginAction {
    /// Load and validate a component; print its contract version and the verdict.
    Check { file: PathBuf },
}

/// `switchyard plugin check FILE`: exit 0 when the component is a usable adapter.
fn plugin_check(file: &std::path::Path) -> anyhow::Result<()> {
    let runtime = switchyard::plugin::Runtime::new(None)
        .map_err(|e| anyhow::anyhow!("starting the WebAssembly runtime: {e}"))?;
    match runtime.check(file) {
        Ok(loaded) => {
            println!(
                "ok: {} implements switchyard:adapter@{}",
                file.display(),
                loaded.version
            );
            Ok(())
        }
        Err(e) => {
            println!("bad: {e}");
            std::process::exit(1);
        }
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Command::Plugin {
        action: PluginAction::Check { file },
    }) = &cli.command
    {
        return plugin_check(file);
    }
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
        server.run(shutdown_signal()).await?;
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
