//! Dataplane insights in the store: what the zone knows of each proxy's
//! xDS stream (connected, last ACKed version per type, last NACK,
//! certificate expiry), written as `DataplaneInsight` resources so the REST
//! API lists them and KDS carries them to the global.
//!
//! Statuses change on every ACK; the writer coalesces them and writes one
//! batch at most every `interval`, so a mesh-wide push to 10,000 proxies
//! costs one store write, not 10,000.

use std::time::Duration;

use api::{DataplaneInsightSpec, Resource, ResourceKey, ResourceType, Spec};
use store::{Op, Precondition, Store};
use tokio_util::sync::CancellationToken;

use super::proxies::{Proxies, ProxyStatus};

fn insight(zone: &str, key: &ResourceKey, status: ProxyStatus) -> Resource {
    let spec = DataplaneInsightSpec {
        connected: status.connected,
        acked: status.acked,
        nacks: status.nacks,
        last_nack: status.last_nack,
        cert_expiry: status.cert_expiry,
    };
    let mut r = Resource::new(&key.name, key.mesh.as_deref(), Spec::DataplaneInsight(spec));
    r.labels.insert(api::ORIGIN_LABEL.into(), "zone".into());
    r.labels.insert(api::ZONE_TAG.into(), zone.to_owned());
    r
}

/// One pass: writes the changed statuses of dataplanes that still exist and
/// removes insights whose Dataplane is gone.
pub fn flush(store: &Store, zone: &str, proxies: &Proxies) -> Result<usize, store::StoreError> {
    let mut ops = Vec::new();
    for (key, status) in proxies.take_dirty() {
        // Zone ingresses have no mesh and no insight resource.
        if key.ty != ResourceType::Dataplane || store.get(&key)?.is_none() {
            continue;
        }
        ops.push(Op::Put(insight(zone, &key, status), Precondition::None));
    }
    for r in store.list(ResourceType::DataplaneInsight, None)? {
        let dp = ResourceKey::new(ResourceType::Dataplane, r.mesh.as_deref(), &r.name);
        if store.get(&dp)?.is_none() {
            ops.push(Op::DeleteIfExists(r.key()));
        }
    }
    let n = ops.len();
    if n > 0 {
        store.apply_or_each(ops);
    }
    Ok(n)
}

/// Writes insights until `shutdown`, at most once per `interval`.
pub async fn run(
    store: Store,
    zone: String,
    proxies: Proxies,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut watch = store.watch();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = proxies.status_changed() => {}
            c = watch.recv() => {
                // A Dataplane deleted (deregistered): drop its insight.
                let gone = matches!(&c, Ok(c) if matches!(c.kind, store::ChangeKind::Delete(_)) && c.kind.resource().ty() == ResourceType::Dataplane);
                if !gone && !matches!(c, Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) {
                    continue;
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let (s, z, p) = (store.clone(), zone.clone(), proxies.clone());
        match tokio::task::spawn_blocking(move || flush(&s, &z, &p)).await {
            Ok(Ok(n)) => tracing::trace!(written = n, "dataplane insights"),
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot write dataplane insights"),
            Err(e) => tracing::warn!(error = %e, "insight writer panicked"),
        }
    }
}
