//! Prometheus metrics of the dataplane server: how long config generation
//! takes, how long a change takes to be ACKed by the proxies it affects,
//! how many proxies are connected, and ACKs/NACKs per xDS type.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabel {
    pub type_url: String,
}

#[derive(Clone)]
pub struct XdsMetrics {
    /// One regeneration pass over the proxies of the changed meshes.
    pub regeneration: Histogram,
    /// Generating (and encoding) one proxy's config.
    pub proxy_generation: Histogram,
    /// From the store change (or connect) to the proxy ACKing every type
    /// of the config that reflects it.
    pub delivery: Histogram,
    pub connected: Gauge,
    pub acks: Family<TypeLabel, Counter>,
    pub nacks: Family<TypeLabel, Counter>,
}

impl Default for XdsMetrics {
    fn default() -> Self {
        Self {
            // 10 µs .. ~10 s
            regeneration: Histogram::new(exponential_buckets(0.000_01, 2.0, 21)),
            proxy_generation: Histogram::new(exponential_buckets(0.000_01, 2.0, 21)),
            // 100 µs .. ~100 s
            delivery: Histogram::new(exponential_buckets(0.000_1, 2.0, 21)),
            connected: Gauge::default(),
            acks: Family::default(),
            nacks: Family::default(),
        }
    }
}

impl XdsMetrics {
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "xds_regeneration_duration_seconds",
            "Time to regenerate the config of every proxy of the meshes a change touched",
            self.regeneration.clone(),
        );
        r.register(
            "xds_proxy_generation_duration_seconds",
            "Time to generate and encode one proxy's config",
            self.proxy_generation.clone(),
        );
        r.register(
            "xds_delivery_duration_seconds",
            "Time from a config change until the affected proxy ACKed all of it",
            self.delivery.clone(),
        );
        r.register(
            "xds_connected_proxies",
            "Proxies with an open ADS stream",
            self.connected.clone(),
        );
        r.register(
            "xds_acks",
            "ACKs received from proxies, by type URL",
            self.acks.clone(),
        );
        r.register(
            "xds_nacks",
            "NACKs received from proxies, by type URL",
            self.nacks.clone(),
        );
    }

    pub fn label(type_url: &str) -> TypeLabel {
        TypeLabel {
            type_url: type_url.to_owned(),
        }
    }
}
