//! The resource store: typed, versioned [`api::Resource`]s on sled.
//!
//! Start at [`Store`]: `get`/`list`/`put`/`delete` for single resources and
//! [`Store::apply`] for an atomic batch; every committed write bumps a store
//! revision and is announced on [`Store::watch`]. A write is acknowledged only
//! after sled has flushed it to disk, so it survives `kill -9`. Writes are
//! serialized by one lock (checks and batch are atomic together); reads never
//! take it. This crate knows nothing of HTTP or gRPC.

mod codec;
mod error;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use api::{Resource, ResourceKey, ResourceType};
use time::OffsetDateTime;
use tokio::sync::broadcast;

pub use error::StoreError;

/// How many changes a slow watcher may fall behind before it sees `Lagged`
/// and must resync with a full `list`.
const WATCH_CAPACITY: usize = 16_384;
/// sled's page cache; its default (1 GiB) is far more than a CP needs.
const CACHE_BYTES: u64 = 64 * 1024 * 1024;
const REVISION_KEY: &[u8] = b"\xffrevision";

/// What a put expects to find, for optimistic concurrency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// Create or overwrite, whatever is there.
    None,
    /// Only create; fail if the resource exists.
    Absent,
    /// Only update the resource at exactly this version.
    Version(u64),
}

/// One write in a batch.
#[derive(Debug, Clone)]
pub enum Op {
    Put(Resource, Precondition),
    /// Delete, optionally only at this version. Deleting a Mesh deletes the
    /// resources inside it in the same batch.
    Delete(ResourceKey, Option<u64>),
    /// Create or overwrite a copy of a resource owned by another control
    /// plane, keeping its creation and modification times (policy ranking
    /// compares creation times, so every zone must see the same ones).
    Replicate(Resource),
    /// Delete if present; no error when absent (for sync).
    DeleteIfExists(ResourceKey),
}

/// What one write did.
#[derive(Debug, Clone)]
pub enum Outcome {
    Created(Arc<Resource>),
    Updated(Arc<Resource>),
    Deleted(Arc<Resource>),
}

impl Outcome {
    pub fn resource(&self) -> &Arc<Resource> {
        match self {
            Outcome::Created(r) | Outcome::Updated(r) | Outcome::Deleted(r) => r,
        }
    }
}

/// A committed change, as watchers see it.
#[derive(Debug, Clone)]
pub struct Change {
    /// Store revision after the batch that made this change.
    pub revision: u64,
    pub kind: ChangeKind,
}

#[derive(Debug, Clone)]
pub enum ChangeKind {
    /// Created or updated; the resource as stored.
    Put(Arc<Resource>),
    /// Deleted; the resource as it was.
    Delete(Arc<Resource>),
}

impl ChangeKind {
    pub fn resource(&self) -> &Arc<Resource> {
        match self {
            ChangeKind::Put(r) | ChangeKind::Delete(r) => r,
        }
    }
}

/// A page of a list.
#[derive(Debug, Clone)]
pub struct Page {
    pub items: Vec<Resource>,
    /// How many resources match in all, across pages.
    pub total: usize,
}

/// The store handle; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    resources: sled::Tree,
    meta: sled::Tree,
    write_lock: Mutex<()>,
    changes: broadcast::Sender<Change>,
    path: Option<PathBuf>,
    observer: std::sync::OnceLock<Observer>,
}

