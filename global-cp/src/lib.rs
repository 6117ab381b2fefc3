//! The global control plane: it owns meshes and policies and streams them to
//! zones over KDS, and keeps what the zones stream back.
//!
//! Start at [`Config`] (flags and env) and [`App::build`], which opens the
//! store, loads or creates the admin token and the KDS key material, and
//! binds every listener; then [`App::run`] serves until its cancellation
//! token fires. The REST API and diagnostics come from `cp-http`, the KDS
//! protocol from `kds`; this crate decides what the global allows
//! (Dataplanes and ZoneIngresses belong to zones and are read-only here),
//! who may connect (zone tokens) and what happens to a deleted zone.

pub mod kds_server;
pub mod mesh_ca;
pub mod pki;
pub mod routes;
pub mod zones;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use api::ResourceType;
use cp_http::diagnostics::Readiness;
use cp_http::metrics::Metrics;
use cp_http::rest::RestConfig;
use kds::snapshot::SnapshotCache;
use store::Store;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Flags of `global-cp`; each may also come from its environment variable.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "global-cp",
    version,
    about = "Global control plane: holds meshes and policies, serves the REST API and KDS to zones.",
    long_about = "Global control plane: holds meshes and policies in an embedded store, serves \
                  the Kuma-compatible REST API (bearer token auth), streams meshes and policies \
                  to zone control planes over KDS (gRPC, TLS) and keeps what zones stream back.\n\n\
                  On first start it writes an admin token to <data-dir>/admin-token (pass it to \
                  meshctl with --token-file) and creates a KDS CA and server certificate. Zones \
                  connect with a token from `meshctl generate zone-token --zone NAME`."
)]
pub struct Config {
    /// Directory of the embedded store, the admin token and KDS key material.
    #[arg(long, env = "GLOBAL_CP_DATA_DIR", default_value = "global-cp-data")]
    pub data_dir: PathBuf,
    /// Address of the REST API.
    #[arg(long, env = "GLOBAL_CP_API_ADDR", default_value = "127.0.0.1:5681")]
    pub api_addr: SocketAddr,
    /// Serve the REST API over HTTPS with this certificate chain (PEM).
    #[arg(long, env = "GLOBAL_CP_API_TLS_CERT", requires = "api_tls_key")]
    pub api_tls_cert: Option<PathBuf>,
    /// The key of --api-tls-cert (PEM).
    #[arg(long, env = "GLOBAL_CP_API_TLS_KEY", requires = "api_tls_cert")]
    pub api_tls_key: Option<PathBuf>,
    /// Address of /ready, /healthy and /metrics.
    #[arg(
        long,
        env = "GLOBAL_CP_DIAGNOSTICS_ADDR",
        default_value = "127.0.0.1:5680"
    )]
    pub diagnostics_addr: SocketAddr,
    /// Address of KDS (gRPC over TLS) that zones dial.
    #[arg(long, env = "GLOBAL_CP_KDS_ADDR", default_value = "0.0.0.0:5685")]
    pub kds_addr: SocketAddr,
    /// Names and IPs the generated KDS server certificate is valid for
    /// (comma-separated); zones must dial one of them.
    #[arg(
        long,
        env = "GLOBAL_CP_KDS_CERT_SANS",
        value_delimiter = ',',
        default_value = "localhost,127.0.0.1"
    )]
    pub kds_cert_sans: Vec<String>,
    /// PEM certificate chain for KDS instead of the generated one (with --kds-tls-key).
    #[arg(long, env = "GLOBAL_CP_KDS_TLS_CERT", requires = "kds_tls_key")]
    pub kds_tls_cert: Option<PathBuf>,
    /// PEM private key for --kds-tls-cert.
    #[arg(long, env = "GLOBAL_CP_KDS_TLS_KEY", requires = "kds_tls_cert")]
    pub kds_tls_key: Option<PathBuf>,
    /// CA that zone tokens pin when --kds-tls-cert is given (default: the
    /// last certificate of the chain).
    #[arg(long, env = "GLOBAL_CP_KDS_TLS_CA", requires = "kds_tls_cert")]
    pub kds_tls_ca: Option<PathBuf>,
    /// Target size of one KDS message; larger syncs are split.
    #[arg(long, env = "GLOBAL_CP_KDS_BATCH_BYTES", default_value_t = 512 * 1024)]
    pub kds_batch_bytes: usize,
}

