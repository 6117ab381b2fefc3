//! Connected proxies and their generated config.
//!
//! Each connected Dataplane has a watch channel holding its current
//! [`ProxySnapshot`]. A generator task follows the store: after a change it
//! waits a short debounce, then regenerates only the proxies of the meshes
//! that changed and publishes a snapshot only when its content differs, so
//! an unrelated write sends nothing to any Envoy.
//!
//! A mesh's inputs (Mesh, TrafficPermissions, Dataplanes) are loaded once
//! per pass into a [`MeshContext`] shared by all its proxies, endpoints are
//! looked up through a per-service index, and identical encoded resources
//! (a cluster, an endpoint list, the mesh CA) are interned so a thousand
//! proxies hold one copy.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Weak;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use api::{Resource, ResourceKey, ResourceType, Spec};
use serde::Serialize;
use store::Store;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;
use xds_api::pb::google::protobuf::Any;

use super::identity::{Identities, IdentityError};
use super::metrics::XdsMetrics;
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
    /// The status changed since the insight was last written.
    dirty: bool,
    /// When the change behind a snapshot not yet fully ACKed happened.
    pending_since: Option<Instant>,
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
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
}

/// A mesh's inputs, loaded once per generation pass.
pub struct MeshContext {
    pub mesh: Resource,
    pub traffic_permissions: Vec<Resource>,
    /// This zone's Dataplanes of the mesh (shared between loads).
    pub dataplanes: Vec<Arc<Resource>>,
    /// Every zone's ZoneIngresses, hostnames resolved to IPs.
    pub zone_ingresses: Vec<Resource>,
    /// Service name to the indexes in `dataplanes` that have an inbound of it.
    by_service: HashMap<String, Vec<usize>>,
    by_name: HashMap<String, usize>,
    /// Each service's endpoints, encoded and interned on first use: they
    /// depend on this context only, so proxies share them.
    endpoints: Mutex<HashMap<String, Shared>>,
}

impl MeshContext {
    pub fn load(
        store: &Store,
        zone: &str,
        mesh: &str,
        names: &super::names::Names,
    ) -> Result<Option<Self>, ProxyError> {
        let Some(mesh_res) = store.get(&ResourceKey::global(ResourceType::Mesh, mesh))? else {
            return Ok(None);
        };
        let traffic_permissions = store.list(ResourceType::TrafficPermission, Some(mesh))?;
        let dataplanes = store
            .list(ResourceType::Dataplane, Some(mesh))?
            .into_iter()
            .filter(|d| d.labels.get(api::ZONE_TAG).is_none_or(|z| z == zone))
            .map(Arc::new)
            .collect();
        let mut zone_ingresses = store.list(ResourceType::ZoneIngress, None)?;
        names.substitute(&mut zone_ingresses);
        Ok(Some(Self::build(
            mesh_res,
            traffic_permissions,
            dataplanes,
            zone_ingresses,
        )))
    }

