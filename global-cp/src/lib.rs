//! The global control plane: it owns meshes and policies and (from the KDS
//! issue on) streams them to zones.
//!
//! Start at [`Config`] (flags and env) and [`App::build`], which opens the
//! store, loads or creates the admin token and binds every listener; then
//! [`App::run`] serves until its cancellation token fires. The REST API and
//! diagnostics come from `cp-http`; this crate decides what the global allows:
//! Dataplanes and ZoneIngresses belong to zones and are read-only here.

pub mod token;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use api::ResourceType;
use cp_http::diagnostics::Readiness;
use cp_http::metrics::Metrics;
use cp_http::rest::RestConfig;
use store::Store;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Flags of `global-cp`; each may also come from its environment variable.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "global-cp",
    version,
    about = "Global control plane: holds meshes and policies and serves the REST API.",
    long_about = "Global control plane: holds meshes and policies in an embedded store and serves \
                  the Kuma-compatible REST API (bearer token auth) and diagnostics.\n\n\
                  On first start it writes an admin token to <data-dir>/admin-token; pass that file \
                  to meshctl with --token-file."
)]
pub struct Config {
    /// Directory of the embedded store and the admin token.
    #[arg(long, env = "GLOBAL_CP_DATA_DIR", default_value = "global-cp-data")]
    pub data_dir: PathBuf,
    /// Address of the REST API.
    #[arg(long, env = "GLOBAL_CP_API_ADDR", default_value = "127.0.0.1:5681")]
    pub api_addr: SocketAddr,
    /// Address of /ready, /healthy and /metrics.
    #[arg(long, env = "GLOBAL_CP_DIAGNOSTICS_ADDR", default_value = "127.0.0.1:5680")]
    pub diagnostics_addr: SocketAddr,
}

/// A built global control plane: store open, listeners bound, not yet serving.
pub struct App {
    store: Store,
    api: TcpListener,
    diagnostics: TcpListener,
    token_path: PathBuf,
    rest: RestConfig,
    metrics: std::sync::Arc<Metrics>,
    ready: Readiness,
}

impl App {
    pub async fn build(config: Config) -> anyhow::Result<App> {
        let store = Store::open(&config.data_dir)?;
        let (token, token_path, created) = token::load_or_create(&config.data_dir)?;
        if created {
            tracing::info!(path = %token_path.display(), "wrote a new admin token (mode 0600); pass it to meshctl with --token-file");
        } else {
            tracing::info!(path = %token_path.display(), "using the admin token");
        }
        let api = cp_http::bind("the REST API (--api-addr)", config.api_addr).await?;
        let diagnostics =
            cp_http::bind("diagnostics (--diagnostics-addr)", config.diagnostics_addr).await?;
        let rest = RestConfig {
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
            origin: Some("global".into()),
        };
        Ok(App {
            store,
            api,
            diagnostics,
            token_path,
            rest,
            metrics: Metrics::new(|_| {}),
            ready: Readiness::default(),
        })
    }

    pub fn api_addr(&self) -> SocketAddr {
        self.api.local_addr().expect("bound listener has an address")
    }

    pub fn diagnostics_addr(&self) -> SocketAddr {
        self.diagnostics
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
        let api_addr = self.api_addr();
        let diag_addr = self.diagnostics_addr();
        let rest = cp_http::rest::router(self.store.clone(), self.rest, self.metrics.clone());
        let diag = cp_http::diagnostics::router(self.store.clone(), self.metrics, self.ready.clone());
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(cp_http::serve(self.api, rest, shutdown.clone()));
        tasks.spawn(cp_http::serve(self.diagnostics, diag, shutdown.clone()));
        self.ready.set_ready(true);
        tracing::info!(api = %api_addr, diagnostics = %diag_addr, "global control plane ready");
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
