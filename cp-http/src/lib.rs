//! The HTTP side of a control plane, shared by `global-cp` and `zone-cp`.
//!
//! [`rest::router`] serves Kuma's REST paths over a [`store::Store`]
//! (`/meshes`, `/meshes/{mesh}/traffic-permissions`, `/zones`, …) behind a
//! bearer token; [`diagnostics::router`] serves `/ready`, `/healthy` and
//! `/metrics`. What a control plane may write is its own business: it passes
//! the read-only types in [`rest::RestConfig`]. Errors always use Kuma's error
//! body ([`error::ApiError`]). Nothing here generates proxy config or speaks gRPC.

pub mod body;
pub mod diagnostics;
pub mod error;
pub mod insights;
pub mod metrics;
pub mod process;
pub mod rest;
pub mod tls_files;
pub mod token;
pub mod tokens;

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Binds `addr`, naming it in the error so an operator knows which flag to fix.
pub async fn bind(what: &str, addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(e.kind(), format!("cannot listen for {what} on {addr}: {e}"))
    })
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then lets
/// in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

/// Waits for SIGTERM or SIGINT and names the one that came.
pub async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        },
        _ => {
            tracing::warn!("cannot install signal handlers; only Ctrl-C stops this process");
            let _ = tokio::signal::ctrl_c().await;
            "SIGINT"
        }
    }
}
