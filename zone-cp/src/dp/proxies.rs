//! Connected proxies and their generated config.
//!
//! Each connected Dataplane has a watch channel holding its current
//! [`ProxySnapshot`]. A generator task follows the store: after a change it
//! waits a short debounce, then regenerates only the proxies of the meshes
//! that changed and publishes a snapshot only when its content differs, so
//! an unrelated write sends nothing to any Envoy.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::{Resource, ResourceKey, ResourceType, Spec};
use serde::Serialize;
use store::Store;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::identity::Identities;
use super::snapshot::ProxySnapshot;

/// What the zone knows of one proxy's xDS stream, for insights.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyStatus {
    pub connected: bool,
    /// Last version Envoy accepted, per type URL.
    pub acked: BTreeMap<String, String>,
    pub nacks: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_nack: Option<String>,
    /// When its identity certificate expires (RFC 3339), if mTLS is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_expiry: Option<String>,
}

struct Entry {
    tx: watch::Sender<Arc<ProxySnapshot>>,
    streams: usize,
    status: ProxyStatus,
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("{0} is not registered in this zone")]
    UnknownDataplane(ResourceKey),
    #[error("mesh {0:?} does not exist in this zone")]
    UnknownMesh(String),
    #[error("cannot generate config: {0}")]
    Generate(String),
    #[error(transparent)]
    Store(#[from] store::StoreError),
}

/// The registry; cheap to clone.
#[derive(Clone)]
pub struct Proxies {
    store: Store,
    zone: String,
    identities: Identities,
    inner: Arc<Mutex<HashMap<ResourceKey, Entry>>>,
}

impl Proxies {
    pub fn new(store: Store, zone: &str, identities: Identities) -> Self {
        Self {
            store,
            zone: zone.to_owned(),
            identities,
            inner: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ResourceKey, Entry>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Generates the config of one dataplane from the store as it is now.
    pub fn generate(&self, key: &ResourceKey) -> Result<ProxySnapshot, ProxyError> {
        let dp = self
            .store
            .get(key)?
            .ok_or_else(|| ProxyError::UnknownDataplane(key.clone()))?;
        let mesh_name = key.mesh.clone().unwrap_or_default();
        let mesh = self
            .store
            .get(&ResourceKey::global(ResourceType::Mesh, &mesh_name))?
            .ok_or_else(|| ProxyError::UnknownMesh(mesh_name.clone()))?;
        let tps = self
            .store
            .list(ResourceType::TrafficPermission, Some(&mesh_name))?;
        let dps: Vec<Resource> = self
            .store
            .list(ResourceType::Dataplane, Some(&mesh_name))?
            .into_iter()
            .filter(|d| d.labels.get(api::ZONE_TAG).is_none_or(|z| *z == self.zone))
            .collect();
        let snapshot = xds::Snapshot {
            zone: &self.zone,
            mesh: &mesh,
            traffic_permissions: &tps,
            dataplanes: &dps,
        };
        let generated =
            xds::generate(&snapshot, &dp).map_err(|e| ProxyError::Generate(e.to_string()))?;
        let mut items = xds::encode(&generated);
        if mtls_enabled(&mesh) {
            let id = self
                .identities
                .identity(&mesh_name, &dp)
                .map_err(|e| ProxyError::Generate(e.to_string()))?;
            if let Some(st) = self.lock().get_mut(key) {
                st.status.cert_expiry = Some(id.expiry_rfc3339.clone());
            }
            for secret in xds::secrets(&mesh_name, &id.chain_pem, &id.key_pem, &id.ca_pem) {
                let name = secret.name.clone();
                items.push((
                    xds::type_urls::SECRET.to_owned(),
                    name,
                    xds_api::pb::google::protobuf::Any {
                        type_url: xds::type_urls::SECRET.to_owned(),
                        value: prost::Message::encode_to_vec(&secret),
                    },
                ));
            }
        }
        Ok(ProxySnapshot::from_resources(items))
    }

    /// Registers a stream of `key` and returns its snapshot channel.
    pub fn connect(
        &self,
        key: &ResourceKey,
    ) -> Result<watch::Receiver<Arc<ProxySnapshot>>, ProxyError> {
        {
            let mut inner = self.lock();
            if let Some(e) = inner.get_mut(key) {
                e.streams += 1;
                e.status.connected = true;
                return Ok(e.tx.subscribe());
            }
        }
        let snap = Arc::new(self.generate(key)?);
        let mut inner = self.lock();
        let e = inner.entry(key.clone()).or_insert_with(|| Entry {
            tx: watch::channel(snap).0,
            streams: 0,
            status: ProxyStatus::default(),
        });
        e.streams += 1;
        e.status.connected = true;
        Ok(e.tx.subscribe())
    }

    /// A stream of `key` ended. If no stream of it comes back within
    /// `grace`, its Dataplane is removed from the store (a sidecar that died
    /// without deregistering).
    pub fn disconnect(&self, key: &ResourceKey, grace: Duration) {
        let gone = {
            let mut inner = self.lock();
            let Some(e) = inner.get_mut(key) else { return };
            e.streams = e.streams.saturating_sub(1);
            if e.streams == 0 {
                e.status.connected = false;
            }
            e.streams == 0
        };
        if !gone {
            return;
        }
        let this = self.clone();
        let key = key.clone();
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            let still_gone = this.lock().get(&key).is_some_and(|e| e.streams == 0);
            if !still_gone {
                return;
            }
            this.lock().remove(&key);
            let store = this.store.clone();
            let k = key.clone();
            let removed = tokio::task::spawn_blocking(move || {
                store.apply(vec![store::Op::DeleteIfExists(k)])
            })
            .await;
            if let Ok(Ok(out)) = removed {
                if !out.is_empty() {
                    tracing::info!(dataplane = %key, ?grace, "removed a dataplane whose proxy stayed disconnected");
                }
            }
        });
    }

