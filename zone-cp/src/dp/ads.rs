//! The ADS gRPC service Envoy connects to: it identifies the proxy by its
//! node id (`<mesh>.<name>`), checks its dataplane token, and runs a
//! [`SotwStream`] fed by the proxy's snapshot channel.

use std::pin::Pin;

use api::{ResourceKey, ResourceType};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};
use xds_api::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryService;
use xds_api::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};

use super::proxies::Proxies;
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
pub fn node_key(node_id: &str) -> Option<ResourceKey> {
    let (mesh, name) = node_id.split_once('.')?;
    (!mesh.is_empty() && !name.is_empty())
        .then(|| ResourceKey::scoped(ResourceType::Dataplane, mesh, name))
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for Ads {
    type StreamAggregatedResourcesStream = Out<DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = Out<DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let token = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_owned);
        let mut incoming = request.into_inner();
        let first = incoming.next().await.ok_or_else(|| {
            Status::invalid_argument("the stream closed before its first request")
        })??;
        let node_id = first
            .node
            .as_ref()
            .map(|n| n.id.clone())
            .unwrap_or_default();
        let key = node_key(&node_id).ok_or_else(|| {
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
        tracing::info!(dataplane = %key, "proxy connected");
        let (tx, rx) = mpsc::channel(16);
        let proxies = self.proxies.clone();
        let grace = self.grace;
        tokio::spawn(async move {
            let mut sotw = SotwStream::default();
            let mut pending = Some(first);
            let result: Result<(), Status> = async {
                loop {
                    if let Some(req) = pending.take() {
                        handle(&proxies, &key, &mut sotw, &req);
                    }
                    let snap = snapshots.borrow_and_update().clone();
                    for resp in sotw.responses(&snap) {
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

    async fn delta_aggregated_resources(
        &self,
        _request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        Err(Status::unimplemented(
            "this zone serves state-of-the-world ADS; set ads_config.api_type: GRPC",
        ))
    }
}

fn handle(proxies: &Proxies, key: &ResourceKey, sotw: &mut SotwStream, req: &DiscoveryRequest) {
    match sotw.handle_request(req) {
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
            let acked = sotw.acked();
            proxies.record(key, |s| s.acked = acked);
        }
        Event::Subscribed(_) | Event::Stale => {}
    }
}
