//! The ADS gRPC service Envoy connects to: it identifies the proxy by its
//! node id (`<mesh>.<name>`), checks its dataplane token, and runs a
//! [`SotwStream`] (state of the world) or a [`DeltaStream`] (incremental),
//! as Envoy's bootstrap chose, fed by the proxy's snapshot channel.

use std::collections::BTreeMap;
use std::pin::Pin;

use api::{ResourceKey, ResourceType};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};
use xds_api::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryService;
use xds_api::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};

use super::delta::DeltaStream;
use super::proxies::Proxies;
use super::snapshot::ProxySnapshot;
use super::sotw::{Event, SotwStream};
use super::tokens::DataplaneAuth;

type Out<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

pub struct Ads {
    pub proxies: Proxies,
    pub auth: DataplaneAuth,
    /// How long a disconnected proxy's Dataplane is kept.
    pub grace: std::time::Duration,
}

/// Splits a node id `<mesh>.<name>` into the dataplane's key.
/// A zone ingress's node id is `zone-ingress:<name>` (`:` cannot occur in
/// resource names, so the two forms never collide).
pub const INGRESS_NODE_PREFIX: &str = "zone-ingress:";

/// Splits a node id `<mesh>.<name>` into the dataplane's key.
pub fn node_key(node_id: &str) -> Option<ResourceKey> {
    if let Some(name) = node_id.strip_prefix(INGRESS_NODE_PREFIX) {
        return (!name.is_empty()).then(|| ResourceKey::global(ResourceType::ZoneIngress, name));
    }
    let (mesh, name) = node_id.split_once('.')?;
    (!mesh.is_empty() && !name.is_empty())
        .then(|| ResourceKey::scoped(ResourceType::Dataplane, mesh, name))
}

/// One ADS variant's sans-IO state machine, as the stream loop drives it.
trait Protocol: Default + Send + 'static {
    type Request: prost::Message + Default + Send + 'static;
    type Response: Send + 'static;
    /// For logs.
    const NAME: &'static str;

    /// The node id the request carries (Envoy sends it first only).
    fn node_id(req: &Self::Request) -> Option<&str>;
    fn handle_request(&mut self, req: &Self::Request) -> Event;
    fn responses(&mut self, snap: &ProxySnapshot) -> Vec<Self::Response>;
    fn acked(&self) -> BTreeMap<String, String>;
}

impl Protocol for SotwStream {
    type Request = DiscoveryRequest;
    type Response = DiscoveryResponse;
    const NAME: &'static str = "sotw";

    fn node_id(req: &DiscoveryRequest) -> Option<&str> {
        req.node.as_ref().map(|n| n.id.as_str())
    }
    fn handle_request(&mut self, req: &DiscoveryRequest) -> Event {
        SotwStream::handle_request(self, req)
    }
    fn responses(&mut self, snap: &ProxySnapshot) -> Vec<DiscoveryResponse> {
        SotwStream::responses(self, snap)
    }
    fn acked(&self) -> BTreeMap<String, String> {
        SotwStream::acked(self)
    }
}

impl Protocol for DeltaStream {
    type Request = DeltaDiscoveryRequest;
    type Response = DeltaDiscoveryResponse;
    const NAME: &'static str = "delta";

    fn node_id(req: &DeltaDiscoveryRequest) -> Option<&str> {
        req.node.as_ref().map(|n| n.id.as_str())
    }
    fn handle_request(&mut self, req: &DeltaDiscoveryRequest) -> Event {
        DeltaStream::handle_request(self, req)
    }
    fn responses(&mut self, snap: &ProxySnapshot) -> Vec<DeltaDiscoveryResponse> {
        DeltaStream::responses(self, snap)
    }
    fn acked(&self) -> BTreeMap<String, String> {
        DeltaStream::acked(self)
    }
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for Ads {
    type StreamAggregatedResourcesStream = Out<DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = Out<DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        self.serve::<SotwStream>(request).await
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        self.serve::<DeltaStream>(request).await
    }
}

impl Ads {
    /// Identifies and admits the proxy from its first request, then spawns
    /// the loop that answers its requests and snapshot changes with `P`.
    async fn serve<P: Protocol>(
        &self,
        request: Request<Streaming<P::Request>>,
    ) -> Result<Response<Out<P::Response>>, Status> {
        let token = bearer_token(request.metadata());
        let mut incoming = request.into_inner();
        let first = incoming.next().await.ok_or_else(|| {
            Status::invalid_argument("the stream closed before its first request")
        })??;
        let node_id = P::node_id(&first).unwrap_or_default();
        let key = node_key(node_id).ok_or_else(|| {
            Status::invalid_argument(format!("node id {node_id:?} is not <mesh>.<name>"))
        })?;
        self.auth
            .check_stream(&key, token.as_deref())
            .map_err(|e| {
                tracing::warn!(dataplane = %key, reason = %e, "refused an xDS stream");
                Status::unauthenticated(e)
            })?;
        let mut snapshots = self
            .proxies
            .connect(&key)
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
        tracing::info!(dataplane = %key, variant = P::NAME, "proxy connected");
        let (tx, rx) = mpsc::channel(16);
        let proxies = self.proxies.clone();
        let grace = self.grace;
        tokio::spawn(async move {
            let mut stream = P::default();
            let mut pending = Some(first);
            let result: Result<(), Status> = async {
                loop {
                    if let Some(req) = pending.take() {
                        handle(&proxies, &key, &mut stream, &req);
                    }
                    let snap = snapshots.borrow_and_update().clone();
                    for resp in stream.responses(&snap) {
                        tx.send(Ok(resp))
                            .await
                            .map_err(|_| Status::cancelled("proxy went away"))?;
                    }
                    tokio::select! {
                        req = incoming.next() => match req {
                            Some(Ok(r)) => pending = Some(r),
                            Some(Err(e)) => return Err(e),
                            None => return Ok(()),
                        },
                        changed = snapshots.changed() => if changed.is_err() { return Ok(()) },
                    }
                }
            }
            .await;
            proxies.disconnect(&key, grace);
            match result {
                Ok(()) => tracing::info!(dataplane = %key, "proxy disconnected"),
                Err(e) => tracing::info!(dataplane = %key, status = %e, "proxy stream ended"),
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// The dataplane token from `authorization: Bearer <token>`.
fn bearer_token(metadata: &MetadataMap) -> Option<String> {
    metadata
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned)
}

/// Applies a request and records what it meant in the proxy's status.
fn handle<P: Protocol>(proxies: &Proxies, key: &ResourceKey, stream: &mut P, req: &P::Request) {
    match stream.handle_request(req) {
        Event::Nacked {
            type_url,
            version,
            reason,
        } => {
            tracing::warn!(dataplane = %key, %type_url, %version, %reason, "Envoy rejected config (NACK); it keeps its last good config");
            proxies.record(key, |s| {
                s.nacks += 1;
                s.last_nack = Some(format!("{type_url}: {reason}"));
            });
        }
        Event::Acked { .. } => {
            let acked = stream.acked();
            proxies.record(key, |s| s.acked = acked);
        }
        Event::Subscribed(_) | Event::Stale => {}
    }
}
