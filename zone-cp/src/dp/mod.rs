//! The dataplane server (`--dp-server-addr`, default port 5678): one TLS
//! port that serves `POST /bootstrap` and Envoy's ADS, with this zone's own
//! certificate. Its CA is written to `<data-dir>/dp-server-ca.pem` for
//! sidecars to pin.

pub mod ads;
pub mod bootstrap;
pub mod delta;
pub mod identity;
pub mod insights;
pub mod metrics;
pub mod names;
pub mod proxies;
pub mod snapshot;
pub mod sotw;
pub mod tokens;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use xds_api::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryServiceServer;

use bootstrap::BootstrapState;
use proxies::Proxies;
use tokens::DataplaneAuth;

/// TLS material of the dataplane server.
pub struct DpTls {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// Loads or creates the server's CA and certificate in `data_dir` and
/// writes the CA where sidecars can find it.
pub fn load_tls(data_dir: &Path, sans: &[String]) -> anyhow::Result<DpTls> {
    let (ca, server) = cp_http::tls_files::load_or_create(data_dir, "dp-server", "zone-cp", sans)?;
    Ok(DpTls {
        ca_pem: ca.cert_pem,
        cert_pem: server.cert_pem,
        key_pem: server.key_pem,
    })
}

/// Serves bootstrap and ADS on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    tls: DpTls,
    state: BootstrapState,
    proxies: Proxies,
    auth: DataplaneAuth,
    grace: std::time::Duration,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let ads = ads::Ads {
        proxies,
        auth,
        grace,
    };
    let bootstrap = axum::Router::new()
        .route("/bootstrap", axum::routing::post(bootstrap::bootstrap))
        .route("/deregister", axum::routing::post(bootstrap::deregister))
        .with_state(state);
    let router =
        tonic::service::Routes::new(AggregatedDiscoveryServiceServer::from_arc(Arc::new(ads)))
            .into_axum_router()
            .merge(bootstrap);
    let identity = tonic::transport::Identity::from_pem(&tls.cert_pem, &tls.key_pem);
    tonic::transport::Server::builder()
        .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
        .context("dataplane server TLS")?
        .accept_http1(true)
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(15)))
        .add_routes(tonic::service::Routes::from(router))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            shutdown.cancelled_owned(),
        )
        .await
        .context("dataplane server")
}

pub fn local_addr(l: &TcpListener) -> SocketAddr {
    l.local_addr().expect("bound listener has an address")
}
