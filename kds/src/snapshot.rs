//! The publisher's view of its store: for each published type, every
//! resource's wire name, version and encoded payload, kept current from the
//! store's change watch. One cache serves every stream, so 50 zones cost one
//! copy of the payloads; each stream keeps only the versions its peer has.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use api::{kds, Resource, ResourceType};
use store::{ChangeKind, Store};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// One resource as published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub version: Arc<str>,
    pub payload: Arc<[u8]>,
    /// The `kuma.io/zone` label, so a stream can leave out its peer's own.
    pub zone: Option<Arc<str>>,
}

impl Entry {
    pub fn of(r: &Resource) -> Self {
        Self {
            version: kds::version(r).into(),
            payload: kds::encode(r).into(),
            zone: r.labels.get(api::ZONE_TAG).map(|z| Arc::from(z.as_str())),
        }
    }
}

/// What changed in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Changed(ResourceType, String),
    /// The cache reloaded everything (after the store watch lagged): compare
    /// every resource again.
    Resync,
}

type Filter = Box<dyn Fn(&Resource) -> bool + Send + Sync>;

pub struct SnapshotCache {
    types: Vec<ResourceType>,
    entries: RwLock<HashMap<ResourceType, BTreeMap<String, Entry>>>,
    events: broadcast::Sender<Event>,
    include: Filter,
}

/// How many cache events a slow stream may miss before it resyncs.
const EVENT_CAPACITY: usize = 65_536;

impl SnapshotCache {
    /// Loads `types` from `store` (resources passing `include`) and keeps the
    /// cache current until `shutdown` fires.
    pub fn start(
        store: Store,
        types: &[ResourceType],
        include: impl Fn(&Resource) -> bool + Send + Sync + 'static,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>, store::StoreError> {
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        let cache = Arc::new(Self {
            types: types.to_vec(),
            entries: RwLock::new(HashMap::new()),
            events,
            include: Box::new(include),
        });
        // Subscribe before loading so no change falls between the two.
        let mut watch = store.watch();
        cache.reload(&store)?;
        let c = cache.clone();
        tokio::spawn(async move {
            loop {
                let change = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    c = watch.recv() => c,
                };
                match change {
                    Ok(change) => c.apply(&change.kind),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "KDS snapshot fell behind the store; reloading");
                        if let Err(e) = c.reload(&store) {
                            tracing::error!(error = %e, "KDS snapshot reload failed");
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(cache)
    }

    fn reload(&self, store: &Store) -> Result<(), store::StoreError> {
        let mut fresh = HashMap::new();
        for ty in &self.types {
            let map: BTreeMap<String, Entry> = store
                .list(*ty, None)?
                .iter()
                .filter(|r| (self.include)(r))
                .map(|r| (kds::wire_name(r), Entry::of(r)))
                .collect();
            fresh.insert(*ty, map);
        }
        *self.entries.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        let _ = self.events.send(Event::Resync);
        Ok(())
    }

    fn apply(&self, change: &ChangeKind) {
        let r = change.resource();
        let ty = r.ty();
        if !self.types.contains(&ty) {
            return;
        }
        let name = kds::wire_name(r);
        let entry = match change {
            ChangeKind::Put(r) if (self.include)(r) => Some(Entry::of(r)),
            _ => None,
        };
        {
            let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
            let map = entries.entry(ty).or_default();
            let unchanged = match &entry {
                Some(e) => map.get(&name) == Some(e),
                None => !map.contains_key(&name),
            };
            if unchanged {
                return;
            }
            match entry {
                Some(e) => map.insert(name.clone(), e),
                None => map.remove(&name),
            };
        }
        let _ = self.events.send(Event::Changed(ty, name));
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    pub fn types(&self) -> &[ResourceType] {
        &self.types
    }

    pub fn get(&self, ty: ResourceType, name: &str) -> Option<Entry> {
        self.entries
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&ty)
            .and_then(|m| m.get(name).cloned())
    }

    /// Every wire name of `ty` with its version.
    pub fn names(&self, ty: ResourceType) -> Vec<(String, Arc<str>, Option<Arc<str>>)> {
        self.entries
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&ty)
            .map(|m| {
                m.iter()
                    .map(|(n, e)| (n.clone(), e.version.clone(), e.zone.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }
}
