//! What every control-plane binary does around its app: logging setup, and
//! running until SIGTERM or SIGINT, then draining with a deadline.

use std::fmt::Display;
use std::future::Future;
use std::process::ExitCode;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How long in-flight work may take after a shutdown signal.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Logs to stderr, filtered by `RUST_LOG` (default `info`), colored only on
/// a terminal.
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Runs `run` until it ends or a signal arrives; on a signal, cancels its
/// token and waits up to [`DRAIN_TIMEOUT`] for it to finish.
pub async fn serve_until_signal<F, E>(run: impl FnOnce(CancellationToken) -> F) -> ExitCode
where
    F: Future<Output = Result<(), E>> + Send + 'static,
    E: Display + Send + 'static,
{
    let shutdown = CancellationToken::new();
    let mut task = tokio::spawn(run(shutdown.clone()));
    tokio::select! {
        res = &mut task => return exit(res),
        sig = crate::shutdown_signal() => tracing::info!(signal = sig, "shutting down"),
    }
    shutdown.cancel();
    match tokio::time::timeout(DRAIN_TIMEOUT, task).await {
        Ok(res) => exit(res),
        Err(_) => {
            tracing::warn!("drain timed out after {DRAIN_TIMEOUT:?}");
            ExitCode::FAILURE
        }
    }
}

fn exit<E: Display>(res: Result<Result<(), E>, tokio::task::JoinError>) -> ExitCode {
    match res {
        Ok(Ok(())) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Ok(Err(e)) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
        Err(e) => {
            tracing::error!("control plane task failed: {e}");
            ExitCode::FAILURE
        }
    }
}
