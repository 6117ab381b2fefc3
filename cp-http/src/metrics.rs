//! Prometheus metrics of a control plane's HTTP side and store.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::Arc;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TypeLabel {
    resource_type: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// The registry and the metrics this crate records.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: HistogramFamily<RouteLabels>,
    store_resources: Family<TypeLabel, Gauge>,
    store_latency: HistogramFamily<OpLabel>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabel {
    operation: String,
}

fn latency_histogram() -> Histogram {
    // 50 µs .. ~1.6 s
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

impl Metrics {
    /// A registry with this crate's metrics; `extend` may register more.
    pub fn new(extend: impl FnOnce(&mut Registry)) -> Arc<Self> {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let latency: HistogramFamily<RouteLabels> = Family::new_with_constructor(latency_histogram);
        let store_resources = Family::<TypeLabel, Gauge>::default();
        let store_latency: HistogramFamily<OpLabel> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "store_operation_duration_seconds",
            "Store operation latency (get, list, apply: a flushed write batch)",
            store_latency.clone(),
        );
        registry.register(
            "api_requests",
            "REST API requests by method, route and status",
            requests.clone(),
        );
        registry.register(
            "api_request_duration_seconds",
            "REST API request latency by method and route",
            latency.clone(),
        );
        registry.register(
            "store_resources",
            "Resources in the store by type",
            store_resources.clone(),
        );
        extend(&mut registry);
        Arc::new(Self {
            registry,
            requests,
            latency,
            store_resources,
            store_latency,
        })
    }

    /// Records `store`'s operation latencies in this registry.
    pub fn instrument(&self, store: &store::Store) {
        let family = self.store_latency.clone();
        store.observe(Box::new(move |op, took| {
            family
                .get_or_create(&OpLabel {
                    operation: op.to_owned(),
                })
                .observe(took.as_secs_f64());
        }));
    }

    /// Text exposition, after refreshing the store gauges.
    pub fn encode(&self, store: &store::Store) -> String {
        for ty in api::ResourceType::ALL {
            self.store_resources
                .get_or_create(&TypeLabel {
                    resource_type: ty.name().to_owned(),
                })
                .set(store.count(ty) as i64);
        }
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "encoding metrics failed");
        }
        out
    }
}

/// Route middleware: counts requests and times them by matched route.
pub(crate) async fn track(State(m): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().as_str().to_owned();
    let start = Instant::now();
    let resp = next.run(req).await;
    let elapsed = start.elapsed().as_secs_f64();
    m.latency
        .get_or_create(&RouteLabels {
            method: method.clone(),
            route: route.clone(),
        })
        .observe(elapsed);
    m.requests
        .get_or_create(&RequestLabels {
            method,
            route,
            status: resp.status().as_u16(),
        })
        .inc();
    resp
}
