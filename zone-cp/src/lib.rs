//! The zone control plane: it keeps a store of its own, synced with the
//! global over KDS (meshes and policies down, dataplanes and ingresses up),
//! and serves its zone from it even while the global is away.
//!
//! Start at [`Config`] and [`App::build`] (store, admin token, zone token,
//! listeners), then [`App::run`]. [`kds_client`] holds the sync loop. Without
//! `--global-address` the zone runs standalone and meshes and policies are
//! written to it directly.

pub mod advertise;
pub mod dp;
pub mod kds_client;
mod routes;

pub use cp_http::tokens::now_unix;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use api::ResourceType;
use cp_http::diagnostics::Readiness;
use cp_http::metrics::Metrics;
use cp_http::rest::RestConfig;
use kds::snapshot::SnapshotCache;
use store::Store;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Flags of `zone-cp`; each may also come from its environment variable.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "zone-cp",
    version,
    about = "Zone control plane: syncs with the global over KDS and serves its zone.",
    long_about = "Zone control plane: keeps meshes and policies synced from the global control \
                  plane (KDS, gRPC over TLS, dialled from here) in an embedded store, publishes the \
                  zone's Dataplanes and ZoneIngresses up, and serves the REST API. Without \
                  --global-address it runs standalone.\n\n\
                  The zone token (`meshctl generate zone-token --zone NAME` on the global) names the \
                  zone and pins the global's CA, so no other file is needed to connect."
)]
pub struct Config {
    /// Name of this zone; must match the zone token.
    #[arg(long, env = "ZONE_CP_ZONE")]
    pub zone: String,
    /// Directory of the embedded store and the admin token.
    #[arg(long, env = "ZONE_CP_DATA_DIR", default_value = "zone-cp-data")]
    pub data_dir: PathBuf,
    /// The global's KDS address, `grpcs://HOST:5685`. Omit to run standalone.
    #[arg(long, env = "ZONE_CP_GLOBAL_ADDRESS", requires = "zone_token_file")]
    pub global_address: Option<String>,
    /// File holding the zone token issued by the global.
    #[arg(long, env = "ZONE_CP_ZONE_TOKEN_FILE")]
    pub zone_token_file: Option<PathBuf>,
    /// Address of the REST API.
    #[arg(long, env = "ZONE_CP_API_ADDR", default_value = "127.0.0.1:5681")]
    pub api_addr: SocketAddr,
    /// Serve the REST API over HTTPS with this certificate chain (PEM).
    #[arg(long, env = "ZONE_CP_API_TLS_CERT", requires = "api_tls_key")]
    pub api_tls_cert: Option<PathBuf>,
    /// The key of --api-tls-cert (PEM).
    #[arg(long, env = "ZONE_CP_API_TLS_KEY", requires = "api_tls_cert")]
    pub api_tls_key: Option<PathBuf>,
    /// Address of /ready, /healthy and /metrics.
    #[arg(
        long,
        env = "ZONE_CP_DIAGNOSTICS_ADDR",
        default_value = "127.0.0.1:5680"
    )]
    pub diagnostics_addr: SocketAddr,
    /// Target size of one KDS message to the global.
    #[arg(long, env = "ZONE_CP_KDS_BATCH_BYTES", default_value_t = 512 * 1024)]
    pub kds_batch_bytes: usize,
    /// Address of the dataplane server: `POST /bootstrap` and ADS, over TLS.
    #[arg(long, env = "ZONE_CP_DP_SERVER_ADDR", default_value = "0.0.0.0:5678")]
    pub dp_server_addr: SocketAddr,
    /// Names and IPs of the dataplane server's certificate (comma-separated).
    #[arg(
        long,
        env = "ZONE_CP_DP_SERVER_CERT_SANS",
        value_delimiter = ',',
        default_value = "localhost,127.0.0.1"
    )]
    pub dp_server_cert_sans: Vec<String>,
    /// How long a burst of changes is gathered before proxies are regenerated.
    #[arg(long, env = "ZONE_CP_XDS_DEBOUNCE_MS", default_value_t = 5)]
    pub xds_debounce_ms: u64,
    /// Seconds a Dataplane is kept after its proxy's stream ends and does not return.
    #[arg(long, env = "ZONE_CP_DATAPLANE_GRACE_SECONDS", default_value_t = 60)]
    pub dataplane_grace_seconds: u64,
}