/// Told the operation name (`get`, `list`, `apply`) and how long each took.
pub type Observer = Box<dyn Fn(&'static str, std::time::Duration) + Send + Sync>;

impl Store {
    /// Opens (or creates) the store in `dir`. Fails with a message naming the
    /// directory when it cannot be read or another process holds it.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::open(dir, e.to_string()))?;
        let config = sled::Config::new()
            .path(dir.join("store"))
            .cache_capacity(CACHE_BYTES);
        let db = config
            .open()
            .map_err(|e| StoreError::open(dir, e.to_string()))?;
        Self::from_db(db, Some(dir.to_owned()))
    }

    /// A store in a temporary location that disappears when dropped, for tests.
    pub fn temporary() -> Result<Store, StoreError> {
        let db = sled::Config::new()
            .temporary(true)
            .cache_capacity(CACHE_BYTES)
            .open()?;
        Self::from_db(db, None)
    }

    fn from_db(db: sled::Db, path: Option<PathBuf>) -> Result<Store, StoreError> {
        let resources = db.open_tree("resources")?;
        let meta = db.open_tree("meta")?;
        let (changes, _) = broadcast::channel(WATCH_CAPACITY);
        Ok(Store {
            inner: Arc::new(Inner {
                db,
                resources,
                meta,
                write_lock: Mutex::new(()),
                changes,
                path,
                observer: std::sync::OnceLock::new(),
            }),
        })
    }

    /// Installs the observer of operation latencies (for metrics); only the
    /// first call has an effect.
    pub fn observe(&self, observer: Observer) {
        let _ = self.inner.observer.set(observer);
    }

    fn timed<T>(&self, op: &'static str, f: impl FnOnce() -> T) -> T {
        let Some(observer) = self.inner.observer.get() else {
            return f();
        };
        let start = std::time::Instant::now();
        let out = f();
        observer(op, start.elapsed());
        out
    }

    /// The directory the store lives in, if on disk.
    pub fn path(&self) -> Option<&Path> {
        self.inner.path.as_deref()
    }

    /// Subscribes to committed changes. A receiver that falls behind by more
    /// than the channel capacity gets `Lagged` and should resync with `list`.
    pub fn watch(&self) -> broadcast::Receiver<Change> {
        self.inner.changes.subscribe()
    }

    /// The revision of the last committed batch (0 for an empty store).
    pub fn revision(&self) -> Result<u64, StoreError> {
        Ok(self
            .inner
            .resources
            .get(REVISION_KEY)?
            .map(|v| codec::decode_u64(&v))
            .unwrap_or(0))
    }

    pub fn get(&self, key: &ResourceKey) -> Result<Option<Resource>, StoreError> {
        self.timed("get", || {
            let k = codec::key(key.ty, key.mesh.as_deref(), &key.name);
            self.inner
                .resources
                .get(&k)?
                .map(|v| codec::decode(&k, &v))
                .transpose()
        })
    }

    /// Every resource of `ty`, in `mesh` when given, sorted by mesh then name.
    pub fn list(&self, ty: ResourceType, mesh: Option<&str>) -> Result<Vec<Resource>, StoreError> {
        Ok(self.list_page(ty, mesh, 0, usize::MAX)?.items)
    }

    /// One page of [`Store::list`], with the total count.
    pub fn list_page(
        &self,
        ty: ResourceType,
        mesh: Option<&str>,
        offset: usize,
        size: usize,
    ) -> Result<Page, StoreError> {
        self.timed("list", || self.scan_page(ty, mesh, offset, size))
    }

    fn scan_page(
        &self,
        ty: ResourceType,
        mesh: Option<&str>,
        offset: usize,
        size: usize,
    ) -> Result<Page, StoreError> {
        let prefix = codec::prefix(ty, mesh);
        let mut items = Vec::new();
        let mut total = 0;
        for entry in self.inner.resources.scan_prefix(&prefix) {
            let (k, v) = entry?;
            if total >= offset && items.len() < size {
                items.push(codec::decode(&k, &v)?);
            }
            total += 1;
        }
        Ok(Page { items, total })
    }

    /// Reads a small piece of control-plane state kept beside the resources
    /// (token revocations, zone tombstones, signing keys' ids).
    pub fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.inner.meta.get(key)?.map(|v| v.to_vec()))
    }

    /// Writes a piece of control-plane state durably (flushed before return).
    pub fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.inner.meta.insert(key, value)?;
        self.inner.db.flush()?;
        Ok(())
    }

    pub fn delete_meta(&self, key: &str) -> Result<(), StoreError> {
        self.inner.meta.remove(key)?;
        self.inner.db.flush()?;
        Ok(())
    }

    /// Every meta entry whose key starts with `prefix`, in key order.
    pub fn list_meta(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.inner
            .meta
            .scan_prefix(prefix)
            .map(|e| {
                let (k, v) = e?;
                Ok((String::from_utf8_lossy(&k).into_owned(), v.to_vec()))
            })
            .collect()
    }

    /// How many resources of `ty` the store holds, across meshes.
    pub fn count(&self, ty: ResourceType) -> usize {
        self.inner
            .resources
            .scan_prefix(codec::prefix(ty, None))
            .count()
    }

    /// Creates or updates one resource.
    pub fn put(&self, resource: Resource, pre: Precondition) -> Result<Outcome, StoreError> {
        let mut out = self.apply(vec![Op::Put(resource, pre)])?;
        Ok(out.remove(0))
    }

    /// Deletes one resource (and, for a Mesh, everything in it).
    pub fn delete(
        &self,
        key: &ResourceKey,
        version: Option<u64>,
    ) -> Result<Arc<Resource>, StoreError> {
        let out = self.apply(vec![Op::Delete(key.clone(), version)])?;
        // The first outcome is the resource asked for; cascaded deletes follow it.
        Ok(out[0].resource().clone())
    }

    /// Applies `ops` in one batch, or, if the batch fails, one by one so only
    /// the failing ops are refused. Returns the index and error of each op
    /// that was not applied. For sync, where one bad resource must not hold
    /// back the rest.
    pub fn apply_or_each(&self, ops: Vec<Op>) -> Vec<(usize, StoreError)> {
        if self.apply(ops.clone()).is_ok() {
            return Vec::new();
        }
        ops.into_iter()
            .enumerate()
            .filter_map(|(i, op)| self.apply(vec![op]).err().map(|e| (i, e)))
            .collect()
    }

    /// Applies `ops` atomically: all of them are checked against the store
    /// (and against earlier ops of the batch), then written in one sled batch
    /// and flushed, or nothing is written. Outcomes come in op order; a Mesh
    /// delete is followed by the outcomes of its cascaded deletes.
    pub fn apply(&self, ops: Vec<Op>) -> Result<Vec<Outcome>, StoreError> {
        self.timed("apply", || self.apply_locked(ops))
    }

    fn apply_locked(&self, ops: Vec<Op>) -> Result<Vec<Outcome>, StoreError> {
        let _guard = self
            .inner
            .write_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = OffsetDateTime::now_utc();
        let mut pending = Pending::new(self);
        for op in ops {
            match op {
                Op::Put(r, pre) => pending.put(r, pre, Some(now))?,
                Op::Replicate(r) => pending.put(r, Precondition::None, None)?,
                Op::Delete(key, version) => pending.delete(&key, version)?,
                Op::DeleteIfExists(key) => {
                    if pending.current(&key)?.is_some() {
                        pending.delete(&key, None)?;
                    }
                }
            }
        }
        let (mut batch, outcomes) = pending.finish();
        if outcomes.is_empty() {
            return Ok(outcomes);
        }
        let revision = self.revision()? + 1;
        batch.insert(REVISION_KEY, &revision.to_be_bytes()[..]);
        self.inner.resources.apply_batch(batch)?;
        self.inner.db.flush()?;
        for o in &outcomes {
            let kind = match o {
                Outcome::Created(r) | Outcome::Updated(r) => ChangeKind::Put(r.clone()),
                Outcome::Deleted(r) => ChangeKind::Delete(r.clone()),
            };
            // No receivers is fine: nobody is watching yet.
            let _ = self.inner.changes.send(Change { revision, kind });
        }
        Ok(outcomes)
    }
}

