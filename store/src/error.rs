use std::path::Path;

use api::ResourceKey;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(ResourceKey),
    #[error("{0} already exists")]
    AlreadyExists(ResourceKey),
    #[error("{key} is at version {}, not {expected}", actual.map(|v| v.to_string()).unwrap_or_else(|| "none (it does not exist)".into()))]
    Conflict {
        key: ResourceKey,
        expected: u64,
        actual: Option<u64>,
    },
    #[error("mesh {0:?} does not exist")]
    MeshNotFound(String),
    #[error("cannot open the data directory {path}: {reason}")]
    Open { path: String, reason: String },
    #[error("stored value at {key} is unreadable: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("storage error: {0}")]
    Backend(#[from] sled::Error),
}

impl StoreError {
    pub(crate) fn open(dir: &Path, reason: String) -> Self {
        let hint = if reason.contains("lock") || reason.contains("WouldBlock") {
            " (is another control plane using this directory?)"
        } else {
            ""
        };
        StoreError::Open {
            path: dir.display().to_string(),
            reason: format!("{reason}{hint}"),
        }
    }
}
