//! One proxy's generated resources, encoded once, with a version per type.

use std::collections::BTreeMap;
use std::sync::Arc;

use xds_api::pb::google::protobuf::Any;

/// Resources of one type: name to encoded resource.
#[derive(Debug, Clone, Default)]
pub struct TypeResources {
    /// A hash of every (name, bytes) pair: equal content, equal version.
    pub version: String,
    pub resources: BTreeMap<String, Arc<Any>>,
}

/// Everything one proxy should have, by type URL.
#[derive(Debug, Clone, Default)]
pub struct ProxySnapshot {
    pub types: BTreeMap<String, TypeResources>,
}

/// Equal versions mean equal content (the version hashes every name and
/// byte), so comparing snapshots never compares resource bytes.
impl PartialEq for TypeResources {
    fn eq(&self, other: &Self) -> bool {
        self.version == other.version
    }
}

impl PartialEq for ProxySnapshot {
    fn eq(&self, other: &Self) -> bool {
        self.types.len() == other.types.len()
            && self
                .types
                .iter()
                .zip(&other.types)
                .all(|((ta, a), (tb, b))| ta == tb && a == b)
    }
}

impl ProxySnapshot {
    /// Builds a snapshot from `(type_url, name, resource)` triples.
    pub fn from_resources<A: Into<Arc<Any>>>(
        items: impl IntoIterator<Item = (String, String, A)>,
    ) -> Self {
        let mut types: BTreeMap<String, TypeResources> = BTreeMap::new();
        for (type_url, name, any) in items {
            types
                .entry(type_url)
                .or_default()
                .resources
                .insert(name, any.into());
        }
        for t in types.values_mut() {
            t.version = version_of(&t.resources);
        }
        Self { types }
    }

    /// Builds a snapshot from resources whose bytes were already hashed
    /// (with [`hash_bytes`]), so the versions do not hash them again.
    pub fn from_hashed(items: impl IntoIterator<Item = (String, String, Arc<Any>, u64)>) -> Self {
        let mut types: BTreeMap<String, (TypeResources, u64)> = BTreeMap::new();
        for (type_url, name, any, hash) in items {
            let (t, h) = types
                .entry(type_url)
                .or_insert_with(|| (TypeResources::default(), FNV_OFFSET));
            *h = fnv_feed(fnv_feed(*h, name.as_bytes()), &hash.to_le_bytes());
            t.resources.insert(name, any);
        }
        Self {
            types: types
                .into_iter()
                .map(|(url, (mut t, h))| {
                    t.version = format!("{h:016x}");
                    (url, t)
                })
                .collect(),
        }
    }

    pub fn get(&self, type_url: &str) -> Option<&TypeResources> {
        self.types.get(type_url)
    }
}

fn version_of(resources: &BTreeMap<String, Arc<Any>>) -> String {
    // FNV-1a over names and bytes: stable and cheap.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    for (name, any) in resources {
        feed(name.as_bytes());
        feed(&[0]);
        feed(&any.value);
        feed(&[0]);
    }
    format!("{h:016x}")
}

/// An encoded, interned resource: type URL, name, bytes, content hash.
pub type Shared = (String, String, Arc<Any>, u64);

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

fn fnv_feed(h: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(h, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A resource's content hash (FNV-1a, 64 bit).
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    fnv_feed(FNV_OFFSET, bytes)
}
