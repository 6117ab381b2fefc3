//! The KDS protocol definition, without transport.
//!
//! KDS carries resources between the global and zone control planes on
//! Envoy's delta xDS messages. This module fixes what goes in them: the type
//! URL of each resource type, the name a resource travels under, its version
//! (a content hash, so a reconnecting peer can say what it has and receive
//! only differences), and its payload (the resource's API JSON, metadata
//! included). The gRPC service and the per-stream state machines live in the
//! `kds` crate.

use serde_json::Value;

use crate::{Resource, ResourceType, ValidationError};

/// Type URL prefix of KDS resources.
const TYPE_URL_PREFIX: &str = "type.mesh.kds/v1.";

/// Which way a type flows.
pub const GLOBAL_TO_ZONE: [ResourceType; 5] = [
    ResourceType::Mesh,
    ResourceType::TrafficPermission,
    ResourceType::ZoneIngress,
    ResourceType::ZoneIntermediate,
    ResourceType::DataplaneTokenKey,
];
pub const ZONE_TO_GLOBAL: [ResourceType; 4] = [
    ResourceType::Dataplane,
    ResourceType::ZoneIngress,
    ResourceType::MeshCaRequest,
    ResourceType::DataplaneInsight,
];

pub fn type_url(ty: ResourceType) -> String {
    format!("{TYPE_URL_PREFIX}{}", ty.name())
}

pub fn type_from_url(url: &str) -> Option<ResourceType> {
    url.strip_prefix(TYPE_URL_PREFIX)
        .and_then(ResourceType::from_name)
}

/// The name a resource travels under: `mesh/name` or `name`.
pub fn wire_name(r: &Resource) -> String {
    match &r.mesh {
        Some(m) => format!("{m}/{}", r.name),
        None => r.name.clone(),
    }
}

/// The content version of a resource: a hash of everything a peer stores
/// except the local modification time and version counter, so equal content
/// has equal versions on both sides.
pub fn version(r: &Resource) -> String {
    let mut v = r.to_value();
    if let Value::Object(obj) = &mut v {
        obj.remove("modificationTime");
    }
    format!("{:016x}", fnv1a(v.to_string().as_bytes()))
}

/// Payload bytes of a resource on the wire.
pub fn encode(r: &Resource) -> Vec<u8> {
    r.to_value().to_string().into_bytes()
}

/// Decodes and validates a payload of the expected type.
pub fn decode(ty: ResourceType, bytes: &[u8]) -> Result<Resource, ValidationError> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| ValidationError::single("", format!("payload is not JSON: {e}")))?;
    let r = Resource::from_value(value)?;
    if r.ty() != ty {
        return Err(ValidationError::single(
            "type",
            format!("is {} but the stream carries {ty}", r.ty()),
        ));
    }
    r.validate()?;
    Ok(r)
}

/// FNV-1a, 64 bit: stable across processes and versions, which a std hasher
/// does not promise.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Selector, Spec, Tags, TrafficPermissionSpec};

    fn tp(source: &str) -> Resource {
        let sel = |s: &str| Selector {
            match_tags: Tags::from([("kuma.io/service".into(), s.into())]),
        };
        Resource::new(
            "tp",
            Some("default"),
            Spec::TrafficPermission(TrafficPermissionSpec {
                sources: vec![sel(source)],
                destinations: vec![sel("*")],
            }),
        )
    }

    #[test]
    fn type_urls_round_trip() {
        for ty in ResourceType::ALL {
            assert_eq!(type_from_url(&type_url(ty)), Some(ty));
        }
        assert_eq!(
            type_from_url("type.googleapis.com/envoy.config.cluster.v3.Cluster"),
            None
        );
    }

    #[test]
    fn version_follows_content_not_modification_time_or_counter() {
        let a = tp("web");
        let mut b = a.clone();
        b.meta.modification_time = time::macros::datetime!(2030-01-01 0:00 UTC);
        b.meta.version = 7;
        assert_eq!(version(&a), version(&b));
        assert_ne!(version(&a), version(&tp("api")));
        let mut c = a.clone();
        c.labels.insert("team".into(), "x".into());
        assert_ne!(version(&a), version(&c));
    }

    #[test]
    fn payload_round_trips_and_wrong_type_is_refused() {
        let r = tp("web");
        let back = decode(ResourceType::TrafficPermission, &encode(&r)).unwrap();
        assert_eq!(back.spec, r.spec);
        assert_eq!(wire_name(&back), "default/tp");
        let err = decode(ResourceType::Mesh, &encode(&r)).unwrap_err();
        assert_eq!(err.violations[0].field, "type");
        assert!(decode(ResourceType::Mesh, b"{not json").is_err());
    }
}