pub struct App {
    zone: String,
    store: Store,
    api: TcpListener,
    diagnostics: TcpListener,
    dp_server: TcpListener,
    dp_tls: dp::DpTls,
    dp_signing_key: certs::SigningKey,
    xds_debounce: std::time::Duration,
    dataplane_grace: std::time::Duration,
    rest: RestConfig,
    kds: Option<kds_client::KdsClientConfig>,
    metrics: Arc<Metrics>,
    api_tls: Option<cp_http::ApiTls>,
    xds_metrics: dp::metrics::XdsMetrics,
    ready: Readiness,
}

impl App {
    pub async fn build(config: Config) -> anyhow::Result<App> {
        api::validate_zone_name("--zone", &config.zone)?;
        let kds = match (&config.global_address, &config.zone_token_file) {
            (Some(address), Some(file)) => {
                let token = std::fs::read_to_string(file)
                    .with_context(|| format!("cannot read the zone token {}", file.display()))?
                    .trim()
                    .to_owned();
                let claims = certs::read_zone_token_unverified(&token)
                    .with_context(|| format!("{} does not hold a zone token", file.display()))?;
                if claims.zone != config.zone {
                    bail!(
                        "the zone token in {} is for zone {:?}, but this is zone {:?} (--zone)",
                        file.display(),
                        claims.zone,
                        config.zone
                    );
                }
                Some(kds_client::KdsClientConfig {
                    zone: config.zone.clone(),
                    global_address: address.clone(),
                    token,
                    kds_ca_pem: claims.kds_ca,
                    batch_bytes: config.kds_batch_bytes,
                })
            }
            _ => None,
        };
        let store = Store::open(&config.data_dir)?;
        let (token, token_path, created) = cp_http::token::load_or_create(&config.data_dir)?;
        if created {
            tracing::info!(path = %token_path.display(), "wrote a new admin token (mode 0600); pass it to meshctl with --token-file");
        } else {
            tracing::info!(path = %token_path.display(), "using the admin token");
        }
        let api = cp_http::bind("the REST API (--api-addr)", config.api_addr).await?;
        let diagnostics =
            cp_http::bind("diagnostics (--diagnostics-addr)", config.diagnostics_addr).await?;
        let dp_server = cp_http::bind(
            "the dataplane server (--dp-server-addr)",
            config.dp_server_addr,
        )
        .await?;
        let dp_tls = dp::load_tls(&config.data_dir, &config.dp_server_cert_sans)?;
        tracing::info!(
            ca = %config.data_dir.join("dp-server-ca.pem").display(),
            "dataplane server CA (sidecars pin it with --ca-cert-file)"
        );
        let dp_signing_key = load_signing_key(&config.data_dir)?;
        let mut read_only = vec![(
            ResourceType::Zone,
            "Zones are managed on the global control plane".to_owned(),
        )];
        if let Some(k) = &kds {
            for ty in [ResourceType::Mesh, ResourceType::TrafficPermission] {
                read_only.push((
                    ty,
                    format!(
                        "{}s are managed on the global control plane ({}); change them there and they sync to this zone",
                        ty.name(),
                        k.global_address
                    ),
                ));
            }
        }
        let api_tls = match (&config.api_tls_cert, &config.api_tls_key) {
            (Some(cert), Some(key)) => Some(cp_http::ApiTls::load(cert, key)?),
            _ => None,
        };
        let rest = RestConfig {
            https: api_tls.is_some(),
            token,
            read_only,
            labels: vec![
                (api::ORIGIN_LABEL.into(), "zone".into()),
                (api::ZONE_TAG.into(), config.zone.clone()),
            ],
        };
        let xds_metrics = dp::metrics::XdsMetrics::default();
        Ok(App {
            api_tls,
            zone: config.zone,
            store,
            api,
            diagnostics,
            dp_server,
            dp_tls,
            dp_signing_key,
            xds_debounce: std::time::Duration::from_millis(config.xds_debounce_ms),
            dataplane_grace: std::time::Duration::from_secs(config.dataplane_grace_seconds),
            rest,
            kds,
            metrics: Metrics::new(|r| {
                kds::metrics::register(r);
                xds_metrics.register(r);
            }),
            xds_metrics,
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

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn dp_server_addr(&self) -> SocketAddr {
        dp::local_addr(&self.dp_server)
    }

    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let (api_addr, diag_addr, dp_addr) = (
            self.api_addr(),
            self.diagnostics_addr(),
            self.dp_server_addr(),
        );
        let identities =
            dp::identity::Identities::new(self.store.clone(), &self.zone, self.kds.is_some());
        let proxies = dp::proxies::Proxies::new(self.store.clone(), &self.zone, identities)
            .with_metrics(self.xds_metrics.clone());
        self.metrics.instrument(&self.store);
        let auth = dp::tokens::DataplaneAuth::new(self.store.clone(), self.dp_signing_key)
            .federated(self.kds.is_some());
        let zone_routes = routes::routes(self.store.clone(), proxies.clone()).merge(
            cp_http::tokens::dataplane_token_routes(Arc::new(auth.signing_key().clone())),
        );
        let rest = cp_http::rest::router(
            self.store.clone(),
            self.rest,
            self.metrics.clone(),
            zone_routes,
        );
        let diag =
            cp_http::diagnostics::router(self.store.clone(), self.metrics, self.ready.clone());
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(cp_http::serve_api(
            self.api,
            rest,
            self.api_tls.clone(),
            shutdown.clone(),
        ));
        tasks.spawn(cp_http::serve(self.diagnostics, diag, shutdown.clone()));
        tasks.spawn({
            let (p, d, s) = (proxies.clone(), self.xds_debounce, shutdown.clone());
            async move {
                p.run(d, s).await;
                Ok(())
            }
        });
        tasks.spawn({
            let (store, zone, p, s) = (
                self.store.clone(),
                self.zone.clone(),
                proxies.clone(),
                shutdown.clone(),
            );
            async move {
                dp::insights::run(store, zone, p, INSIGHT_INTERVAL, s).await;
                Ok(())
            }
        });
        tasks.spawn({
            let (store, zone, s) = (self.store.clone(), self.zone.clone(), shutdown.clone());
            async move {
                advertise::run(store, zone, s).await;
                Ok(())
            }
        });
        tasks.spawn({
            let (store, p, s) = (self.store.clone(), proxies.clone(), shutdown.clone());
            async move {
                dp::names::run(store, p.names().clone(), p, s).await;
                Ok(())
            }
        });
        let bootstrap_state = dp::bootstrap::BootstrapState {
            store: self.store.clone(),
            zone: self.zone.clone(),
            auth: auth.clone(),
            ca_pem: self.dp_tls.ca_pem.clone(),
        };
        tasks.spawn({
            let shutdown = shutdown.clone();
            let (tls, grace) = (self.dp_tls, self.dataplane_grace);
            async move {
                dp::serve(
                    self.dp_server,
                    tls,
                    bootstrap_state,
                    proxies,
                    auth,
                    grace,
                    shutdown,
                )
                .await
                .map_err(std::io::Error::other)
            }
        });
        match self.kds {
            Some(cfg) => {
                let snapshot = SnapshotCache::start(
                    self.store.clone(),
                    &api::kds::ZONE_TO_GLOBAL,
                    {
                        let zone = self.zone.clone();
                        move |r| kds_client::is_local(r, &zone)
                    },
                    shutdown.clone(),
                )?;
                tracing::info!(global = %cfg.global_address, "federated: syncing with the global");
                let (store, shutdown) = (self.store.clone(), shutdown.clone());
                tasks.spawn(async move {
                    kds_client::run(cfg, store, snapshot, Arc::default(), shutdown).await;
                    Ok(())
                });
            }
            None => tracing::info!(
                "standalone: no --global-address, meshes and policies are managed here"
            ),
        }
        self.ready.set_ready(true);
        tracing::info!(zone = %self.zone, api = %api_addr, diagnostics = %diag_addr, dp_server = %dp_addr, "zone control plane ready");
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

/// How often changed dataplane insights are written (and synced up).
const INSIGHT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// The key this zone signs dataplane tokens with (standalone zones issue
/// their own; a federated zone also trusts the global's).
fn load_signing_key(data_dir: &std::path::Path) -> anyhow::Result<certs::SigningKey> {
    let path = data_dir.join("dataplane-token-signing.key");
    match cp_http::tls_files::read_optional(&path)? {
        Some(pem) => certs::SigningKey::from_pem(&pem)
            .with_context(|| format!("{} is not a signing key", path.display())),
        None => {
            let key = certs::SigningKey::generate()?;
            cp_http::tls_files::write_private(&path, &key.to_pem())?;
            Ok(key)
        }
    }
}
