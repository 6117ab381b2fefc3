use clap::Parser;
use global_cp::{App, Config};
use tokio_util::sync::CancellationToken;

/// How long in-flight work may take after a shutdown signal.
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let config = Config::parse();
    let app = match App::build(config).await {
        Ok(app) => app,
        Err(e) => {
            tracing::error!("cannot start: {e:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let shutdown = CancellationToken::new();
    let mut run = tokio::spawn(app.run(shutdown.clone()));
    tokio::select! {
        res = &mut run => return exit(res),
        sig = cp_http::shutdown_signal() => tracing::info!(signal = sig, "shutting down"),
    }
    shutdown.cancel();
    match tokio::time::timeout(DRAIN_TIMEOUT, run).await {
        Ok(res) => exit(res),
        Err(_) => {
            tracing::warn!("drain timed out after {DRAIN_TIMEOUT:?}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn exit(res: Result<anyhow::Result<()>, tokio::task::JoinError>) -> std::process::ExitCode {
    match res {
        Ok(Ok(())) => {
            tracing::info!("stopped");
            std::process::ExitCode::SUCCESS
        }
        Ok(Err(e)) => {
            tracing::error!("{e:#}");
            std::process::ExitCode::FAILURE
        }
        Err(e) => {
            tracing::error!("control plane task failed: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
