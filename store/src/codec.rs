//! Storage keys and values. Keys are `<type tag>\0<mesh>\0<name>` so that a
//! prefix scan lists one type, or one type in one mesh, in name order. Values
//! are the API JSON of the resource plus its version.

use api::{Resource, ResourceType};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::StoreError;

#[derive(Serialize, Deserialize)]
struct Record {
    version: u64,
    resource: Value,
}

pub(crate) fn key(ty: ResourceType, mesh: Option<&str>, name: &str) -> Vec<u8> {
    let mut k = prefix(ty, mesh);
    if mesh.is_none() {
        // Global types have an empty mesh segment.
        k.push(0);
    }
    k.extend_from_slice(name.as_bytes());
    k
}

/// The prefix of every key of `ty`, in `mesh` when given.
pub(crate) fn prefix(ty: ResourceType, mesh: Option<&str>) -> Vec<u8> {
    let mut k = ty.storage_tag().as_bytes().to_vec();
    k.push(0);
    if let Some(m) = mesh {
        k.extend_from_slice(m.as_bytes());
        k.push(0);
    }
    k
}

pub(crate) fn encode(r: &Resource) -> Result<Vec<u8>, StoreError> {
    let record = Record {
        version: r.meta.version,
        resource: r.to_value(),
    };
    serde_json::to_vec(&record).map_err(|e| StoreError::Corrupt {
        key: r.key().to_string(),
        reason: e.to_string(),
    })
}

pub(crate) fn decode(key: &[u8], bytes: &[u8]) -> Result<Resource, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).replace('\0', "/"),
        reason,
    };
    let record: Record = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
    let mut r = Resource::from_value(record.resource).map_err(|e| corrupt(e.to_string()))?;
    r.meta.version = record.version;
    Ok(r)
}

pub(crate) fn decode_u64(bytes: &[u8]) -> u64 {
    let mut buf = [0u8; 8];
    let n = bytes.len().min(8);
    buf[8 - n..].copy_from_slice(&bytes[bytes.len() - n..]);
    u64::from_be_bytes(buf)
}
