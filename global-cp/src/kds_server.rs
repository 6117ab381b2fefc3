//! The global's side of KDS: it authenticates each zone by its token, then
//! publishes meshes, policies and other zones' ingresses to it, and applies
//! what the zone publishes (Dataplanes, ZoneIngresses) under the zone's name.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use api::kds::{GLOBAL_TO_ZONE, ZONE_TO_GLOBAL};
use api::{Resource, ResourceKey, ResourceType, Spec, ORIGIN_LABEL, ZONE_TAG};
use certs::{VerifyingKey, ZoneTokenClaims, ZoneTokenScope};
use kds::driver::{self, Sink};
use kds::publisher::Publisher;
use kds::service::{Kds, ResponseStream};
use kds::snapshot::SnapshotCache;
use kds::subscriber::{Subscriber, Update};
use kds::{DeltaDiscoveryRequest, DeltaDiscoveryResponse, ResourceError};
use store::{Precondition, Store};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::zones::{self, Direction, Zones};

/// Largest single resource a zone may publish.
pub const MAX_RESOURCE_BYTES: usize = 1024 * 1024;

pub struct KdsGlobal {
    pub store: Store,
    pub snapshot: Arc<SnapshotCache>,
    pub zones: Zones,
    pub verifying_keys: Vec<VerifyingKey>,
    pub max_message_bytes: usize,
    pub shutdown: CancellationToken,
}

pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Meta key under which a revoked token's id is kept.
pub fn revoked_key(jti: &str) -> String {
    format!("revoked-zone-token/{jti}")
}

impl KdsGlobal {
    /// Checks the zone token on a stream and returns its claims. Every
    /// refusal is logged with the reason and answered with a status that
    /// says what to do.
    fn authenticate(&self, meta: &tonic::metadata::MetadataMap) -> Result<ZoneTokenClaims, Status> {
        let refuse = |status: Status| {
            tracing::warn!(reason = status.message(), "refused a zone connection");
            status
        };
        let token = meta
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                refuse(Status::unauthenticated(
                    "no zone token: pass one with --zone-token-file",
                ))
            })?;
        let claims = certs::verify_zone_token(&self.verifying_keys, token.trim(), now_unix())
            .map_err(|e| refuse(Status::unauthenticated(format!("zone token refused: {e}"))))?;
        if claims.scope != ZoneTokenScope::Zone {
            return Err(refuse(Status::permission_denied(
                "an ingress-scoped token cannot sync a zone; generate one with `meshctl generate zone-token --zone NAME`",
            )));
        }
        let revoked = self
            .store
            .get_meta(&revoked_key(&claims.jti))
            .map_err(|e| Status::internal(e.to_string()))?;
        if revoked.is_some() {
            return Err(refuse(Status::unauthenticated(format!(
                "the zone token of zone {:?} was revoked; generate a new one",
                claims.zone
            ))));
        }
        let tombstone = self
            .store
            .get_meta(&zones::tombstone_key(&claims.zone))
            .map_err(|e| Status::internal(e.to_string()))?
            .and_then(|v| String::from_utf8(v).ok())
            .and_then(|s| s.parse::<u64>().ok());
        if tombstone.is_some_and(|deleted_at| claims.iat <= deleted_at) {
            return Err(refuse(Status::unauthenticated(format!(
                "zone {:?} was deleted after this token was issued; generate a new token",
                claims.zone
            ))));
        }
        match zones::zone_enabled(&self.store, &claims.zone)
            .map_err(|e| Status::internal(e.to_string()))?
        {
            Some(false) => {
                return Err(refuse(Status::permission_denied(format!(
                    "zone {:?} is disabled on the global",
                    claims.zone
                ))))
            }
            Some(true) => {}
            None => self.create_zone(&claims.zone)?,
        }
        Ok(claims)
    }

    /// A zone that connects with a valid token and no Zone resource gets
    /// one, as in Kuma.
    fn create_zone(&self, zone: &str) -> Result<(), Status> {
        let mut r = Resource::new(zone, None, Spec::Zone(Default::default()));
        r.labels.insert(ORIGIN_LABEL.into(), "global".into());
        match self.store.put(r, Precondition::Absent) {
            Ok(_) => {
                tracing::info!(zone, "registered a new zone");
                Ok(())
            }
            Err(store::StoreError::AlreadyExists(_)) => Ok(()),
            Err(e) => Err(Status::internal(e.to_string())),
        }
    }
}