    fn build(
        mesh: Resource,
        traffic_permissions: Vec<Resource>,
        dataplanes: Vec<Arc<Resource>>,
        zone_ingresses: Vec<Resource>,
    ) -> Self {
        let mut by_service: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, dp) in dataplanes.iter().enumerate() {
            for service in services(dp, |n| &n.inbound) {
                let list = by_service.entry(service).or_default();
                if list.last() != Some(&i) {
                    list.push(i);
                }
            }
        }
        let by_name = dataplanes
            .iter()
            .enumerate()
            .map(|(i, d)| (d.name.clone(), i))
            .collect();
        Self {
            by_name,
            zone_ingresses,
            mesh,
            traffic_permissions,
            dataplanes,
            by_service,
            endpoints: Mutex::default(),
        }
    }

    /// This context with the changes `affects` lists read from the store:
    /// the permissions when one changed, and only the dataplanes that did,
    /// so a change in a mesh of 10,000 dataplanes does not reload them all.
    fn patched(
        &self,
        store: &Store,
        zone: &str,
        affects: &Affects,
    ) -> Result<Option<Self>, ProxyError> {
        let mesh = &self.mesh.name;
        let Some(mesh_res) = store.get(&ResourceKey::global(ResourceType::Mesh, mesh))? else {
            return Ok(None);
        };
        let traffic_permissions = if affects.permissions_changed {
            store.list(ResourceType::TrafficPermission, Some(mesh))?
        } else {
            self.traffic_permissions.clone()
        };
        let mut dataplanes: Vec<Arc<Resource>> = self
            .dataplanes
            .iter()
            .filter(|d| !affects.changed_dataplanes.contains(&d.name))
            .cloned()
            .collect();
        for name in &affects.changed_dataplanes {
            let key = ResourceKey::scoped(ResourceType::Dataplane, mesh, name);
            if let Some(d) = store.get(&key)? {
                if d.labels.get(api::ZONE_TAG).is_none_or(|z| z == zone) {
                    dataplanes.push(Arc::new(d));
                }
            }
        }
        Ok(Some(Self::build(
            mesh_res,
            traffic_permissions,
            dataplanes,
            self.zone_ingresses.clone(),
        )))
    }

    pub fn dataplane(&self, name: &str) -> Option<&Resource> {
        self.by_name.get(name).map(|&i| &*self.dataplanes[i])
    }

    /// The encoded endpoints of `service`, computed once per context.
    fn service_endpoints(&self, zone: &str, service: &str, interner: &Mutex<Interner>) -> Shared {
        if let Some(found) = self
            .endpoints
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(service)
        {
            return found.clone();
        }
        let sources: Vec<Resource> = self
            .by_service
            .get(service)
            .into_iter()
            .flatten()
            .map(|&i| (*self.dataplanes[i]).clone())
            .collect();
        let snapshot = xds::Snapshot {
            zone,
            mesh: &self.mesh,
            traffic_permissions: &[],
            dataplanes: &sources,
            zone_ingresses: &self.zone_ingresses,
        };
        let assignments = xds::endpoints_of(&snapshot, &BTreeSet::from([service]));
        let encoded = xds::encode(&xds::ProxyResources {
            endpoints: assignments,
            ..Default::default()
        });
        let mut interner = interner.lock().unwrap_or_else(|p| p.into_inner());
        let shared = encoded
            .into_iter()
            .map(|(t, n, any)| {
                let (a, h) = interner.intern(&t, &n, any);
                (t, n, a, h)
            })
            .next()
            .unwrap_or_default();
        drop(interner);
        self.endpoints
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(service.to_owned(), shared.clone());
        shared
    }
}

use super::snapshot::Shared;

/// The `kuma.io/service` values of a dataplane's inbounds or outbounds.
fn services<'a, T: HasTags + 'a>(
    dp: &'a Resource,
    pick: impl Fn(&'a api::DataplaneNetworking) -> &'a Vec<T>,
) -> impl Iterator<Item = String> + 'a {
    let list: &[T] = match &dp.spec {
        Spec::Dataplane(d) => pick(&d.networking),
        _ => &[],
    };
    list.iter()
        .filter_map(|x| x.tags().get(api::SERVICE_TAG).cloned())
}

trait HasTags {
    fn tags(&self) -> &api::Tags;
}

impl HasTags for api::Inbound {
    fn tags(&self) -> &api::Tags {
        &self.tags
    }
}

impl HasTags for api::Outbound {
    fn tags(&self) -> &api::Tags {
        &self.tags
    }
}

/// Shares equal encoded resources between proxies.
#[derive(Default)]
struct Interner {
    map: HashMap<(String, String, u64), Weak<Any>>,
    inserts: usize,
}

impl Interner {
    fn intern(&mut self, type_url: &str, name: &str, any: Any) -> (Arc<Any>, u64) {
        let hash = super::snapshot::hash_bytes(&any.value);
        let key = (type_url.to_owned(), name.to_owned(), hash);
        if let Some(found) = self.map.get(&key).and_then(Weak::upgrade) {
            if found.value == any.value {
                return (found, hash);
            }
        }
        let shared = Arc::new(any);
        self.map.insert(key, Arc::downgrade(&shared));
        self.inserts += 1;
        if self.inserts >= self.map.len().max(1024) {
            self.map.retain(|_, w| w.strong_count() > 0);
            self.inserts = 0;
        }
        (shared, hash)
    }
}

/// Which proxies of a mesh a burst of changes can affect.
#[derive(Debug, Default, Clone)]
pub struct Affects {
    pub all: bool,
    /// Proxies with an inbound of one of these services (their RBAC).
    pub inbound: BTreeSet<String>,
    /// Proxies with an outbound to one of these services (their endpoints).
    pub outbound: BTreeSet<String>,
    /// These proxies themselves.
    pub names: BTreeSet<String>,
    /// What the mesh's context must re-read: everything, or the
    /// permissions and these dataplanes.
    pub full_reload: bool,
    pub permissions_changed: bool,
    pub changed_dataplanes: BTreeSet<String>,
}

