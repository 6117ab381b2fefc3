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

/// TLS for the REST API: the certificate chain and key an operator gives
/// (`--api-tls-cert`, `--api-tls-key`).
#[derive(Clone)]
pub struct ApiTls {
    pub cert_pem: String,
    pub key_pem: String,
}

impl ApiTls {
    /// Reads both files, naming the one that cannot be read.
    pub fn load(cert: &std::path::Path, key: &std::path::Path) -> std::io::Result<ApiTls> {
        let read = |p: &std::path::Path| {
            std::fs::read_to_string(p).map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot read {}: {e}", p.display()))
            })
        };
        Ok(ApiTls {
            cert_pem: read(cert)?,
            key_pem: read(key)?,
        })
    }
}

/// Serves the REST API: plain HTTP, or HTTPS (HTTP/1.1 and HTTP/2) when
/// `tls` is given.
pub async fn serve_api(
    listener: TcpListener,
    router: axum::Router,
    tls: Option<ApiTls>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let Some(tls) = tls else {
        return serve(listener, router, shutdown).await;
    };
    // Offer HTTP/1.1 as well as HTTP/2 in ALPN: curl, Python and
    // HTTP/1.1-only clients must get through, not only gRPC-style ones.
    let mut config =
        certs::server_config(&tls.cert_pem, &tls.key_pem, None).map_err(std::io::Error::other)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    // Handshakes run in their own tasks so a slow client holds up no one.
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let accepting = shutdown.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                _ = accepting.cancelled() => return,
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "REST API accept failed");
                        continue;
                    }
                },
            };
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                match acceptor.accept(tcp).await {
                    Ok(tls) => {
                        let _ = tx.send(Ok::<_, std::io::Error>(tls)).await;
                    }
                    Err(e) => tracing::debug!(%peer, error = %e, "REST API TLS handshake failed"),
                }
            });
        }
    });
    tonic::transport::Server::builder()
        .accept_http1(true)
        .add_routes(tonic::service::Routes::from(router))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::ReceiverStream::new(rx),
            shutdown.cancelled_owned(),
        )
        .await
        .map_err(std::io::Error::other)
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
