//! The async loops that run a [`Publisher`] or [`Subscriber`] on a stream.
//! They own no policy: what to publish comes from a [`SnapshotCache`], what
//! to do with an update is the [`Sink`]'s business. Receiving is never held
//! up by sending: the publisher only builds a response once the outgoing
//! channel has room, and changes meanwhile coalesce in its dirty set.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use api::ResourceType;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;

use crate::publisher::{Handled, Publisher};
use crate::snapshot::{Event, SnapshotCache};
use crate::stats::StreamStats;
use crate::subscriber::{Subscriber, Update};
use crate::{DeltaDiscoveryRequest, DeltaDiscoveryResponse, ResourceError};

/// Why a stream ended. Every end is a failure the caller reconnects from,
/// a clean EOF included; `Ok(())` from a driver means it was cancelled.
#[derive(Debug, thiserror::Error)]
pub enum StreamEnd {
    #[error("the peer closed the stream")]
    Closed,
    #[error("the stream failed: {0}")]
    Status(#[from] tonic::Status),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("the store cannot be read: {0}")]
    Sink(String),
}

/// Shared counters of one stream, read by insights.
pub type SharedStats = Arc<Mutex<StreamStats>>;

fn store_stats(shared: &SharedStats, stats: StreamStats) {
    *shared.lock().unwrap_or_else(|p| p.into_inner()) = stats;
}

/// Runs `p` until `cancel` fires or the stream ends.
pub async fn publish<S>(
    mut p: Publisher,
    src: Arc<SnapshotCache>,
    mut incoming: S,
    out: mpsc::Sender<Result<DeltaDiscoveryResponse, tonic::Status>>,
    stats: SharedStats,
    cancel: CancellationToken,
) -> Result<(), StreamEnd>
where
    S: Stream<Item = Result<DeltaDiscoveryRequest, tonic::Status>> + Unpin,
{
    let mut events = src.subscribe();
    loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return Ok(()),
            req = incoming.next() => {
                let req = req.ok_or(StreamEnd::Closed)??;
                let m = crate::metrics::get();
                match p.handle_request(&req, &*src) {
                    Ok(Handled::Nacked(ty, msg)) => {
                        m.nacks_received.get_or_create(&crate::metrics::label(ty)).inc();
                        tracing::warn!(%ty, reason = %msg, "peer NACKed resources")
                    }
                    Ok(Handled::Acked(ty)) => {
                        m.acks_received.get_or_create(&crate::metrics::label(ty)).inc();
                    }
                    Ok(Handled::Subscribed(ty)) => tracing::debug!(%ty, have = req.initial_resource_versions.len(), "peer subscribed"),
                    Ok(_) => {}
                    Err(e) => return Err(StreamEnd::Protocol(e.to_string())),
                }
                store_stats(&stats, p.stats());
            }
            ev = events.recv() => match ev {
                Ok(Event::Changed(ty, name)) => p.changed(ty, &name),
                Ok(Event::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => p.resync(&*src),
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            },
            permit = out.reserve(), if p.has_pending() => {
                let permit = permit.map_err(|_| StreamEnd::Closed)?;
                if let Some(resp) = p.next_response(&*src) {
                    let m = crate::metrics::get();
                    if let Some(ty) = api::kds::type_from_url(&resp.type_url) {
                        let l = crate::metrics::label(ty);
                        m.sent_messages.get_or_create(&l).inc();
                        m.sent_bytes.get_or_create(&l).inc_by(prost::Message::encoded_len(&resp) as u64);
                        m.sent_resources.get_or_create(&l).inc_by((resp.resources.len() + resp.removed_resources.len()) as u64);
                    }
                    permit.send(Ok(resp));
                    store_stats(&stats, p.stats());
                }
            }
        }
    }
}

/// Applies updates to a subscriber's store.
pub trait Sink: Send + Sync {
    /// What is held of `ty`: wire name to version.
    fn have(&self, ty: ResourceType) -> Result<HashMap<String, String>, String>;
    /// Applies an update; returns the resources refused (decode errors
    /// included), which the NACK will list.
    fn apply(&self, update: Update) -> impl Future<Output = Vec<ResourceError>> + Send;
}