/// The writes of one batch being built, with read-your-writes over the store.
struct Pending<'a> {
    store: &'a Store,
    /// Keys written earlier in this batch: `None` when deleted.
    overlay: std::collections::BTreeMap<Vec<u8>, Option<Arc<Resource>>>,
    batch: sled::Batch,
    outcomes: Vec<Outcome>,
}

impl<'a> Pending<'a> {
    fn new(store: &'a Store) -> Self {
        Self {
            store,
            overlay: Default::default(),
            batch: sled::Batch::default(),
            outcomes: Vec::new(),
        }
    }

    fn finish(self) -> (sled::Batch, Vec<Outcome>) {
        (self.batch, self.outcomes)
    }

    fn current(&self, key: &ResourceKey) -> Result<Option<Arc<Resource>>, StoreError> {
        let k = codec::key(key.ty, key.mesh.as_deref(), &key.name);
        match self.overlay.get(&k) {
            Some(r) => Ok(r.clone()),
            None => Ok(self.store.get(key)?.map(Arc::new)),
        }
    }

    /// `now` is the write time; `None` keeps the resource's own times.
    fn put(
        &mut self,
        mut r: Resource,
        pre: Precondition,
        now: Option<OffsetDateTime>,
    ) -> Result<(), StoreError> {
        let key = r.key();
        if let Some(mesh) = &r.mesh {
            let mesh_key = ResourceKey::global(ResourceType::Mesh, mesh);
            if self.current(&mesh_key)?.is_none() {
                return Err(StoreError::MeshNotFound(mesh.clone()));
            }
        }
        let existing = self.current(&key)?;
        match (pre, &existing) {
            (Precondition::Absent, Some(_)) => return Err(StoreError::AlreadyExists(key)),
            (Precondition::Version(v), None) => {
                return Err(StoreError::Conflict {
                    key,
                    expected: v,
                    actual: None,
                })
            }
            (Precondition::Version(v), Some(e)) if e.meta.version != v => {
                return Err(StoreError::Conflict {
                    key,
                    expected: v,
                    actual: Some(e.meta.version),
                })
            }
            _ => {}
        }
        r.meta.version = existing.as_ref().map_or(1, |e| e.meta.version + 1);
        if let Some(now) = now {
            r.meta.modification_time = now;
            r.meta.creation_time = existing.as_ref().map_or(now, |e| e.meta.creation_time);
        }
        let k = codec::key(key.ty, key.mesh.as_deref(), &key.name);
        self.batch.insert(k.clone(), codec::encode(&r)?);
        let r = Arc::new(r);
        self.overlay.insert(k, Some(r.clone()));
        self.outcomes.push(if existing.is_some() {
            Outcome::Updated(r)
        } else {
            Outcome::Created(r)
        });
        Ok(())
    }

