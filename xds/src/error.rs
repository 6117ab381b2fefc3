//! Why a dataplane's configuration could not be generated.

/// A dataplane whose configuration cannot be generated. Fields are paths in
/// the Dataplane resource as Kuma writes it (`networking.inbound[0].port`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GenerateError {
    #[error("resource {name:?} is a {found}, expected a {expected}")]
    WrongType {
        name: String,
        found: &'static str,
        expected: &'static str,
    },
    #[error(
        "dataplane {dataplane:?} is in mesh {found:?}, but the snapshot is of mesh {expected:?}"
    )]
    MeshMismatch {
        dataplane: String,
        found: String,
        expected: String,
    },
    #[error("{field}: port {port} is not in 1..=65535")]
    InvalidPort { field: String, port: u32 },
    #[error("{field}: {address:?} is not an IP address (Envoy binds and connects to IPs: resolve hostnames before generating)")]
    InvalidAddress { field: String, address: String },
    #[error("{field}: the kuma.io/service tag is missing")]
    MissingService { field: String },
    #[error("two listeners would be named {name:?}")]
    DuplicateListener { name: String },
    #[error("cluster {name:?} would be defined twice with different settings")]
    ConflictingCluster { name: String },
}