/// A built global control plane: store open, listeners bound, not yet serving.
pub struct App {
    store: Store,
    api: TcpListener,
    diagnostics: TcpListener,
    kds: TcpListener,
    token_path: PathBuf,
    rest: RestConfig,
    pki: pki::KdsPki,
    kds_batch_bytes: usize,
    metrics: Arc<Metrics>,
    api_tls: Option<cp_http::ApiTls>,
    zones: zones::Zones,
    ready: Readiness,
}

fn read_file(p: &PathBuf) -> anyhow::Result<String> {
    std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))
}

/// The last PEM block of a chain: the certificate closest to the root.
fn last_pem_block(chain: &str) -> String {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    chain
        .rfind(BEGIN)
        .map(|i| chain[i..].to_owned())
        .unwrap_or_else(|| chain.to_owned())
}

impl App {
    pub async fn build(config: Config) -> anyhow::Result<App> {
        let store = Store::open(&config.data_dir)?;
        let (token, token_path, created) = cp_http::token::load_or_create(&config.data_dir)?;
        if created {
            tracing::info!(path = %token_path.display(), "wrote a new admin token (mode 0600); pass it to meshctl with --token-file");
        } else {
            tracing::info!(path = %token_path.display(), "using the admin token");
        }
        let given = match (&config.kds_tls_cert, &config.kds_tls_key) {
            (Some(c), Some(k)) => {
                let chain = read_file(c)?;
                let ca = match &config.kds_tls_ca {
                    Some(p) => read_file(p)?,
                    None => last_pem_block(&chain),
                };
                Some((chain, read_file(k)?, ca))
            }
            _ => None,
        };
        let pki = pki::load_or_create(&config.data_dir, &config.kds_cert_sans, given)?;
        let api = cp_http::bind("the REST API (--api-addr)", config.api_addr).await?;
        let diagnostics =
            cp_http::bind("diagnostics (--diagnostics-addr)", config.diagnostics_addr).await?;
        let kds = cp_http::bind("KDS (--kds-addr)", config.kds_addr).await?;
        let api_tls = match (&config.api_tls_cert, &config.api_tls_key) {
            (Some(cert), Some(key)) => Some(cp_http::ApiTls::load(cert, key)?),
            _ => None,
        };
        let rest = RestConfig {
            https: api_tls.is_some(),
            token,
            read_only: vec![
                (
                    ResourceType::Dataplane,
                    "Dataplanes are registered in their zone and synced to the global; they are read-only here".into(),
                ),
                (
                    ResourceType::ZoneIngress,
                    "ZoneIngresses are registered in their zone and synced to the global; they are read-only here".into(),
                ),
            ],
            labels: vec![(api::ORIGIN_LABEL.into(), "global".into())],
        };
        let zones = zones::Zones::default();
        Ok(App {
            api_tls,
            store,
            api,
            diagnostics,
            kds,
            token_path,
            rest,
            pki,
            kds_batch_bytes: config.kds_batch_bytes,
            metrics: Metrics::new(|r| {
                kds::metrics::register(r);
                r.register(
                    "kds_connected_zones",
                    "Zones with an open KDS stream",
                    zones.connected.clone(),
                );
            }),
            zones,
            ready: Readiness::default(),
        })
    }

    pub fn api_addr(&self) -> SocketAddr {
        self.api
            .local_addr()
            .expect("bound listener has an address")
    }

    pub fn diagnostics_addr(&self) -> SocketAddr {
        self.diagnostics
            .local_addr()
            .expect("bound listener has an address")
    }

