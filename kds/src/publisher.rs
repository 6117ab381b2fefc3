//! The publishing side of a KDS stream, without I/O.
//!
//! Per type it tracks what the peer has (from the subscription's initial
//! versions, then from ACKs), which names may differ (`dirty`), and at most
//! one response in flight. Changes while a response is in flight accumulate
//! and go out coalesced after the ACK, so a slow peer costs memory bounded by
//! the number of resources, never a blocked sender. A NACK's per-resource
//! errors mark those versions rejected (not resent until they change); the
//! rest of the response counts as acknowledged.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use api::{kds, ResourceType};
use prost::Message;
use xds_api::pb::google::protobuf::Any;

use crate::snapshot::{Entry, SnapshotCache};
use crate::stats::{StreamStats, TypeStats};
use crate::{DeltaDiscoveryRequest, DeltaDiscoveryResponse, ResourceError, WireResource};

/// Where a publisher reads the resources it should publish.
pub trait Source {
    fn get(&self, ty: ResourceType, name: &str) -> Option<Entry>;
    /// Every name of `ty` with its version and zone label.
    fn names(&self, ty: ResourceType) -> Vec<(String, Arc<str>, Option<Arc<str>>)>;
}

impl Source for SnapshotCache {
    fn get(&self, ty: ResourceType, name: &str) -> Option<Entry> {
        SnapshotCache::get(self, ty, name)
    }
    fn names(&self, ty: ResourceType) -> Vec<(String, Arc<str>, Option<Arc<str>>)> {
        SnapshotCache::names(self, ty)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtocolError {
    #[error("type {0:?} is not served on this stream")]
    UnknownType(String),
}

/// What a request did.
#[derive(Debug, PartialEq, Eq)]
pub enum Handled {
    Subscribed(ResourceType),
    Acked(ResourceType),
    Nacked(ResourceType, String),
    /// An ACK or NACK for a response that is no longer in flight.
    Stale(ResourceType),
}

#[derive(Default)]
struct TypeState {
    subscribed: bool,
    peer: HashMap<String, Arc<str>>,
    dirty: BTreeSet<String>,
    in_flight: Option<InFlight>,
    rejected: HashMap<String, Arc<str>>,
    stats: TypeStats,
}

struct InFlight {
    nonce: String,
    sent: Vec<(String, Option<Arc<str>>)>,
}

pub struct Publisher {
    types: Vec<ResourceType>,
    state: HashMap<ResourceType, TypeState>,
    /// The peer's own zone: resources labelled with it are not sent back.
    exclude_zone: Option<Arc<str>>,
    max_bytes: usize,
    next_nonce: u64,
}

/// Bytes a resource adds to a response besides its payload (name, version,
/// type URL, framing): an estimate that keeps batches under the limit.
const OVERHEAD: usize = 96;

impl Publisher {
    pub fn new(types: &[ResourceType], exclude_zone: Option<&str>, max_bytes: usize) -> Self {
        Self {
            types: types.to_vec(),
            state: types.iter().map(|t| (*t, TypeState::default())).collect(),
            exclude_zone: exclude_zone.map(Arc::from),
            max_bytes: max_bytes.max(1),
            next_nonce: 0,
        }
    }

    fn wanted(&self, e: &Entry) -> bool {
        match (&self.exclude_zone, &e.zone) {
            (Some(peer), Some(z)) => peer != z,
            _ => true,
        }
    }

    fn desired(&self, src: &impl Source, ty: ResourceType, name: &str) -> Option<Entry> {
        src.get(ty, name).filter(|e| self.wanted(e))
    }

    pub fn handle_request(
        &mut self,
        req: &DeltaDiscoveryRequest,
        src: &impl Source,
    ) -> Result<Handled, ProtocolError> {
        let ty = kds::type_from_url(&req.type_url)
            .filter(|t| self.types.contains(t))
            .ok_or_else(|| ProtocolError::UnknownType(req.type_url.clone()))?;
        if req.response_nonce.is_empty() {
            let mut dirty: BTreeSet<String> = src
                .names(ty)
                .into_iter()
                .filter(|(_, _, zone)| match (&self.exclude_zone, zone) {
                    (Some(peer), Some(z)) => peer != z,
                    _ => true,
                })
                .map(|(n, _, _)| n)
                .collect();
            dirty.extend(req.initial_resource_versions.keys().cloned());
            let st = self.state.entry(ty).or_default();
            st.subscribed = true;
            st.peer = req
                .initial_resource_versions
                .iter()
                .map(|(k, v)| (k.clone(), Arc::from(v.as_str())))
                .collect();
            st.in_flight = None;
            st.rejected.clear();
            st.dirty = dirty;
            return Ok(Handled::Subscribed(ty));
        }
        let st = self.state.entry(ty).or_default();
        let Some(flight) = st.in_flight.take_if(|f| f.nonce == req.response_nonce) else {
            return Ok(Handled::Stale(ty));
        };
        let Some(status) = &req.error_detail else {
            st.stats.acks += 1;
            for (name, version) in flight.sent {
                apply_to_peer(&mut st.peer, name, version);
            }
            return Ok(Handled::Acked(ty));
        };
        let errors = resource_errors(status);
        let message = if status.message.is_empty() {
            "NACK without a message".to_owned()
        } else {
            status.message.clone()
        };
        st.stats.nacks += 1;
        st.stats.last_nack = Some(message.clone());
        for (name, version) in flight.sent {
            // Without a per-resource list the whole response was refused.
            let refused = errors
                .as_ref()
                .is_none_or(|e| e.iter().any(|x| x.name == name));
            match (refused, version) {
                (true, Some(v)) => {
                    st.rejected.insert(name, v);
                }
                (true, None) => {
                    st.dirty.insert(name);
                }
                (false, v) => apply_to_peer(&mut st.peer, name, v),
            }
        }
        Ok(Handled::Nacked(ty, message))
    }

    /// A resource of `ty` changed in the source.
    pub fn changed(&mut self, ty: ResourceType, name: &str) {
        if let Some(st) = self.state.get_mut(&ty).filter(|s| s.subscribed) {
            st.dirty.insert(name.to_owned());
        }
    }

    /// The source reloaded: compare everything again.
    pub fn resync(&mut self, src: &impl Source) {
        for ty in self.types.clone() {
            let names: Vec<String> = src.names(ty).into_iter().map(|(n, _, _)| n).collect();
            if let Some(st) = self.state.get_mut(&ty).filter(|s| s.subscribed) {
                st.dirty.extend(names);
                st.dirty.extend(st.peer.keys().cloned());
            }
        }
    }

    /// Whether `next_response` may have something to send.
    pub fn has_pending(&self) -> bool {
        self.state
            .values()
            .any(|s| s.subscribed && s.in_flight.is_none() && !s.dirty.is_empty())
    }

    /// The next response to send, in type order (Mesh before the policies
    /// inside it), at most `max_bytes` unless a single resource is larger.
    pub fn next_response(&mut self, src: &impl Source) -> Option<DeltaDiscoveryResponse> {
        for ty in self.types.clone() {
            let Some(st) = self.state.get(&ty) else {
                continue;
            };
            if !st.subscribed || st.in_flight.is_some() || st.dirty.is_empty() {
                continue;
            }
            let names: Vec<String> = st.dirty.iter().cloned().collect();
            let mut resources = Vec::new();
            let mut removed = Vec::new();
            let mut sent = Vec::new();
            let mut consumed = 0;
            let mut bytes = 0;
            for name in &names {
                if bytes >= self.max_bytes {
                    break;
                }
                consumed += 1;
                let desired = self.desired(src, ty, name);
                let st = self.state.get_mut(&ty).expect("state of a served type");
                let peer = st.peer.get(name);
                match desired {
                    Some(e) if peer != Some(&e.version) => {
                        if st.rejected.get(name) == Some(&e.version) {
                            continue;
                        }
                        bytes += e.payload.len() + name.len() + OVERHEAD;
                        resources.push(WireResource {
                            name: name.clone(),
                            version: e.version.to_string(),
                            resource: Some(Any {
                                type_url: kds::type_url(ty),
                                value: e.payload.to_vec(),
                            }),
                            ..Default::default()
                        });
                        sent.push((name.clone(), Some(e.version.clone())));
                    }
                    None if peer.is_some() => {
                        bytes += name.len() + OVERHEAD / 4;
                        removed.push(name.clone());
                        sent.push((name.clone(), None));
                        st.rejected.remove(name);
                    }
                    None => {
                        st.rejected.remove(name);
                    }
                    Some(_) => {}
                }
            }
            let st = self.state.get_mut(&ty).expect("state of a served type");
            for name in names.iter().take(consumed) {
                st.dirty.remove(name);
            }
            if sent.is_empty() {
                continue;
            }
            self.next_nonce += 1;
            let nonce = self.next_nonce.to_string();
            st.stats.responses += 1;
            st.stats.resources += sent.len() as u64;
            st.in_flight = Some(InFlight {
                nonce: nonce.clone(),
                sent,
            });
            return Some(DeltaDiscoveryResponse {
                system_version_info: String::new(),
                resources,
                type_url: kds::type_url(ty),
                removed_resources: removed,
                nonce,
                ..Default::default()
            });
        }
        None
    }

    /// Counters per type name.
    pub fn stats(&self) -> StreamStats {
        self.types
            .iter()
            .filter_map(|t| {
                self.state
                    .get(t)
                    .map(|s| (t.name().to_owned(), s.stats.clone()))
            })
            .collect()
    }

    /// How many resources of `ty` the peer has acknowledged holding.
    pub fn peer_count(&self, ty: ResourceType) -> usize {
        self.state.get(&ty).map_or(0, |s| s.peer.len())
    }
}

fn apply_to_peer(peer: &mut HashMap<String, Arc<str>>, name: String, version: Option<Arc<str>>) {
    match version {
        Some(v) => {
            peer.insert(name, v);
        }
        None => {
            peer.remove(&name);
        }
    }
}

/// The per-resource error list of a NACK, when it carries one.
fn resource_errors(status: &xds_api::pb::google::rpc::Status) -> Option<Vec<ResourceError>> {
    status
        .details
        .iter()
        .find(|d| d.type_url == crate::RESOURCE_ERRORS_TYPE_URL)
        .and_then(|d| serde_json::from_slice(&d.value).ok())
}

/// Encoded size of a response, for tests and metrics.
pub fn encoded_len(resp: &DeltaDiscoveryResponse) -> usize {
    resp.encoded_len()
}