#[tonic::async_trait]
impl Kds for KdsGlobal {
    async fn global_to_zone(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<ResponseStream<DeltaDiscoveryResponse>>, Status> {
        let claims = self.authenticate(request.metadata())?;
        let zone = claims.zone;
        let reg = self
            .zones
            .register(&zone, Direction::GlobalToZone, &self.shutdown);
        tracing::info!(zone, "zone connected: global-to-zone stream open");
        let (tx, rx) = mpsc::channel(4);
        let publisher = Publisher::new(&GLOBAL_TO_ZONE, Some(&zone), self.max_message_bytes);
        let zones = self.zones.clone();
        let z = zone.clone();
        // The zone's node tells its version; remember it for insights.
        let incoming = request.into_inner().map(move |msg| {
            if let Ok(req) = &msg {
                if let Some(node) = &req.node {
                    if let Some(xds_api::pb::envoy::config::core::v3::node::UserAgentVersionType::UserAgentVersion(v)) =
                        &node.user_agent_version_type
                    {
                        zones.set_version(&z, v);
                    }
                }
            }
            msg
        });
        let snapshot = self.snapshot.clone();
        let zones = self.zones.clone();
        tokio::spawn(async move {
            let result = driver::publish(
                publisher,
                snapshot,
                Box::pin(incoming),
                tx.clone(),
                reg.stats.clone(),
                reg.cancel.clone(),
            )
            .await;
            end_of_stream(&zones, &zone, Direction::GlobalToZone, reg.id, result);
            let _ = tx
                .send(Err(Status::unavailable(
                    "the global closed this KDS stream",
                )))
                .await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn zone_to_global(
        &self,
        request: Request<Streaming<DeltaDiscoveryResponse>>,
    ) -> Result<Response<ResponseStream<DeltaDiscoveryRequest>>, Status> {
        let claims = self.authenticate(request.metadata())?;
        let zone = claims.zone;
        let reg = self
            .zones
            .register(&zone, Direction::ZoneToGlobal, &self.shutdown);
        tracing::info!(zone, "zone connected: zone-to-global stream open");
        let (tx, rx) = mpsc::channel(64);
        let subscriber = Subscriber::new(
            "global",
            "global-cp",
            env!("CARGO_PKG_VERSION"),
            &ZONE_TO_GLOBAL,
            MAX_RESOURCE_BYTES,
        );
        let sink = GlobalSink {
            store: self.store.clone(),
            zone: zone.clone(),
        };
        let zones = self.zones.clone();
        let incoming = request.into_inner();
        tokio::spawn(async move {
            let result = driver::subscribe(
                subscriber,
                &sink,
                incoming,
                tx,
                reg.stats.clone(),
                reg.cancel.clone(),
            )
            .await;
            end_of_stream(&zones, &zone, Direction::ZoneToGlobal, reg.id, result);
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx).map(Ok))))
    }
}

fn end_of_stream(
    zones: &Zones,
    zone: &str,
    dir: Direction,
    id: u64,
    result: Result<(), driver::StreamEnd>,
) {
    match result {
        Ok(()) => {
            tracing::info!(zone, ?dir, "KDS stream closed by the global");
            zones.unregister(zone, dir, id, None);
        }
        Err(e) => {
            tracing::warn!(zone, ?dir, error = %e, "KDS stream ended");
            zones.unregister(zone, dir, id, Some(e.to_string()));
        }
    }
}

/// Applies a zone's resources to the global store under the zone's name:
/// `<zone>.<name>`, labelled `kuma.io/origin: zone` and `kuma.io/zone: <zone>`
/// from the authenticated token, whatever the zone claimed.
struct GlobalSink {
    store: Store,
    zone: String,
}

impl GlobalSink {
    fn prefix(&self) -> String {
        format!("{}.", self.zone)
    }

    /// The global key of a resource a zone names `wire`.
    fn key(&self, ty: ResourceType, wire: &str) -> Option<ResourceKey> {
        if ty.is_mesh_scoped() {
            let (mesh, name) = wire.split_once('/')?;
            Some(ResourceKey::scoped(
                ty,
                mesh,
                &format!("{}{name}", self.prefix()),
            ))
        } else {
            Some(ResourceKey::global(ty, &format!("{}{wire}", self.prefix())))
        }
    }

    fn admit(&self, mut r: Resource) -> Result<Resource, String> {
        if let Some(claimed) = r.labels.get(ZONE_TAG).filter(|z| **z != self.zone) {
            return Err(format!(
                "claims zone {claimed:?} but the connection belongs to zone {:?}",
                self.zone
            ));
        }
        if let Spec::ZoneIngress(zi) = &r.spec {
            if zi.zone.as_ref().is_some_and(|z| *z != self.zone) {
                return Err(format!(
                    "zone field {:?} is not the connection's zone",
                    zi.zone
                ));
            }
        }
        if let Some(mesh) = &r.mesh {
            let exists = self
                .store
                .get(&ResourceKey::global(ResourceType::Mesh, mesh))
                .map_err(|e| e.to_string())?
                .is_some();
            if !exists {
                return Err(format!("mesh {mesh:?} does not exist on the global"));
            }
        }
        r.name = format!("{}{}", self.prefix(), r.name);
        if r.name.len() > 253 {
            return Err("the name with the zone prefix is longer than 253 characters".into());
        }
        r.labels.insert(ORIGIN_LABEL.into(), "zone".into());
        r.labels.insert(ZONE_TAG.into(), self.zone.clone());
        Ok(r)
    }
}

impl Sink for GlobalSink {
    fn have(&self, ty: ResourceType) -> Result<HashMap<String, String>, String> {
        let prefix = self.prefix();
        let mut have = HashMap::new();
        for mut r in self.store.list(ty, None).map_err(|e| e.to_string())? {
            if r.labels.get(ZONE_TAG) != Some(&self.zone) {
                continue;
            }
            let Some(name) = r.name.strip_prefix(&prefix).map(str::to_owned) else {
                continue;
            };
            r.name = name;
            have.insert(api::kds::wire_name(&r), api::kds::version(&r));
        }
        Ok(have)
    }

    async fn apply(&self, update: Update) -> Vec<ResourceError> {
        driver::apply_to_store(
            &self.store,
            update,
            |r| self.admit(r),
            |ty, wire| self.key(ty, wire),
        )
        .await
    }
}
