//! The zone's side of KDS: it dials the global, subscribes to meshes,
//! policies and other zones' ingresses (applied to its own store), and
//! publishes its Dataplanes and ZoneIngresses. Any end of either stream,
//! a clean EOF included, tears the connection down; the zone redials with
//! jittered exponential backoff and resumes from what its store holds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, Context};
use api::kds::{GLOBAL_TO_ZONE, ZONE_TO_GLOBAL};
use api::{ResourceKey, ResourceType, ORIGIN_LABEL, ZONE_TAG};
use kds::driver::{self, Sink};
use kds::publisher::Publisher;
use kds::service::{KdsClient, ResponseStream};
use kds::snapshot::SnapshotCache;
use kds::subscriber::{Subscriber, Update};
use kds::ResourceError;
use store::Store;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

/// Largest single resource the zone accepts from the global.
const MAX_RESOURCE_BYTES: usize = 1024 * 1024;
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Where and how the zone reaches the global.
#[derive(Clone)]
pub struct KdsClientConfig {
    pub zone: String,
    /// `grpcs://host:port`.
    pub global_address: String,
    pub token: String,
    /// The CA the token pins for the global's certificate.
    pub kds_ca_pem: String,
    pub batch_bytes: usize,
}

/// What the zone knows of its KDS connection, for its logs and readiness.
#[derive(Default)]
pub struct KdsStatus {
    pub connected: bool,
    pub last_error: Option<String>,
}

pub type SharedStatus = Arc<Mutex<KdsStatus>>;

/// Jittered exponential backoff between `BACKOFF_MIN` and `BACKOFF_MAX`.
struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Self {
        Self { next: BACKOFF_MIN }
    }

    fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }

    fn step(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        // Full jitter in [base/2, base] so zones do not redial in lockstep.
        let jitter = rand::random::<f64>() * 0.5 + 0.5;
        base.mul_f64(jitter)
    }
}

/// Splits `grpcs://host:port` into the https URL tonic dials and the host
/// name the certificate must carry.
fn endpoint(address: &str) -> anyhow::Result<(String, String)> {
    let rest = address
        .strip_prefix("grpcs://")
        .ok_or_else(|| anyhow!("--global-address {address:?} must look like grpcs://HOST:5685"))?;
    let host = match rest.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => h.trim_matches(['[', ']']).to_owned(),
        _ => {
            return Err(anyhow!(
                "--global-address {address:?} needs a port, e.g. grpcs://{rest}:5685"
            ))
        }
    };
    Ok((format!("https://{rest}"), host))
}

/// Keeps the zone synced until `shutdown` fires.
pub async fn run(
    cfg: KdsClientConfig,
    store: Store,
    snapshot: Arc<SnapshotCache>,
    status: SharedStatus,
    shutdown: CancellationToken,
) {
    let mut backoff = Backoff::new();
    loop {
        let started = tokio::time::Instant::now();
        let result = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = session(&cfg, &store, &snapshot, &status, &shutdown) => r,
        };
        if shutdown.is_cancelled() {
            return;
        }
        if started.elapsed() > BACKOFF_MAX {
            backoff.reset();
        }
        let wait = backoff.step();
        let reason = match result {
            Ok(()) => "the stream ended".to_owned(),
            Err(e) => format!("{e:#}"),
        };
        {
            let mut st = status.lock().unwrap_or_else(|p| p.into_inner());
            st.connected = false;
            st.last_error = Some(reason.clone());
        }
        tracing::warn!(global = %cfg.global_address, error = %reason, retry_in = ?wait, "KDS connection to the global lost");
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

fn authorized<T>(body: T, token: &str) -> anyhow::Result<tonic::Request<T>> {
    let mut req = tonic::Request::new(body);
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}")
            .parse()
            .context("the zone token is not valid header text")?,
    );
    Ok(req)
}

