//! The diagnostics server: `/ready`, `/healthy` and `/metrics`, without auth,
//! meant for a loopback or cluster-internal port.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use store::Store;

use crate::metrics::Metrics;

/// Set once the control plane serves; `/ready` answers 503 until then.
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set_ready(&self, ready: bool) {
        self.0.store(ready, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

#[derive(Clone)]
struct DiagState {
    store: Store,
    metrics: Arc<Metrics>,
    ready: Readiness,
}

pub fn router(store: Store, metrics: Arc<Metrics>, ready: Readiness) -> Router {
    Router::new()
        .route("/ready", get(ready_handler))
        .route("/healthy", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics_handler))
        .with_state(DiagState {
            store,
            metrics,
            ready,
        })
}

async fn ready_handler(State(s): State<DiagState>) -> impl IntoResponse {
    if s.ready.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n")
    }
}

async fn metrics_handler(State(s): State<DiagState>) -> impl IntoResponse {
    let store = s.store.clone();
    let metrics = s.metrics.clone();
    // Counting resources walks the store: keep it off the async workers.
    let body = tokio::task::spawn_blocking(move || metrics.encode(&store))
        .await
        .unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
}