    pub fn record(&self, key: &ResourceKey, f: impl FnOnce(&mut ProxyStatus)) {
        if let Some(e) = self.lock().get_mut(key) {
            f(&mut e.status);
        }
    }

    pub fn status(&self, key: &ResourceKey) -> Option<ProxyStatus> {
        self.lock().get(key).map(|e| e.status.clone())
    }

    /// The keys of connected proxies in `meshes` (all meshes when `None`).
    fn connected(&self, meshes: Option<&BTreeSet<String>>) -> Vec<ResourceKey> {
        self.lock()
            .iter()
            .filter(|(k, e)| {
                e.streams > 0
                    && meshes.is_none_or(|m| k.mesh.as_ref().is_some_and(|x| m.contains(x)))
            })
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Regenerates the proxies of `meshes` and publishes changed snapshots.
    /// Returns how many proxies got a new snapshot.
    pub fn regenerate(&self, meshes: Option<&BTreeSet<String>>) -> usize {
        let mut changed = 0;
        for key in self.connected(meshes) {
            let snap = match self.generate(&key) {
                Ok(s) => Arc::new(s),
                Err(e) => {
                    tracing::warn!(dataplane = %key, error = %e, "cannot regenerate config");
                    continue;
                }
            };
            if let Some(e) = self.lock().get(&key) {
                let sent = e.tx.send_if_modified(|cur| {
                    if **cur == *snap {
                        false
                    } else {
                        *cur = snap.clone();
                        true
                    }
                });
                changed += usize::from(sent);
            }
        }
        changed
    }

    /// Follows the store and regenerates after each burst of changes.
    pub async fn run(self, debounce: Duration, shutdown: CancellationToken) {
        let mut watch = self.store.watch();
        loop {
            let renewal = self.identities.next_renewal();
            let first = tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = sleep_until(renewal) => {
                    let this = self.clone();
                    let renewed = tokio::task::spawn_blocking(move || this.regenerate(None)).await.unwrap_or(0);
                    tracing::info!(proxies = renewed, "renewed workload certificates");
                    continue;
                }
                c = watch.recv() => c,
            };
            let mut meshes = BTreeSet::new();
            let mut all = false;
            let mut note = |c: Result<store::Change, tokio::sync::broadcast::error::RecvError>,
                            all: &mut bool| match c {
                Ok(c) => {
                    let r = c.kind.resource();
                    match (&r.mesh, &r.spec) {
                        (Some(m), _) => {
                            meshes.insert(m.clone());
                        }
                        (None, Spec::Mesh(_)) => {
                            meshes.insert(r.name.clone());
                        }
                        _ => *all = true,
                    }
                }
                Err(_) => *all = true,
            };
            note(first, &mut all);
            let deadline = tokio::time::sleep(debounce);
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    _ = &mut deadline => break,
                    c = watch.recv() => note(c, &mut all),
                }
            }
            let this = self.clone();
            let started = std::time::Instant::now();
            let changed = tokio::task::spawn_blocking(move || {
                this.regenerate(if all { None } else { Some(&meshes) })
            })
            .await
            .unwrap_or(0);
            tracing::debug!(changed, took = ?started.elapsed(), "regenerated proxy config");
        }
    }
}

pub fn mtls_enabled(mesh: &Resource) -> bool {
    matches!(&mesh.spec, Spec::Mesh(m) if m.mtls.as_ref().and_then(|t| t.enabled_backend.as_ref()).is_some_and(|b| !b.is_empty()))
}

/// Sleeps until `at`, or forever when there is nothing to wait for.
async fn sleep_until(at: Option<std::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}
