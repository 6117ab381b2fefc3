//! Zones as the global sees them: which KDS streams each one has open, their
//! counters (for `/zones/{name}/_overview`), and what happens when a zone is
//! deleted or disabled: its streams are cut and its synced resources removed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use api::{ResourceKey, ResourceType, Spec, ZONE_TAG};
use kds::driver::SharedStats;
use serde_json::{json, Value};
use store::{ChangeKind, Op, Store};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    GlobalToZone,
    ZoneToGlobal,
}

struct Slot {
    id: u64,
    cancel: CancellationToken,
}

#[derive(Default)]
struct ZoneState {
    streams: HashMap<Direction, Slot>,
    connected_since: Option<OffsetDateTime>,
    last_disconnect: Option<OffsetDateTime>,
    last_error: Option<String>,
    version: Option<String>,
    global_to_zone: SharedStats,
    zone_to_global: SharedStats,
}

/// The registry of zones' KDS streams; cheap to clone.
#[derive(Clone, Default)]
pub struct Zones {
    inner: Arc<Mutex<HashMap<String, ZoneState>>>,
    next_id: Arc<AtomicU64>,
    /// Zones with at least one open KDS stream (`kds_connected_zones`).
    pub connected: prometheus_client::metrics::gauge::Gauge,
}

/// A registered stream: cancelled when replaced, when its zone is deleted or
/// disabled, or on shutdown.
pub struct Registration {
    pub id: u64,
    pub cancel: CancellationToken,
    pub stats: SharedStats,
}

fn rfc3339(t: Option<OffsetDateTime>) -> Value {
    t.and_then(|t| t.format(&Rfc3339).ok())
        .map_or(Value::Null, Value::String)
}

impl Zones {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, ZoneState>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a new stream of `zone`; an older stream of the same
    /// direction (a reconnect racing its own old connection, or a second CP
    /// with the same token) is cancelled.
    pub fn register(&self, zone: &str, dir: Direction, parent: &CancellationToken) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let cancel = parent.child_token();
        let mut zones = self.lock();
        let st = zones.entry(zone.to_owned()).or_default();
        if st.streams.is_empty() {
            st.connected_since = Some(OffsetDateTime::now_utc());
            self.connected.inc();
        }
        if let Some(old) = st.streams.insert(
            dir,
            Slot {
                id,
                cancel: cancel.clone(),
            },
        ) {
            tracing::info!(zone, ?dir, "a new stream replaces the zone's previous one");
            old.cancel.cancel();
        }
        let stats = match dir {
            Direction::GlobalToZone => st.global_to_zone.clone(),
            Direction::ZoneToGlobal => st.zone_to_global.clone(),
        };
        Registration { id, cancel, stats }
    }

    /// Removes a stream when it ends, recording why.
    pub fn unregister(&self, zone: &str, dir: Direction, id: u64, error: Option<String>) {
        let mut zones = self.lock();
        let Some(st) = zones.get_mut(zone) else {
            return;
        };
        if st.streams.get(&dir).is_some_and(|s| s.id == id) {
            st.streams.remove(&dir);
            if let Some(e) = error {
                st.last_error = Some(e);
            }
            if st.streams.is_empty() {
                self.connected.dec();
                st.last_disconnect = Some(OffsetDateTime::now_utc());
                st.connected_since = None;
            }
        }
    }

    pub fn set_version(&self, zone: &str, version: &str) {
        if let Some(st) = self.lock().get_mut(zone) {
            st.version = Some(version.to_owned());
        }
    }

    /// Cuts every stream of `zone`.
    pub fn disconnect(&self, zone: &str) {
        if let Some(st) = self.lock().get_mut(zone) {
            for slot in st.streams.values() {
                slot.cancel.cancel();
            }
        }
    }

    pub fn is_online(&self, zone: &str) -> bool {
        self.lock().get(zone).is_some_and(|s| !s.streams.is_empty())
    }

    /// The `zoneInsight` of one zone.
    pub fn insight(&self, zone: &str) -> Value {
        let zones = self.lock();
        let Some(st) = zones.get(zone) else {
            return json!({ "online": false });
        };
        let stats = |s: &SharedStats| {
            serde_json::to_value(&*s.lock().unwrap_or_else(|p| p.into_inner())).unwrap_or_default()
        };
        json!({
            "online": !st.streams.is_empty(),
            "connectedSince": rfc3339(st.connected_since),
            "lastDisconnect": rfc3339(st.last_disconnect),
            "lastError": st.last_error,
            "version": st.version,
            "globalToZone": stats(&st.global_to_zone),
            "zoneToGlobal": stats(&st.zone_to_global),
        })
    }
}

/// Meta key of a deleted zone: tokens issued before this time are refused.
pub fn tombstone_key(zone: &str) -> String {
    format!("zone-deleted/{zone}")
}

/// Removes every resource `zone` synced up (Dataplanes, ZoneIngresses).
pub fn purge(store: &Store, zone: &str) -> Result<usize, store::StoreError> {
    let mut ops = Vec::new();
    for ty in api::kds::ZONE_TO_GLOBAL {
        for r in store.list(ty, None)? {
            if r.labels.get(ZONE_TAG).map(String::as_str) == Some(zone) {
                ops.push(Op::DeleteIfExists(r.key()));
            }
        }
    }
    let n = ops.len();
    if n > 0 {
        store.apply(ops)?;
    }
    Ok(n)
}

/// Watches Zone resources: a deleted or disabled zone is disconnected and its
/// synced resources removed (everywhere, since the removals flow to the other
/// zones over KDS). A deleted zone is tombstoned so its old tokens stop working.
pub async fn watch_lifecycle(store: Store, zones: Zones, shutdown: CancellationToken) {
    let mut watch = store.watch();
    loop {
        let change = tokio::select! {
            _ = shutdown.cancelled() => return,
            c = watch.recv() => c,
        };
        let kind = match change {
            Ok(c) => c.kind,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(_) => return,
        };
        let r = kind.resource();
        let Spec::Zone(spec) = &r.spec else { continue };
        let zone = r.name.clone();
        let deleted = matches!(kind, ChangeKind::Delete(_));
        if !deleted && spec.is_enabled() {
            continue;
        }
        zones.disconnect(&zone);
        let store = store.clone();
        let result = tokio::task::spawn_blocking(move || {
            if deleted {
                let now = OffsetDateTime::now_utc().unix_timestamp().to_string();
                store.put_meta(&tombstone_key(&zone), now.as_bytes())?;
            }
            purge(&store, &zone).map(|n| (zone, n))
        })
        .await;
        match result {
            Ok(Ok((zone, n))) => {
                tracing::info!(zone, removed = n, deleted, "zone taken out of the mesh")
            }
            Ok(Err(e)) => tracing::error!(error = %e, "cannot remove a zone's resources"),
            Err(e) => tracing::error!(error = %e, "zone cleanup task failed"),
        }
    }
}

/// Whether a Zone resource exists and is enabled; `None` when absent.
pub fn zone_enabled(store: &Store, zone: &str) -> Result<Option<bool>, store::StoreError> {
    Ok(store
        .get(&ResourceKey::global(ResourceType::Zone, zone))?
        .map(|r| match r.spec {
            Spec::Zone(z) => z.is_enabled(),
            _ => true,
        }))
}