    pub fn kds_addr(&self) -> SocketAddr {
        self.kds
            .local_addr()
            .expect("bound listener has an address")
    }

    pub fn token_path(&self) -> &std::path::Path {
        &self.token_path
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Serves until `shutdown` fires, then drains in-flight requests.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let (api_addr, diag_addr, kds_addr) =
            (self.api_addr(), self.diagnostics_addr(), self.kds_addr());
        let zones = self.zones.clone();
        self.metrics.instrument(&self.store);
        let snapshot = SnapshotCache::start(
            self.store.clone(),
            &api::kds::GLOBAL_TO_ZONE,
            |_| true,
            shutdown.clone(),
        )?;
        let signing_key = Arc::new(self.pki.signing_key.clone());
        let global_routes = routes::routes(routes::GlobalState {
            store: self.store.clone(),
            zones: zones.clone(),
            signing_key: signing_key.clone(),
            kds_ca_pem: self.pki.ca_pem.as_str().into(),
        })
        .merge(cp_http::tokens::dataplane_token_routes(signing_key))
        .merge(cp_http::insights::routes(self.store.clone(), true));
        let rest = cp_http::rest::router(
            self.store.clone(),
            self.rest,
            self.metrics.clone(),
            global_routes,
        );
        let diag =
            cp_http::diagnostics::router(self.store.clone(), self.metrics, self.ready.clone());
        let kds = kds_server::KdsGlobal {
            store: self.store.clone(),
            snapshot,
            zones: zones.clone(),
            verifying_keys: vec![self.pki.signing_key.verifying_key()],
            max_message_bytes: self.kds_batch_bytes,
            shutdown: shutdown.clone(),
        };
        let grpc_limit = grpc_limit(self.kds_batch_bytes);
        let identity = tonic::transport::Identity::from_pem(
            &self.pki.server.cert_pem,
            &self.pki.server.key_pem,
        );
        let kds_server = tonic::transport::Server::builder()
            .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
            .context("KDS TLS configuration")?
            .http2_keepalive_interval(Some(Duration::from_secs(10)))
            .http2_keepalive_timeout(Some(Duration::from_secs(20)))
            .add_service(kds::service::KdsServer::new(Arc::new(kds), grpc_limit))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(self.kds),
                shutdown.clone().cancelled_owned(),
            );

        mesh_ca::publish_token_key(&self.store, &self.pki.signing_key.verifying_key())
            .context("publishing the dataplane-token key")?;
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(cp_http::serve_api(
            self.api,
            rest,
            self.api_tls.clone(),
            shutdown.clone(),
        ));
        tasks.spawn(cp_http::serve(self.diagnostics, diag, shutdown.clone()));
        tasks.spawn(async move { kds_server.await.map_err(std::io::Error::other) });
        tasks.spawn({
            let (store, shutdown) = (self.store.clone(), shutdown.clone());
            async move {
                zones::watch_lifecycle(store, zones, shutdown).await;
                Ok(())
            }
        });
        tasks.spawn({
            let (store, shutdown) = (self.store.clone(), shutdown.clone());
            async move {
                mesh_ca::run(store, shutdown).await;
                Ok(())
            }
        });
        self.ready.set_ready(true);
        tracing::info!(api = %api_addr, diagnostics = %diag_addr, kds = %kds_addr, "global control plane ready");
        while let Some(res) = tasks.join_next().await {
            let served = res.context("server task panicked")?;
            if let Err(e) = served {
                shutdown.cancel();
                return Err(e).context("server failed");
            }
        }
        self.ready.set_ready(false);
        Ok(())
    }
}

/// gRPC's per-message limit: a batch may overshoot its target by one
/// resource, which may be up to the per-resource limit.
pub fn grpc_limit(batch_bytes: usize) -> usize {
    (batch_bytes + kds_server::MAX_RESOURCE_BYTES + 64 * 1024).max(4 * 1024 * 1024)
}
