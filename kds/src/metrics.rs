//! Prometheus counters of every KDS stream in this process, by resource
//! type: what was sent and received, and how peers answered. A process
//! runs one KDS role (global or zone), so the counters are process-wide;
//! the control planes register them in their `/metrics`.

use std::sync::LazyLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabel {
    pub resource_type: String,
}

#[derive(Default)]
pub struct KdsMetrics {
    pub sent_messages: Family<TypeLabel, Counter>,
    pub sent_bytes: Family<TypeLabel, Counter>,
    pub sent_resources: Family<TypeLabel, Counter>,
    pub received_messages: Family<TypeLabel, Counter>,
    pub acks_received: Family<TypeLabel, Counter>,
    pub nacks_received: Family<TypeLabel, Counter>,
    pub acks_sent: Family<TypeLabel, Counter>,
    pub nacks_sent: Family<TypeLabel, Counter>,
}

static METRICS: LazyLock<KdsMetrics> = LazyLock::new(KdsMetrics::default);

pub fn get() -> &'static KdsMetrics {
    &METRICS
}

pub fn label(ty: api::ResourceType) -> TypeLabel {
    TypeLabel {
        resource_type: ty.name().to_owned(),
    }
}

/// Adds the KDS counters to `registry`.
pub fn register(registry: &mut Registry) {
    let m = get();
    let families = [
        (
            "kds_sent_messages",
            "KDS responses sent, by resource type",
            &m.sent_messages,
        ),
        (
            "kds_sent_bytes",
            "Encoded bytes of KDS responses sent, by resource type",
            &m.sent_bytes,
        ),
        (
            "kds_sent_resources",
            "Resources (and removals) sent over KDS, by resource type",
            &m.sent_resources,
        ),
        (
            "kds_received_messages",
            "KDS responses received, by resource type",
            &m.received_messages,
        ),
        (
            "kds_acks_received",
            "ACKs received from KDS peers, by resource type",
            &m.acks_received,
        ),
        (
            "kds_nacks_received",
            "NACKs received from KDS peers, by resource type",
            &m.nacks_received,
        ),
        (
            "kds_acks_sent",
            "ACKs sent to KDS peers, by resource type",
            &m.acks_sent,
        ),
        (
            "kds_nacks_sent",
            "NACKs sent to KDS peers, by resource type",
            &m.nacks_sent,
        ),
    ];
    for (name, help, family) in families {
        registry.register(name, help, family.clone());
    }
}