    fn delete(&mut self, key: &ResourceKey, version: Option<u64>) -> Result<(), StoreError> {
        let Some(existing) = self.current(key)? else {
            return Err(StoreError::NotFound(key.clone()));
        };
        if let Some(v) = version {
            if existing.meta.version != v {
                return Err(StoreError::Conflict {
                    key: key.clone(),
                    expected: v,
                    actual: Some(existing.meta.version),
                });
            }
        }
        self.remove(key, existing);
        if key.ty == ResourceType::Mesh {
            for ty in ResourceType::ALL.into_iter().filter(|t| t.is_mesh_scoped()) {
                let prefix = codec::prefix(ty, Some(&key.name));
                let mut keys: Vec<ResourceKey> = self
                    .store
                    .list(ty, Some(&key.name))?
                    .iter()
                    .map(Resource::key)
                    .collect();
                // Resources created earlier in this same batch.
                keys.extend(
                    self.overlay
                        .range(prefix.clone()..)
                        .take_while(|(k, _)| k.starts_with(&prefix))
                        .filter_map(|(_, r)| r.as_ref().map(|r| r.key())),
                );
                keys.sort();
                keys.dedup();
                for k in keys {
                    if let Some(current) = self.current(&k)? {
                        self.remove(&k, current);
                    }
                }
            }
        }
        Ok(())
    }

    fn remove(&mut self, key: &ResourceKey, existing: Arc<Resource>) {
        let k = codec::key(key.ty, key.mesh.as_deref(), &key.name);
        self.batch.remove(k.clone());
        self.overlay.insert(k, None);
        self.outcomes.push(Outcome::Deleted(existing));
    }
}