impl Affects {
    fn everything() -> Self {
        Self {
            all: true,
            full_reload: true,
            ..Default::default()
        }
    }

    /// Notes the services a TrafficPermission's destinations select; a
    /// wildcard or a selector without a service affects every proxy.
    fn permission(&mut self, tp: &Resource) {
        let Spec::TrafficPermission(spec) = &tp.spec else {
            return;
        };
        for d in &spec.destinations {
            match d.match_tags.get(api::SERVICE_TAG) {
                Some(s) if s != "*" => {
                    self.inbound.insert(s.clone());
                }
                _ => self.all = true,
            }
        }
    }

    /// Notes a Dataplane: itself, and the callers of its services.
    fn dataplane(&mut self, dp: &Resource) {
        self.names.insert(dp.name.clone());
        self.outbound.extend(services(dp, |n| &n.inbound));
    }

    /// What differs between two loads of a mesh: the proxies whose config
    /// can differ. Derived from the contexts themselves, not from change
    /// events, so a change that lands while a pass runs is never missed.
    fn between(prev: &MeshContext, next: &MeshContext) -> Self {
        let mut a = Self::default();
        if prev.mesh != next.mesh || prev.zone_ingresses != next.zone_ingresses {
            return Self::everything();
        }
        let tps = |c: &MeshContext| -> HashMap<String, usize> {
            c.traffic_permissions
                .iter()
                .enumerate()
                .map(|(i, t)| (t.name.clone(), i))
                .collect()
        };
        let (pt, nt) = (tps(prev), tps(next));
        for name in pt.keys().chain(nt.keys()) {
            let old = pt.get(name).map(|&i| &prev.traffic_permissions[i]);
            let new = nt.get(name).map(|&i| &next.traffic_permissions[i]);
            if old != new {
                old.into_iter().chain(new).for_each(|t| a.permission(t));
            }
        }
        for name in prev.by_name.keys().chain(next.by_name.keys()) {
            let arc = |c: &MeshContext| c.by_name.get(name).map(|&i| c.dataplanes[i].clone());
            let (old, new) = (arc(prev), arc(next));
            // A patched context shares the unchanged ones: compare pointers first.
            let same = match (&old, &new) {
                (Some(o), Some(n)) => Arc::ptr_eq(o, n) || o == n,
                (None, None) => true,
                _ => false,
            };
            if !same {
                old.iter().chain(new.iter()).for_each(|d| a.dataplane(d));
            }
        }
        a
    }

    fn merge(&mut self, other: Affects) {
        self.all |= other.all;
        self.full_reload |= other.full_reload;
        self.permissions_changed |= other.permissions_changed;
        self.changed_dataplanes.extend(other.changed_dataplanes);
        self.inbound.extend(other.inbound);
        self.outbound.extend(other.outbound);
        self.names.extend(other.names);
    }

    fn covers(&self, dp: Option<&Resource>) -> bool {
        let Some(dp) = dp else { return true };
        self.all
            || self.names.contains(&dp.name)
            || services(dp, |n| &n.inbound).any(|s| self.inbound.contains(&s))
            || services(dp, |n| &n.outbound).any(|s| self.outbound.contains(&s))
    }
}

/// Below this many proxies per extra thread, a pass stays on one thread.
const PARALLEL_BATCH: usize = 256;

/// The registry; cheap to clone.
#[derive(Clone)]
pub struct Proxies {
    store: Store,
    zone: String,
    identities: Identities,
    inner: Arc<Mutex<HashMap<ResourceKey, Entry>>>,
    contexts: Arc<Mutex<HashMap<String, Arc<MeshContext>>>>,
    interner: Arc<Mutex<Interner>>,
    /// Wakes the insight writer.
    changed: Arc<Notify>,
    metrics: XdsMetrics,
    names: super::names::Names,
}

impl Proxies {
    pub fn new(store: Store, zone: &str, identities: Identities) -> Self {
        Self {
            store,
            zone: zone.to_owned(),
            identities,
            inner: Arc::default(),
            contexts: Arc::default(),
            interner: Arc::default(),
            changed: Arc::default(),
            metrics: XdsMetrics::default(),
            names: Default::default(),
        }
    }