/// Runs `sub` until `cancel` fires or the stream ends. `out` carries the
/// subscriptions, ACKs and NACKs.
pub async fn subscribe<S, K>(
    sub: Subscriber,
    sink: &K,
    mut incoming: S,
    out: mpsc::Sender<DeltaDiscoveryRequest>,
    stats: SharedStats,
    cancel: CancellationToken,
) -> Result<(), StreamEnd>
where
    S: Stream<Item = Result<DeltaDiscoveryResponse, tonic::Status>> + Unpin,
    K: Sink,
{
    let mut have = HashMap::new();
    for ty in sub.types() {
        have.insert(*ty, sink.have(*ty).map_err(StreamEnd::Sink)?);
    }
    for req in sub.initial_requests(&have) {
        out.send(req).await.map_err(|_| StreamEnd::Closed)?;
    }
    let mut counters = StreamStats::new();
    loop {
        let resp = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Ok(()),
            resp = incoming.next() => resp.ok_or(StreamEnd::Closed)??,
        };
        let update = sub
            .decode(resp)
            .map_err(|e| StreamEnd::Protocol(e.to_string()))?;
        let (ty, nonce) = (update.ty, update.nonce.clone());
        let count = (update.upserts.len() + update.removals.len() + update.errors.len()) as u64;
        let errors = sink.apply(update).await;
        let m = crate::metrics::get();
        let l = crate::metrics::label(ty);
        m.received_messages.get_or_create(&l).inc();
        if errors.is_empty() {
            m.acks_sent.get_or_create(&l).inc();
        } else {
            m.nacks_sent.get_or_create(&l).inc();
        }
        let c = counters.entry(ty.name().to_owned()).or_default();
        c.responses += 1;
        c.resources += count;
        if errors.is_empty() {
            c.acks += 1;
        } else {
            c.nacks += 1;
            let reason = errors
                .iter()
                .map(|e| format!("{}: {}", e.name, e.reason))
                .collect::<Vec<_>>()
                .join("; ");
            tracing::warn!(%ty, %reason, "refused resources");
            c.last_nack = Some(reason);
        }
        store_stats(&stats, counters.clone());
        out.send(sub.answer(ty, &nonce, &errors))
            .await
            .map_err(|_| StreamEnd::Closed)?;
    }
}

/// Applies `update` to `store` as one batch (resource by resource when the
/// batch fails, so one bad resource does not hold back the others): each
/// upsert as `admit` returns it (or refused with its reason), each removal
/// at the key `key` maps its wire name to. Returns what was refused, for
/// the NACK.
pub async fn apply_to_store(
    store: &store::Store,
    update: Update,
    admit: impl Fn(api::Resource) -> Result<api::Resource, String>,
    key: impl Fn(ResourceType, &str) -> Option<api::ResourceKey>,
) -> Vec<ResourceError> {
    let mut errors = update.errors;
    let mut ops = Vec::new();
    let mut names = Vec::new();
    for (wire, r) in update.upserts {
        match admit(r) {
            Ok(r) => {
                names.push(wire);
                ops.push(store::Op::Replicate(r));
            }
            Err(reason) => errors.push(ResourceError { name: wire, reason }),
        }
    }
    for wire in update.removals {
        match key(update.ty, &wire) {
            Some(k) => {
                names.push(wire);
                ops.push(store::Op::DeleteIfExists(k));
            }
            None => errors.push(ResourceError {
                name: wire,
                reason: "not a valid resource name".into(),
            }),
        }
    }
    if ops.is_empty() {
        return errors;
    }
    let store = store.clone();
    match tokio::task::spawn_blocking(move || store.apply_or_each(ops)).await {
        Ok(failed) => errors.extend(failed.into_iter().map(|(i, e)| ResourceError {
            name: names[i].clone(),
            reason: format!("could not store it: {e}"),
        })),
        Err(e) => errors.push(ResourceError {
            name: String::new(),
            reason: format!("store task failed: {e}"),
        }),
    }
    errors
}
