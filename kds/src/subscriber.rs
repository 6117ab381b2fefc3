//! The subscribing side of a KDS stream, without I/O: it opens a
//! subscription per type with the versions it already holds, decodes and
//! validates each response resource by resource, and answers with an ACK or
//! a NACK that lists only the resources it refused.

use std::collections::HashMap;

use api::{kds, Resource, ResourceType};
use xds_api::pb::envoy::config::core::v3::Node;
use xds_api::pb::google::protobuf::Any;
use xds_api::pb::google::rpc::Status;

use crate::{DeltaDiscoveryRequest, DeltaDiscoveryResponse, ResourceError};

/// gRPC's INVALID_ARGUMENT, the code of a NACK.
const INVALID_ARGUMENT: i32 = 3;

/// One decoded response.
#[derive(Debug, Clone)]
pub struct Update {
    pub ty: ResourceType,
    pub nonce: String,
    /// Resources to create or update, by wire name.
    pub upserts: Vec<(String, Resource)>,
    /// Wire names to delete.
    pub removals: Vec<String>,
    /// Resources refused while decoding.
    pub errors: Vec<ResourceError>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtocolError {
    #[error("response of type {0:?}, which this stream did not subscribe to")]
    UnknownType(String),
}

pub struct Subscriber {
    node: Node,
    types: Vec<ResourceType>,
    max_resource_bytes: usize,
}

impl Subscriber {
    /// `node_id` names the subscriber (the zone name); `agent` and `version`
    /// say what software it runs, for the peer's insights.
    pub fn new(
        node_id: &str,
        agent: &str,
        version: &str,
        types: &[ResourceType],
        max_resource_bytes: usize,
    ) -> Self {
        Self {
            node: Node {
                id: node_id.to_owned(),
                user_agent_name: agent.to_owned(),
                user_agent_version_type: Some(
                    xds_api::pb::envoy::config::core::v3::node::UserAgentVersionType::UserAgentVersion(
                        version.to_owned(),
                    ),
                ),
                ..Default::default()
            },
            types: types.to_vec(),
            max_resource_bytes,
        }
    }

    pub fn types(&self) -> &[ResourceType] {
        &self.types
    }

    /// One subscription per type, carrying what `have` says is held already
    /// (wire name to version), so only differences come back.
    pub fn initial_requests(
        &self,
        have: &HashMap<ResourceType, HashMap<String, String>>,
    ) -> Vec<DeltaDiscoveryRequest> {
        self.types
            .iter()
            .map(|ty| DeltaDiscoveryRequest {
                node: Some(self.node.clone()),
                type_url: kds::type_url(*ty),
                initial_resource_versions: have.get(ty).cloned().unwrap_or_default(),
                ..Default::default()
            })
            .collect()
    }

    /// Decodes a response; bad resources become errors, not failures.
    pub fn decode(&self, resp: DeltaDiscoveryResponse) -> Result<Update, ProtocolError> {
        let ty = kds::type_from_url(&resp.type_url)
            .filter(|t| self.types.contains(t))
            .ok_or_else(|| ProtocolError::UnknownType(resp.type_url.clone()))?;
        let mut update = Update {
            ty,
            nonce: resp.nonce,
            upserts: Vec::new(),
            removals: resp.removed_resources,
            errors: Vec::new(),
        };
        for res in resp.resources {
            match self.decode_one(ty, &res.name, res.resource) {
                Ok(r) => update.upserts.push((res.name, r)),
                Err(reason) => update.errors.push(ResourceError {
                    name: res.name,
                    reason,
                }),
            }
        }
        Ok(update)
    }

    fn decode_one(
        &self,
        ty: ResourceType,
        name: &str,
        any: Option<Any>,
    ) -> Result<Resource, String> {
        let any = any.ok_or("the resource has no payload")?;
        if any.type_url != kds::type_url(ty) {
            return Err(format!(
                "payload type {:?} in a {ty} response",
                any.type_url
            ));
        }
        if any.value.len() > self.max_resource_bytes {
            return Err(format!(
                "{} bytes is over the limit of {} bytes per resource",
                any.value.len(),
                self.max_resource_bytes
            ));
        }
        let r = kds::decode(ty, &any.value).map_err(|e| e.to_string())?;
        let wire = kds::wire_name(&r);
        if wire != name {
            return Err(format!("travels as {name:?} but its payload is {wire:?}"));
        }
        Ok(r)
    }

    /// The answer to a response: ACK when `errors` is empty, else a NACK
    /// listing each refused resource (the rest of the response was applied).
    pub fn answer(
        &self,
        ty: ResourceType,
        nonce: &str,
        errors: &[ResourceError],
    ) -> DeltaDiscoveryRequest {
        let error_detail = (!errors.is_empty()).then(|| Status {
            code: INVALID_ARGUMENT,
            message: errors
                .iter()
                .map(|e| format!("{}: {}", e.name, e.reason))
                .collect::<Vec<_>>()
                .join("; "),
            details: vec![Any {
                type_url: crate::RESOURCE_ERRORS_TYPE_URL.to_owned(),
                value: serde_json::to_vec(errors).unwrap_or_default(),
            }],
        });
        DeltaDiscoveryRequest {
            type_url: kds::type_url(ty),
            response_nonce: nonce.to_owned(),
            error_detail,
            ..Default::default()
        }
    }
}