    /// Resolved ingress hostnames, for [`super::names::run`].
    pub fn names(&self) -> &super::names::Names {
        &self.names
    }

    /// Records into `metrics` (registered by the caller).
    pub fn with_metrics(mut self, metrics: XdsMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    fn count_connected(&self, inner: &HashMap<ResourceKey, Entry>) {
        let n = inner.values().filter(|e| e.streams > 0).count();
        self.metrics.connected.set(n as i64);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ResourceKey, Entry>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn identities(&self) -> &Identities {
        &self.identities
    }

    /// The mesh's context, loaded when there is none cached.
    fn context(&self, mesh: &str) -> Result<Arc<MeshContext>, ProxyError> {
        if let Some(c) = self
            .contexts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(mesh)
        {
            return Ok(c.clone());
        }
        self.reload_context(mesh)
    }

    fn reload_context(&self, mesh: &str) -> Result<Arc<MeshContext>, ProxyError> {
        self.refresh_context(mesh, None, &Affects::everything())
    }

    /// Re-reads a mesh's context: patched from `prev` with what `affects`
    /// lists when it can, else loaded in full; caches and returns it.
    fn refresh_context(
        &self,
        mesh: &str,
        prev: Option<&MeshContext>,
        affects: &Affects,
    ) -> Result<Arc<MeshContext>, ProxyError> {
        let loaded = match prev {
            Some(prev) if !affects.full_reload => prev.patched(&self.store, &self.zone, affects)?,
            _ => MeshContext::load(&self.store, &self.zone, mesh, &self.names)?,
        };
        let mut contexts = self.contexts.lock().unwrap_or_else(|p| p.into_inner());
        match loaded {
            Some(c) => {
                let c = Arc::new(c);
                contexts.insert(mesh.to_owned(), c.clone());
                Ok(c)
            }
            None => {
                contexts.remove(mesh);
                Err(ProxyError::UnknownMesh(mesh.to_owned()))
            }
        }
    }

    /// Generates the config of one dataplane from the store as it is now.
    pub fn generate(&self, key: &ResourceKey) -> Result<ProxySnapshot, ProxyError> {
        match &key.mesh {
            None => self.generate_ingress(key),
            Some(mesh) => {
                // A fresh load that does not replace the cached context: the
                // next pass diffs against what the proxies were given.
                let ctx = MeshContext::load(&self.store, &self.zone, mesh, &self.names)?
                    .ok_or_else(|| ProxyError::UnknownMesh(mesh.clone()))?;
                self.generate_in(&ctx, key)
            }
        }
    }

    /// Generates the config of one dataplane of `ctx`'s mesh. The dataplane
    /// itself is read fresh (it may have just registered).
    fn generate_in(
        &self,
        ctx: &MeshContext,
        key: &ResourceKey,
    ) -> Result<ProxySnapshot, ProxyError> {
        let started = Instant::now();
        let snap = self.generate_untimed(ctx, key);
        self.metrics
            .proxy_generation
            .observe(started.elapsed().as_secs_f64());
        snap
    }

    fn generate_untimed(
        &self,
        ctx: &MeshContext,
        key: &ResourceKey,
    ) -> Result<ProxySnapshot, ProxyError> {
        // From the context when it has it (a pass reloads it first), else
        // fresh from the store (a proxy that just registered).
        let fresh;
        let dp = match ctx.dataplane(&key.name) {
            Some(d) => d,
            None => {
                fresh = self
                    .store
                    .get(key)?
                    .ok_or_else(|| ProxyError::UnknownDataplane(key.clone()))?;
                &fresh
            }
        };
        let snapshot = xds::Snapshot {
            zone: &self.zone,
            mesh: &ctx.mesh,
            traffic_permissions: &ctx.traffic_permissions,
            dataplanes: &[],
            zone_ingresses: &ctx.zone_ingresses,
        };
        let (generated, services) =
            xds::generate_parts(&snapshot, dp).map_err(|e| ProxyError::Generate(e.to_string()))?;
        let items = xds::encode(&generated);
        let mut extra: Vec<Shared> = services
            .iter()
            .map(|s| ctx.service_endpoints(&self.zone, s, &self.interner))
            .collect();
        if mtls_enabled(&ctx.mesh) {
            let id = self.identities.identity(&ctx.mesh, dp)?;
            if let Some(st) = self.lock().get_mut(key) {
                if st.status.cert_expiry.as_ref() != Some(&id.expiry_rfc3339) {
                    st.status.cert_expiry = Some(id.expiry_rfc3339.clone());
                    st.dirty = true;
                }
            }
            extra.extend(self.encoded_secrets(&ctx.mesh.name, &id).iter().cloned());
        }
        Ok(self.shared_snapshot(items, &extra))
    }

    /// The SDS secrets of an identity, encoded and interned once per
    /// certificate rather than on every pass.
    fn encoded_secrets(&self, mesh: &str, id: &super::identity::Identity) -> Arc<Vec<Shared>> {
        id.encoded
            .get_or_init(|| {
                let items = xds::encode_secrets(&xds::secrets(
                    mesh,
                    &id.chain_pem,
                    &id.key_pem,
                    &id.ca_pem,
                ));
                let mut interner = self.interner.lock().unwrap_or_else(|p| p.into_inner());
                Arc::new(
                    items
                        .into_iter()
                        .map(|(t, n, any)| {
                            let (shared, hash) = interner.intern(&t, &n, any);
                            (t, n, shared, hash)
                        })
                        .collect(),
                )
            })
            .clone()
    }

    /// A snapshot of `items` (and already interned `extra`), sharing equal
    /// resources with other proxies.
    fn shared_snapshot(
        &self,
        items: Vec<(String, String, Any)>,
        extra: &[Shared],
    ) -> ProxySnapshot {
        let mut interner = self.interner.lock().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<(String, String, Arc<Any>, u64)> = items
            .into_iter()
            .map(|(type_url, name, any)| {
                let (shared, hash) = interner.intern(&type_url, &name, any);
                (type_url, name, shared, hash)
            })
            .collect();
        drop(interner);
        all.extend(extra.iter().cloned());
        ProxySnapshot::from_hashed(all)
    }

    /// The config of one of this zone's ingresses: a passthrough filter
    /// chain per service of every mTLS mesh that runs here.
    fn generate_ingress(&self, key: &ResourceKey) -> Result<ProxySnapshot, ProxyError> {
        let zi = self
            .store
            .get(key)?
            .ok_or_else(|| ProxyError::UnknownDataplane(key.clone()))?;
        let meshes = self.store.list(ResourceType::Mesh, None)?;
        let dataplanes: Vec<Resource> = self
            .store
            .list(ResourceType::Dataplane, None)?
            .into_iter()
            .filter(|d| d.labels.get(api::ZONE_TAG).is_none_or(|z| *z == self.zone))
            .collect();
        let snapshot = xds::ingress::IngressSnapshot {
            zone: &self.zone,
            meshes: &meshes,
            dataplanes: &dataplanes,
        };
        let generated = xds::ingress::generate_ingress(&snapshot, &zi)
            .map_err(|e| ProxyError::Generate(e.to_string()))?;
        Ok(self.shared_snapshot(xds::encode(&generated), &[]))
    }

    /// Generates the config of any proxy: a Dataplane or a ZoneIngress.
    fn generate_any(&self, key: &ResourceKey) -> Result<ProxySnapshot, ProxyError> {
        match &key.mesh {
            None => self.generate_ingress(key),
            Some(mesh) => {
                let ctx = self.context(mesh)?;
                self.generate_in(&ctx, key)
            }
        }
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
                e.dirty = true;
                e.pending_since = Some(Instant::now());
                let rx = e.tx.subscribe();
                self.count_connected(&inner);
                self.changed.notify_one();
                return Ok(rx);
            }
        }
        let snap = Arc::new(self.generate_any(key)?);
        let mut inner = self.lock();
        let e = inner.entry(key.clone()).or_insert_with(|| Entry {
            tx: watch::channel(snap).0,
            streams: 0,
            status: ProxyStatus {
                cert_expiry: key
                    .mesh
                    .as_deref()
                    .and_then(|m| self.identities.expiry(m, &key.name)),
                ..Default::default()
            },
            dirty: true,
            pending_since: None,
        });
        e.streams += 1;
        e.status.connected = true;
        e.dirty = true;
        e.pending_since = Some(Instant::now());
        let rx = e.tx.subscribe();
        self.count_connected(&inner);
        self.changed.notify_one();
        Ok(rx)
    }

