//! One proxy's generated resources, encoded once, with a version per type.

use std::collections::BTreeMap;
use std::sync::Arc;

use xds_api::pb::google::protobuf::Any;

/// Resources of one type: name to encoded resource.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TypeResources {
    /// A hash of every (name, bytes) pair: equal content, equal version.
    pub version: String,
    pub resources: BTreeMap<String, Arc<Any>>,
}

/// Everything one proxy should have, by type URL.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProxySnapshot {
    pub types: BTreeMap<String, TypeResources>,
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
