//! Domain types of the mesh control plane, with no I/O and no async.
//!
//! Start with [`Resource`] (one Kuma Universal resource: `type`, `name`, `mesh`,
//! `labels` and the spec fields inline) and [`ResourceType`]. Parsing from JSON or
//! YAML is [`Resource::from_value`] and [`parse_documents`]; the rules Kuma applies
//! are in [`Resource::validate`], which reports every problem with a field path.
//! Tag selectors and TrafficPermission selection are pure functions in
//! [`selector`]. Storage, HTTP and gRPC live in other crates.

pub mod duration;
mod error;
pub mod kds;
mod resource;
pub mod selector;
mod spec;
mod system;
mod types;
mod validate;
pub use validate::validate_zone_name;

pub use error::{ParseError, ValidationError, Violation};
pub use resource::{parse_documents, Meta, Resource};
pub use spec::*;
pub use system::*;
pub use types::{ResourceKey, ResourceType};

/// Tag key that names a service.
pub const SERVICE_TAG: &str = "kuma.io/service";
/// Tag key that names the zone a dataplane runs in.
pub const ZONE_TAG: &str = "kuma.io/zone";
/// Tag key that names an inbound's protocol.
pub const PROTOCOL_TAG: &str = "kuma.io/protocol";
/// Label that says where a resource was created: `global` or `zone`.
pub const ORIGIN_LABEL: &str = "kuma.io/origin";
