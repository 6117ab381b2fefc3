//! A load generator for the zone's dataplane server: many simulated Envoys,
//! each an ADS stream (state of the world) that subscribes to clusters,
//! endpoints, secrets and listeners and ACKs every response as Envoy does.
//! Streams share a few TLS connections (HTTP/2 multiplexing), as a large
//! fleet of sidecars shares nothing but looks the same to the server.
//!
//! Each client records when it ACKed its latest listener config, so a
//! benchmark can time a change until every affected proxy has it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use xds_api::pb::envoy::config::core::v3::Node;
use xds_api::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use xds_api::pb::envoy::service::discovery::v3::DiscoveryRequest;

const TYPES: [&str; 4] = [
    "type.googleapis.com/envoy.config.cluster.v3.Cluster",
    "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
    "type.googleapis.com/envoy.config.listener.v3.Listener",
];
const LISTENER: usize = 3;

/// One simulated proxy's progress, readable while it runs.
#[derive(Default)]
pub struct ClientState {
    /// Nanoseconds since the fleet started when the last listener response
    /// was ACKed (0: never).
    pub lds_acked_ns: AtomicU64,
    /// Bit per type in [`TYPES`] order: got and ACKed at least once.
    pub seen: AtomicU8,
    pub responses: AtomicU64,
    /// The version of the last listener response ACKed.
    pub lds_version: std::sync::Mutex<String>,
}

/// Simulated proxies; dropping it ends their streams.
pub struct Fleet {
    pub clients: Vec<Arc<ClientState>>,
    pub started: Instant,
    cancel: CancellationToken,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// How to reach the dataplane server.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub ca_pem: String,
}

async fn channel(t: &Target) -> anyhow::Result<Channel> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&t.ca_pem))
        .domain_name("localhost");
    Endpoint::from_shared(format!("https://{}", t.addr))?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .with_context(|| format!("cannot connect to the dataplane server at {}", t.addr))
}

impl Fleet {
    /// Opens one ADS stream per `(node id, token)` over `connections` TLS
    /// connections. Must run inside a tokio runtime.
    pub async fn connect(
        target: &Target,
        proxies: &[(String, String)],
        connections: usize,
    ) -> anyhow::Result<Fleet> {
        let mut channels = Vec::new();
        for _ in 0..connections.max(1) {
            channels.push(channel(target).await?);
        }
        let started = Instant::now();
        let cancel = CancellationToken::new();
        let mut clients = Vec::with_capacity(proxies.len());
        for (i, (node_id, token)) in proxies.iter().enumerate() {
            let state = Arc::new(ClientState::default());
            clients.push(state.clone());
            let ch = channels[i % channels.len()].clone();
            let (node_id, token, cancel) = (node_id.clone(), token.clone(), cancel.clone());
            tokio::spawn(async move {
                tokio::select! {
                    _ = cancel.cancelled() => {}
                    r = run_client(ch, node_id.clone(), token, state, started) => {
                        if let Err(e) = r {
                            if !cancel.is_cancelled() {
                                eprintln!("simulated proxy {node_id}: {e:#}");
                            }
                        }
                    }
                }
            });
        }
        Ok(Fleet {
            clients,
            started,
            cancel,
        })
    }

    /// How many clients have ACKed every type at least once.
    pub fn ready(&self) -> usize {
        self.clients
            .iter()
            .filter(|c| c.seen.load(Ordering::Relaxed) == 0b1111)
            .count()
    }

    /// Waits until every client is ready.
    pub async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<Duration> {
        let start = Instant::now();
        while self.ready() < self.clients.len() {
            anyhow::ensure!(
                start.elapsed() < timeout,
                "only {} of {} simulated proxies got their config within {timeout:?}",
                self.ready(),
                self.clients.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(start.elapsed())
    }

    /// Nanoseconds since the fleet started.
    pub fn now_ns(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }

    /// Waits until every client in `which` has ACKed a listener response
    /// after `since_ns`; returns the time from `since_ns` to the last ACK.
    pub async fn wait_lds_after(
        &self,
        which: &[usize],
        since_ns: u64,
        timeout: Duration,
    ) -> anyhow::Result<Duration> {
        let start = Instant::now();
        loop {
            let mut latest = 0;
            let mut missing = 0;
            for &i in which {
                let t = self.clients[i].lds_acked_ns.load(Ordering::Relaxed);
                if t <= since_ns {
                    missing += 1;
                } else {
                    latest = latest.max(t);
                }
            }
            if missing == 0 {
                return Ok(Duration::from_nanos(latest - since_ns));
            }
            anyhow::ensure!(
                start.elapsed() < timeout,
                "{missing} of {} proxies did not ACK new listeners within {timeout:?}",
                which.len()
            );
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
    }
}

async fn run_client(
    channel: Channel,
    node_id: String,
    token: String,
    state: Arc<ClientState>,
    started: Instant,
) -> anyhow::Result<()> {
    let mut client =
        AggregatedDiscoveryServiceClient::new(channel).max_decoding_message_size(64 * 1024 * 1024);
    let (tx, rx) = mpsc::channel(8);
    for (i, type_url) in TYPES.iter().enumerate() {
        tx.send(DiscoveryRequest {
            node: (i == 0).then(|| Node {
                id: node_id.clone(),
                ..Default::default()
            }),
            type_url: (*type_url).to_owned(),
            ..Default::default()
        })
        .await?;
    }
    let mut req = tonic::Request::new(ReceiverStream::new(rx));
    req.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    let mut responses = client.stream_aggregated_resources(req).await?.into_inner();
    while let Some(resp) = responses.message().await? {
        tx.send(DiscoveryRequest {
            type_url: resp.type_url.clone(),
            version_info: resp.version_info.clone(),
            response_nonce: resp.nonce.clone(),
            ..Default::default()
        })
        .await?;
        state.responses.fetch_add(1, Ordering::Relaxed);
        if let Some(i) = TYPES.iter().position(|t| *t == resp.type_url) {
            state.seen.fetch_or(1 << i, Ordering::Relaxed);
            if i == LISTENER {
                *state.lds_version.lock().unwrap_or_else(|p| p.into_inner()) =
                    resp.version_info.clone();
                state
                    .lds_acked_ns
                    .store(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
            }
        }
    }
    Ok(())
}

/// Resident memory of a process, in KiB (VmRSS).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// CPU time (user + system) a process has used.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which is in parentheses).
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on Linux.
    Some(Duration::from_millis(ticks * 10))
}