    /// A stream of `key` ended. If no stream of it comes back within
    /// `grace`, its Dataplane is removed from the store (a sidecar that died
    /// without deregistering).
    pub fn disconnect(&self, key: &ResourceKey, grace: Duration) {
        let gone = {
            let mut inner = self.lock();
            let Some(e) = inner.get_mut(key) else { return };
            e.streams = e.streams.saturating_sub(1);
            let gone = e.streams == 0;
            if gone {
                e.status.connected = false;
                e.dirty = true;
                e.pending_since = None;
                self.changed.notify_one();
            }
            self.count_connected(&inner);
            gone
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
            this.identities
                .forget(key.mesh.as_deref().unwrap_or_default(), &key.name);
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

    /// Updates a proxy's status (its stream's ACKs and NACKs); counts
    /// them, and when the proxy now holds all of its current config,
    /// records how long that took since the change.
    pub fn record(&self, key: &ResourceKey, f: impl FnOnce(&mut ProxyStatus)) {
        let mut inner = self.lock();
        let Some(e) = inner.get_mut(key) else { return };
        let (acked_before, nacks_before) = (e.status.acked.clone(), e.status.nacks);
        f(&mut e.status);
        e.dirty = true;
        self.changed.notify_one();
        for (type_url, version) in &e.status.acked {
            if acked_before.get(type_url) != Some(version) {
                self.metrics
                    .acks
                    .get_or_create(&XdsMetrics::label(type_url))
                    .inc();
            }
        }
        if e.status.nacks > nacks_before {
            let type_url = e
                .status
                .last_nack
                .as_deref()
                .and_then(|n| n.split_once(": "))
                .map_or("unknown", |(t, _)| t);
            self.metrics
                .nacks
                .get_or_create(&XdsMetrics::label(type_url))
                .inc_by(e.status.nacks - nacks_before);
        }
        if let Some(since) = e.pending_since {
            let snap = e.tx.borrow();
            let complete = snap
                .types
                .iter()
                .all(|(t, r)| e.status.acked.get(t) == Some(&r.version));
            drop(snap);
            if complete {
                self.metrics.delivery.observe(since.elapsed().as_secs_f64());
                e.pending_since = None;
            }
        }
    }

    pub fn status(&self, key: &ResourceKey) -> Option<ProxyStatus> {
        self.lock().get(key).map(|e| e.status.clone())
    }

    /// Statuses changed since the last call.
    pub fn take_dirty(&self) -> Vec<(ResourceKey, ProxyStatus)> {
        self.lock()
            .iter_mut()
            .filter(|(_, e)| e.dirty)
            .map(|(k, e)| {
                e.dirty = false;
                (k.clone(), e.status.clone())
            })
            .collect()
    }

    /// Resolves when a status changed.
    pub async fn status_changed(&self) {
        self.changed.notified().await
    }

    /// The keys of connected proxies in `mesh`.
    fn connected(&self, mesh: &str) -> Vec<ResourceKey> {
        self.lock()
            .iter()
            .filter(|(k, e)| e.streams > 0 && k.mesh.as_deref() == Some(mesh))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Every mesh a connected proxy is in.
    fn connected_meshes(&self) -> BTreeSet<String> {
        self.lock()
            .iter()
            .filter(|(_, e)| e.streams > 0)
            .filter_map(|(k, _)| k.mesh.clone())
            .collect()
    }

    /// Regenerates the proxies of `meshes` (every mesh with a connected
    /// proxy when `None`) and publishes changed snapshots. Returns how many
    /// proxies got a new snapshot.
    pub fn regenerate(&self, meshes: Option<&BTreeSet<String>>) -> usize {
        let meshes = meshes.cloned().unwrap_or_else(|| self.connected_meshes());
        let scope = meshes
            .into_iter()
            .map(|m| (m, Affects::everything()))
            .collect();
        self.regenerate_since(&scope, Instant::now())
    }

    /// Regenerates the proxies `scope` says may be affected by a change that
    /// happened at `since`.
    fn regenerate_since(&self, scope: &BTreeMap<String, Affects>, since: Instant) -> usize {
        let started = Instant::now();
        let changed = self.regenerate_meshes(scope, since);
        self.metrics
            .regeneration
            .observe(started.elapsed().as_secs_f64());
        changed
    }

    fn regenerate_meshes(&self, scope: &BTreeMap<String, Affects>, since: Instant) -> usize {
        let mut changed = 0;
        for (mesh, asked) in scope {
            self.identities.forget_ca(mesh);
            let prev = self
                .contexts
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(mesh)
                .cloned();
            let ctx = match self.refresh_context(mesh, prev.as_deref(), asked) {
                Ok(c) => c,
                Err(ProxyError::UnknownMesh(_)) => continue,
                Err(e) => {
                    tracing::warn!(mesh, error = %e, "cannot load the mesh");
                    continue;
                }
            };
            if mtls_enabled(&ctx.mesh) {
                self.identities.prepare(mesh);
            }
            let mut affects = asked.clone();
            match &prev {
                Some(prev) => affects.merge(Affects::between(prev, &ctx)),
                None => affects.all = true,
            }
            let keys: Vec<ResourceKey> = self
                .connected(mesh)
                .into_iter()
                .filter(|k| affects.covers(ctx.dataplane(&k.name)))
                .collect();
            changed += self.generate_and_publish(&ctx, &keys, since);
        }
        if !scope.is_empty() {
            let ingresses: Vec<ResourceKey> = self
                .lock()
                .iter()
                .filter(|(k, e)| e.streams > 0 && k.ty == ResourceType::ZoneIngress)
                .map(|(k, _)| k.clone())
                .collect();
            for key in ingresses {
                match self.generate_ingress(&key) {
                    Ok(snap) => changed += usize::from(self.publish(&key, Arc::new(snap), since)),
                    Err(e) => {
                        tracing::warn!(ingress = %key, error = %e, "cannot regenerate config")
                    }
                }
            }
        }
        changed
    }

    /// Notes which meshes a store change touches, and whether every proxy
    /// of a mesh is affected (`all`: of every mesh).
    fn note(
        &self,
        c: Result<store::Change, tokio::sync::broadcast::error::RecvError>,
        scope: &mut BTreeMap<String, Affects>,
        all: &mut bool,
    ) {
        let Ok(c) = c else {
            *all = true;
            return;
        };
        let r = c.kind.resource();
        let mesh = match (r.ty(), &r.mesh) {
            // Written by this zone for others, or not read by any proxy.
            (
                ResourceType::MeshCaRequest
                | ResourceType::DataplaneInsight
                | ResourceType::DataplaneTokenKey
                | ResourceType::Zone,
                _,
            ) => return,
            (ResourceType::Mesh, None) => {
                scope.insert(r.name.clone(), Affects::everything());
                return;
            }
            (_, Some(m)) => m.clone(),
            _ => {
                *all = true;
                return;
            }
        };
        let affects = scope.entry(mesh).or_default();
        // Which permissions and dataplanes changed is read off the mesh's
        // context before and after the pass (Affects::between).
        match r.ty() {
            ResourceType::TrafficPermission => affects.permissions_changed = true,
            ResourceType::Dataplane => {
                affects.changed_dataplanes.insert(r.name.clone());
            }
            _ => {
                affects.all = true;
                affects.full_reload = true;
            }
        }
    }

    /// Regenerates `keys` of `ctx`'s mesh, on every core for large sets;
    /// returns how many got a new snapshot.
    fn generate_and_publish(
        &self,
        ctx: &MeshContext,
        keys: &[ResourceKey],
        since: Instant,
    ) -> usize {
        let one = |key: &ResourceKey| match self.generate_in(ctx, key) {
            Ok(snap) => usize::from(self.publish(key, Arc::new(snap), since)),
            Err(e) => {
                tracing::warn!(dataplane = %key, error = %e, "cannot regenerate config");
                0
            }
        };
        let threads = std::thread::available_parallelism()
            .map_or(1, usize::from)
            .min(keys.len() / PARALLEL_BATCH + 1);
        if threads <= 1 {
            return keys.iter().map(one).sum();
        }
        let chunk = keys.len().div_ceil(threads);
        std::thread::scope(|scope| {
            let workers: Vec<_> = keys
                .chunks(chunk)
                .map(|part| scope.spawn(move || part.iter().map(one).sum::<usize>()))
                .collect();
            workers.into_iter().map(|w| w.join().unwrap_or(0)).sum()
        })
    }

    /// Hands `snap` to the proxy's stream unless it already has that
    /// content; returns whether it changed.
    fn publish(&self, key: &ResourceKey, snap: Arc<ProxySnapshot>, since: Instant) -> bool {
        let mut inner = self.lock();
        let Some(e) = inner.get_mut(key) else {
            return false;
        };
        let sent = e.tx.send_if_modified(|cur| {
            if **cur == *snap {
                false
            } else {
                *cur = snap.clone();
                true
            }
        });
        if sent {
            e.pending_since.get_or_insert(since);
        }
        sent
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
            let first_at = Instant::now();
            let mut scope = BTreeMap::new();
            let mut all = false;
            self.note(first, &mut scope, &mut all);
            if scope.is_empty() && !all {
                continue;
            }
            let deadline = tokio::time::sleep(debounce);
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    _ = &mut deadline => break,
                    c = watch.recv() => self.note(c, &mut scope, &mut all),
                }
            }
            if all {
                let store = self.store.clone();
                if let Ok(Ok(list)) =
                    tokio::task::spawn_blocking(move || store.list(ResourceType::Mesh, None)).await
                {
                    for m in list {
                        scope.insert(m.name, Affects::everything());
                    }
                }
            }
            let this = self.clone();
            let started = std::time::Instant::now();
            let changed =
                tokio::task::spawn_blocking(move || this.regenerate_since(&scope, first_at))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn put(store: &Store, yaml: &str) {
        let v = api::parse_documents(yaml).unwrap().pop().unwrap();
        store
            .put(Resource::from_value(v).unwrap(), store::Precondition::None)
            .unwrap();
    }

    fn dp(store: &Store, name: &str, service: &str, outbound: &str) {
        put(
            store,
            &format!("type: Dataplane\nmesh: m\nname: {name}\nnetworking:\n  address: 127.0.0.1\n  inbound:\n    - port: 1000\n      tags:\n        kuma.io/service: {service}\n  outbound:\n    - port: 2000\n      tags:\n        kuma.io/service: {outbound}\n"),
        );
    }

    fn tp(store: &Store, destination: &str) {
        put(
            store,
            &format!("type: TrafficPermission\nmesh: m\nname: p\nsources:\n  - match:\n      kuma.io/service: '*'\ndestinations:\n  - match:\n      kuma.io/service: '{destination}'\n"),
        );
    }

    #[test]
    fn only_proxies_a_change_can_affect_are_regenerated() {
        let store = Store::temporary().unwrap();
        put(&store, "type: Mesh\nname: m\n");
        dp(&store, "a-1", "a", "b");
        dp(&store, "b-1", "b", "c");
        dp(&store, "c-1", "c", "a");
        tp(&store, "a");
        let names = super::super::names::Names::default();
        let load = || {
            MeshContext::load(&store, "z", "m", &names)
                .unwrap()
                .unwrap()
        };
        let covered = |a: &Affects, ctx: &MeshContext| -> Vec<String> {
            ["a-1", "b-1", "c-1"]
                .into_iter()
                .filter(|n| a.covers(ctx.dataplane(n)))
                .map(str::to_owned)
                .collect()
        };
        let before = load();
        // The permission moves from a to b: both a's and b's proxies.
        tp(&store, "b");
        let after = load();
        let a = Affects::between(&before, &after);
        assert_eq!(covered(&a, &after), ["a-1", "b-1"]);
        // A new instance of c: itself and c's callers (b).
        dp(&store, "c-2", "c", "a");
        let later = load();
        let a = Affects::between(&after, &later);
        assert_eq!(covered(&a, &later), ["b-1"]);
        assert!(a.covers(later.dataplane("c-2")));
        // Patching a context with what changed gives what a full load gives.
        let patched = after
            .patched(
                &store,
                "z",
                &Affects {
                    changed_dataplanes: BTreeSet::from(["c-2".to_owned()]),
                    ..Default::default()
                },
            )
            .unwrap()
            .unwrap();
        assert!(covered(&Affects::between(&later, &patched), &later).is_empty());
        assert_eq!(patched.dataplanes.len(), 4);
        assert!(patched.dataplane("c-2").is_some());
        // No change: nobody.
        assert!(covered(&Affects::between(&later, &load()), &later).is_empty());
        // A wildcard destination: everybody.
        tp(&store, "*");
        let wild = load();
        assert_eq!(covered(&Affects::between(&later, &wild), &wild).len(), 3);
    }
}
