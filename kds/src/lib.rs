//! KDS: how the global and zone control planes keep each other's resources.
//!
//! Both directions are the same conversation with the roles of gRPC client
//! and server swapped: a **publisher** sends `DeltaDiscoveryResponse`s from a
//! [`snapshot::SnapshotCache`] of its store, and a **subscriber** sends
//! `DeltaDiscoveryRequest`s (subscriptions with the versions it already has,
//! ACKs, NACKs with per-resource errors) and applies what arrives to its own
//! store. Start with [`publisher::Publisher`] and [`subscriber::Subscriber`]:
//! state machines without I/O, tested message by message. [`driver`] runs
//! one of them on a stream, and [`service`] is the tonic glue for the two
//! streams (`GlobalToZone`, `ZoneToGlobal`) that share one connection.
//! Authentication, what each side publishes and how it applies updates are
//! the control planes' business.

pub mod driver;
pub mod metrics;
pub mod publisher;
pub mod service;
pub mod snapshot;
pub mod stats;
pub mod subscriber;

pub use xds_api::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource as WireResource,
};

/// Type URL of the per-resource error list carried in a NACK's details.
pub const RESOURCE_ERRORS_TYPE_URL: &str = "type.mesh.kds/v1.ResourceErrors";

/// One resource a subscriber refused, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ResourceError {
    pub name: String,
    pub reason: String,
}