/// One connection: both streams until either ends.
async fn session(
    cfg: &KdsClientConfig,
    store: &Store,
    snapshot: &Arc<SnapshotCache>,
    status: &SharedStatus,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let (url, host) = endpoint(&cfg.global_address)?;
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&cfg.kds_ca_pem))
        .domain_name(host);
    let channel = Endpoint::from_shared(url)?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(20))
        .keep_alive_while_idle(true)
        .connect()
        .await
        .with_context(|| format!("cannot connect to the global at {}", cfg.global_address))?;
    let limit = cfg.batch_bytes + MAX_RESOURCE_BYTES + 64 * 1024;
    let mut client = KdsClient::new(channel, limit.max(4 * 1024 * 1024));

    let (req_tx, req_rx) = mpsc::channel(64);
    let requests: ResponseStream<_> = Box::pin(ReceiverStream::new(req_rx).map(Ok));
    let from_global = client
        .global_to_zone(authorized(requests, &cfg.token)?)
        .await
        .map_err(|s| anyhow!("the global refused the zone: {}", s.message()))?
        .into_inner();
    let (resp_tx, resp_rx) = mpsc::channel(4);
    let responses: ResponseStream<_> = Box::pin(ReceiverStream::new(resp_rx));
    let to_global = client
        .zone_to_global(authorized(responses, &cfg.token)?)
        .await
        .map_err(|s| anyhow!("the global refused the zone: {}", s.message()))?
        .into_inner();
    {
        let mut st = status.lock().unwrap_or_else(|p| p.into_inner());
        st.connected = true;
        st.last_error = None;
    }
    tracing::info!(global = %cfg.global_address, zone = %cfg.zone, "connected to the global over KDS");

    let cancel = shutdown.child_token();
    let subscriber = Subscriber::new(
        &cfg.zone,
        "zone-cp",
        env!("CARGO_PKG_VERSION"),
        &GLOBAL_TO_ZONE,
        MAX_RESOURCE_BYTES,
    );
    let sink = ZoneSink {
        store: store.clone(),
        zone: cfg.zone.clone(),
    };
    let publisher = Publisher::new(&ZONE_TO_GLOBAL, None, cfg.batch_bytes);
    let stats = Arc::default();
    let result = tokio::select! {
        r = driver::subscribe(subscriber, &sink, from_global, req_tx, Arc::default(), cancel.clone()) => r,
        r = driver::publish(publisher, snapshot.clone(), to_global, resp_tx, stats, cancel.clone()) => r,
    };
    cancel.cancel();
    result.map_err(|e| anyhow!(e))
}

/// Applies the global's resources to the zone store, keeping the global's
/// creation times so policy ranking agrees everywhere.
struct ZoneSink {
    store: Store,
    zone: String,
}

/// Whether a resource in the zone's store came from the global (and so
/// is reported as held when resubscribing).
pub fn is_synced_from_global(r: &api::Resource, zone: &str) -> bool {
    match r.ty() {
        ResourceType::ZoneIngress => r.labels.get(ZONE_TAG).is_some_and(|z| z != zone),
        ResourceType::Mesh
        | ResourceType::TrafficPermission
        | ResourceType::ZoneIntermediate
        | ResourceType::DataplaneTokenKey => true,
        _ => false,
    }
}

/// Whether a resource is `zone`'s own, to publish to the global: created in
/// a zone, and not in another zone (other zones' ingresses arrive from the
/// global with their own zone's labels).
pub fn is_local(r: &api::Resource, zone: &str) -> bool {
    r.labels.get(ORIGIN_LABEL).map(String::as_str) == Some("zone")
        && r.labels.get(ZONE_TAG).is_none_or(|z| z == zone)
}

impl ZoneSink {
    fn key(ty: ResourceType, wire: &str) -> Option<ResourceKey> {
        if ty.is_mesh_scoped() {
            let (mesh, name) = wire.split_once('/')?;
            Some(ResourceKey::scoped(ty, mesh, name))
        } else {
            Some(ResourceKey::global(ty, wire))
        }
    }
}

impl Sink for ZoneSink {
    fn have(&self, ty: ResourceType) -> Result<HashMap<String, String>, String> {
        Ok(self
            .store
            .list(ty, None)
            .map_err(|e| e.to_string())?
            .iter()
            .filter(|r| is_synced_from_global(r, &self.zone))
            .map(|r| (api::kds::wire_name(r), api::kds::version(r)))
            .collect())
    }

    async fn apply(&self, update: Update) -> Vec<ResourceError> {
        let admit = |r: api::Resource| {
            if is_synced_from_global(&r, &self.zone) {
                Ok(r)
            } else {
                Err("the zone owns this resource; the global cannot overwrite it".to_owned())
            }
        };
        driver::apply_to_store(&self.store, update, admit, Self::key).await
    }
}
