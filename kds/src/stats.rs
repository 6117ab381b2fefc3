//! Counters of one KDS stream per resource type, for insights and metrics.

use std::collections::BTreeMap;

use serde::Serialize;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TypeStats {
    /// Responses sent (publisher) or received (subscriber).
    pub responses: u64,
    /// Resources sent or received, removals included.
    pub resources: u64,
    pub acks: u64,
    pub nacks: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_nack: Option<String>,
}

/// Per-type stats, keyed by the type's name.
pub type StreamStats = BTreeMap<String, TypeStats>;
