//! Zone ingress advertisement: whenever this zone's Dataplanes come, go or
//! change health (or a mesh turns mTLS on or off), the `availableServices`
//! of this zone's ZoneIngresses are recomputed at once and written back, so
//! KDS carries them to the global and on to every other zone, where they
//! become cross-zone endpoints.

use api::{Resource, ResourceType, Spec, ZONE_TAG};
use store::{Op, Precondition, Store};
use tokio_util::sync::CancellationToken;

/// Whether a ZoneIngress belongs to this zone.
pub fn is_own_ingress(r: &Resource, zone: &str) -> bool {
    match &r.spec {
        Spec::ZoneIngress(zi) => {
            r.labels.get(ZONE_TAG).is_none_or(|z| z == zone)
                && zi.zone.as_deref().is_none_or(|z| z == zone)
        }
        _ => false,
    }
}

/// Recomputes every own ZoneIngress's services; returns how many changed.
pub fn refresh(store: &Store, zone: &str) -> Result<usize, store::StoreError> {
    let ingresses: Vec<Resource> = store
        .list(ResourceType::ZoneIngress, None)?
        .into_iter()
        .filter(|r| is_own_ingress(r, zone))
        .collect();
    if ingresses.is_empty() {
        return Ok(0);
    }
    let meshes = store.list(ResourceType::Mesh, None)?;
    let dataplanes: Vec<Resource> = store
        .list(ResourceType::Dataplane, None)?
        .into_iter()
        .filter(|d| d.labels.get(ZONE_TAG).is_none_or(|z| z == zone))
        .collect();
    let services = xds::ingress::available_services(zone, &meshes, &dataplanes);
    let mut ops = Vec::new();
    for mut zi in ingresses {
        let Spec::ZoneIngress(spec) = &mut zi.spec else {
            continue;
        };
        if spec.available_services == services {
            continue;
        }
        spec.available_services = services.clone();
        let version = zi.meta.version;
        ops.push(Op::Put(zi, Precondition::Version(version)));
    }
    let n = ops.len();
    if n > 0 {
        // A concurrent re-registration wins; the next change refreshes again.
        store.apply_or_each(ops);
    }
    Ok(n)
}

/// Refreshes after every change that can alter what this zone offers.
pub async fn run(store: Store, zone: String, shutdown: CancellationToken) {
    let mut watch = store.watch();
    loop {
        let relevant = tokio::select! {
            _ = shutdown.cancelled() => return,
            c = watch.recv() => match c {
                Ok(c) => {
                    let r = c.kind.resource();
                    match r.ty() {
                        ResourceType::Dataplane | ResourceType::Mesh => true,
                        // A (re-)registered own ingress starts with no services.
                        ResourceType::ZoneIngress => is_own_ingress(r, &zone),
                        _ => false,
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => true,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
        };
        if !relevant {
            continue;
        }
        while watch.try_recv().is_ok() {}
        let (s, z) = (store.clone(), zone.clone());
        match tokio::task::spawn_blocking(move || refresh(&s, &z)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(
                ingresses = n,
                "advertised this zone's services on its ingresses"
            ),
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot refresh the ingresses' services"),
            Err(e) => tracing::warn!(error = %e, "ingress advertisement task panicked"),
        }
    }
}
