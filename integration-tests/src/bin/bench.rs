//! `bench`: benchmarks that start the real binaries and print their figures.
//!
//! Run in release: `cargo build --release --workspace && target/release/bench api`
//! (scripts/bench does both). Each scenario prints a table with the target
//! beside each figure and writes JSON next to it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use integration_tests::inproc::InProcessZone;
use integration_tests::{traffic_permission, wait_until, ApiClient, ControlPlane, GlobalCp};
use rand::Rng;
use serde_json::json;

#[derive(Parser)]
#[command(
    name = "bench",
    about = "Benchmarks of the control plane, against the real binaries"
)]
struct Cli {
    /// Where to write the JSON results.
    #[arg(long, default_value = "target/bench")]
    out_dir: PathBuf,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// REST API: PUT/GET latency and throughput with many TrafficPermissions stored.
    Api {
        /// TrafficPermissions stored before measuring.
        #[arg(long, default_value_t = 10_000)]
        preload: usize,
        /// Sequential requests measured for latency, per verb.
        #[arg(long, default_value_t = 2_000)]
        requests: usize,
        /// Concurrent clients in the throughput runs.
        #[arg(long, default_value_t = 4)]
        clients: usize,
        /// Length of each throughput run.
        #[arg(long, default_value = "3", value_parser = parse_secs)]
        seconds: Duration,
    },
    /// KDS: propagation latency global -> zones, and a fresh zone's full sync.
    Kds {
        /// Changes measured per setup.
        #[arg(long, default_value_t = 200)]
        changes: usize,
        /// In-process zones (running the real zone sync code) for the many-zone run.
        #[arg(long, default_value_t = 50)]
        zones: usize,
        /// TrafficPermissions a fresh zone must receive.
        #[arg(long, default_value_t = 10_000)]
        policies: usize,
    },
    /// Every scenario of the benchmark suite, each latency beside an empty
    /// gRPC round trip on the same loopback measured in the same run.
    /// `--ci` runs them at a small size, to keep them from rotting.
    All {
        /// Small sizes (100 dataplanes, 5 zones); verdicts are not judged.
        #[arg(long)]
        ci: bool,
    },
    /// Policy propagation: zones x dataplanes, one permission changed on
    /// the global, until every affected proxy in every zone ACKs.
    Propagation {
        #[arg(long, default_value_t = 2)]
        zones: usize,
        /// Dataplanes per zone.
        #[arg(long, default_value_t = 1000)]
        dataplanes: usize,
        #[arg(long, default_value_t = 100)]
        services: usize,
        #[arg(long, default_value_t = 200)]
        changes: usize,
    },
    /// xDS at scale: simulated Envoys (ADS clients that ACK like Envoy) in
    /// one zone: memory per dataplane, change-to-ACK, mesh-wide push.
    Xds {
        /// Fleet sizes to run, one after another.
        #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
        dataplanes: Vec<usize>,
        /// Services the dataplanes are spread over.
        #[arg(long, default_value_t = 100)]
        services: usize,
        /// Targeted TrafficPermission changes timed per size.
        #[arg(long, default_value_t = 100)]
        changes: usize,
        /// TLS connections the streams share.
        #[arg(long, default_value_t = 100)]
        connections: usize,
    },
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    s.parse::<f64>()
        .map(Duration::from_secs_f64)
        .map_err(|e| e.to_string())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    std::fs::create_dir_all(&cli.out_dir)?;
    match cli.scenario {
        Scenario::Api {
            preload,
            requests,
            clients,
            seconds,
        } => {
            let result = api_bench(preload, requests, clients, seconds)?;
            write_json(&cli.out_dir, "api", &result)?;
        }
        Scenario::Kds {
            changes,
            zones,
            policies,
        } => {
            let result = kds_bench(changes, zones, policies)?;
            write_json(&cli.out_dir, "kds", &result)?;
        }
        Scenario::All { ci } => {
            let result = all(ci)?;
            write_json(&cli.out_dir, "all", &result)?;
        }
        Scenario::Propagation {
            zones,
            dataplanes,
            services,
            changes,
        } => {
            let base = baseline(1000)?;
            let result = propagation(zones, dataplanes, services, changes, &base, true)?;
            write_json(&cli.out_dir, "propagation", &result)?;
        }
        Scenario::Xds {
            dataplanes,
            services,
            changes,
            connections,
        } => {
            let mut results = Vec::new();
            for n in dataplanes {
                results.push(xds_bench(n, services, changes, connections)?);
            }
            write_json(&cli.out_dir, "xds", &json!(results))?;
        }
    }
    Ok(())
}

fn write_json(dir: &std::path::Path, name: &str, v: &serde_json::Value) -> anyhow::Result<()> {
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(v)?)?;
    println!("\nJSON written to {}", path.display());
    Ok(())
}

const MESH: &str = "default";

fn tp_path(i: usize) -> String {
    format!("/meshes/{MESH}/traffic-permissions/tp-{i}")
}

fn put_tp(api: &ApiClient, i: usize, source: &str) -> u16 {
    let name = format!("tp-{i}");
    api.put_json(
        &tp_path(i),
        &traffic_permission(MESH, &name, source, "backend"),
    )
    .status
}

/// Latency percentiles of a sample, in milliseconds.
struct Percentiles {
    p50: f64,
    p99: f64,
    max: f64,
}

fn percentiles(mut samples: Vec<Duration>) -> Percentiles {
    samples.sort();
    let at = |q: f64| {
        let idx = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[idx].as_secs_f64() * 1000.0
    };
    Percentiles {
        p50: at(0.50),
        p99: at(0.99),
        max: at(1.0),
    }
}

/// Runs `op` from `clients` threads until `duration` passes (or a bounded
/// count is reached) and returns operations per second.
fn throughput(
    api: &ApiClient,
    clients: usize,
    duration: Duration,
    op: impl Fn(&ApiClient, usize) + Send + Sync + 'static,
) -> f64 {
    const MAX_OPS: usize = 200_000;
    let done = Arc::new(AtomicUsize::new(0));
    let op = Arc::new(op);
    let start = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|_| {
            let api = api.clone();
            let done = done.clone();
            let op = op.clone();
            std::thread::spawn(move || {
                while start.elapsed() < duration {
                    let n = done.fetch_add(1, Ordering::Relaxed);
                    if n >= MAX_OPS {
                        break;
                    }
                    op(&api, n);
                }
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
    done.load(Ordering::Relaxed).min(MAX_OPS) as f64 / start.elapsed().as_secs_f64()
}

fn verdict(value: f64, target: f64) -> &'static str {
    if value < target {
        "pass"
    } else {
        "FAIL"
    }
}

fn api_bench(
    preload: usize,
    requests: usize,
    clients: usize,
    seconds: Duration,
) -> anyhow::Result<serde_json::Value> {
    let cp = GlobalCp::start()?;
    let api = cp.client();
    anyhow::ensure!(
        api.put_yaml("/meshes/default", "type: Mesh\nname: default\n")
            .status
            == 201
    );

    eprintln!("preloading {preload} TrafficPermissions with {clients} clients...");
    let t = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let loaders: Vec<_> = (0..clients.max(1))
        .map(|_| {
            let api = api.clone();
            let next = next.clone();
            std::thread::spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= preload {
                    break;
                }
                assert_eq!(put_tp(&api, i, "web"), 201, "preload of tp-{i}");
            })
        })
        .collect();
    for l in loaders {
        l.join()
            .map_err(|_| anyhow::anyhow!("preload thread panicked"))?;
    }
    eprintln!("preloaded in {:.1} s", t.elapsed().as_secs_f64());

    let mut rng = rand::thread_rng();
    let mut put_samples = Vec::with_capacity(requests);
    for n in 0..requests {
        let i = rng.gen_range(0..preload.max(1));
        let start = Instant::now();
        let status = put_tp(&api, i, &format!("web-{n}"));
        put_samples.push(start.elapsed());
        anyhow::ensure!(status == 200 || status == 201, "PUT answered {status}");
    }
    let mut get_samples = Vec::with_capacity(requests);
    for _ in 0..requests {
        let i = rng.gen_range(0..preload.max(1));
        let start = Instant::now();
        let status = api.get(&tp_path(i)).status;
        get_samples.push(start.elapsed());
        anyhow::ensure!(status == 200, "GET answered {status}");
    }
    let put = percentiles(put_samples);
    let get = percentiles(get_samples);
    let put_rps = throughput(&api, clients, seconds, move |api, n| {
        put_tp(api, n % preload.max(1), "tput");
    });
    let get_rps = throughput(&api, clients, seconds, move |api, n| {
        api.get(&tp_path(n % preload.max(1)));
    });

    println!("\nREST API with {preload} TrafficPermissions stored ({requests} sequential requests per verb, {clients} clients for throughput)\n");
    println!("| figure | value | target | verdict |");
    println!("|---|---|---|---|");
    println!("| PUT p50 | {:.3} ms | | |", put.p50);
    println!(
        "| PUT p99 | {:.3} ms | < 5 ms | {} |",
        put.p99,
        verdict(put.p99, 5.0)
    );
    println!("| PUT max | {:.3} ms | | |", put.max);
    println!(
        "| GET p50 | {:.3} ms | < 1 ms | {} |",
        get.p50,
        verdict(get.p50, 1.0)
    );
    println!(
        "| GET p99 | {:.3} ms | < 1 ms | {} |",
        get.p99,
        verdict(get.p99, 1.0)
    );
    println!("| GET max | {:.3} ms | | |", get.max);
    println!("| PUT throughput | {put_rps:.0} req/s | | |");
    println!("| GET throughput | {get_rps:.0} req/s | | |");

    Ok(json!({
        "scenario": "api",
        "preload": preload,
        "requests": requests,
        "clients": clients,
        "put_ms": { "p50": put.p50, "p99": put.p99, "max": put.max },
        "get_ms": { "p50": get.p50, "p99": get.p99, "max": get.max },
        "put_per_second": put_rps,
        "get_per_second": get_rps,
        "targets": { "put_p99_ms": 5.0, "get_ms": 1.0 },
    }))
}

/// How long one change may take to reach the zones before the run fails.
const PROPAGATION_DEADLINE: Duration = Duration::from_secs(10);

fn source(body: &serde_json::Value) -> &str {
    body["sources"][0]["match"]["kuma.io/service"]
        .as_str()
        .unwrap_or("")
}

fn preload_policies(api: &ApiClient, count: usize, clients: usize) -> anyhow::Result<()> {
    let next = Arc::new(AtomicUsize::new(0));
    let loaders: Vec<_> = (0..clients.max(1))
        .map(|_| {
            let api = api.clone();
            let next = next.clone();
            std::thread::spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    break;
                }
                assert!(
                    matches!(put_tp(&api, i, "web"), 200 | 201),
                    "preload of tp-{i}"
                );
            })
        })
        .collect();
    for l in loaders {
        l.join()
            .map_err(|_| anyhow::anyhow!("preload thread panicked"))?;
    }
    Ok(())
}

fn kds_bench(changes: usize, zones: usize, policies: usize) -> anyhow::Result<serde_json::Value> {
    let rt = tokio::runtime::Runtime::new()?;
    let _guard = rt.enter();
    let global = ControlPlane::start()?;
    let g = global.client();
    anyhow::ensure!(
        g.put_yaml("/meshes/default", "type: Mesh\nname: default\n")
            .status
            == 201
    );
    anyhow::ensure!(put_tp(&g, 0, "start") == 201);

    // 1. Two real zone-cp processes; readable means their REST API shows it.
    eprintln!("2 zone-cp processes: {changes} changes...");
    let real: Vec<ControlPlane> = ["zone-1", "zone-2"]
        .iter()
        .map(|z| ControlPlane::zone(z, &global))
        .collect::<anyhow::Result<_>>()?;
    let clients: Vec<ApiClient> = real.iter().map(ControlPlane::client).collect();
    for c in &clients {
        wait_until("initial sync", PROPAGATION_DEADLINE, || {
            (c.get(&tp_path(0)).status == 200).then_some(())
        })?;
    }
    let mut two = Vec::with_capacity(changes);
    for i in 0..changes {
        let want = format!("v{i}");
        let start = Instant::now();
        anyhow::ensure!(put_tp(&g, 0, &want) == 200);
        for c in &clients {
            while source(&c.get(&tp_path(0)).body) != want {
                anyhow::ensure!(
                    start.elapsed() < PROPAGATION_DEADLINE,
                    "change {i} did not arrive"
                );
            }
        }
        two.push(start.elapsed());
    }
    drop(real);
    let two = percentiles(two);

    // 2. Many in-process zones; readable means in their stores.
    eprintln!("{zones} in-process zones: {changes} changes...");
    let global_pid = global.pid().expect("global running");
    let rss_no_zones = integration_tests::xds_load::rss_kib(global_pid).unwrap_or(0);
    let (tx, rx) = std::sync::mpsc::channel::<(usize, String)>();
    let mut sims = Vec::new();
    for i in 0..zones {
        let name = format!("sim-{i}");
        let token = global.zone_token(&name, None)?;
        let zone = InProcessZone::start(&name, global.kds_addr.expect("kds"), &token, vec![])?;
        let mut watch = zone.store.watch();
        let tx = tx.clone();
        rt.spawn(async move {
            while let Ok(change) = watch.recv().await {
                if let store::ChangeKind::Put(r) = &change.kind {
                    if r.name == "tp-0" {
                        let v = source(&r.to_value()).to_owned();
                        if tx.send((i, v)).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        sims.push(zone);
    }
    let key = api::ResourceKey::scoped(api::ResourceType::TrafficPermission, MESH, "tp-0");
    for z in &sims {
        wait_until("in-process zone sync", PROPAGATION_DEADLINE * 3, || {
            z.store.get(&key).ok().flatten().map(|_| ())
        })?;
    }
    while rx.try_recv().is_ok() {}
    let rss_zones = integration_tests::xds_load::rss_kib(global_pid).unwrap_or(0);
    let per_zone_kib = rss_zones.saturating_sub(rss_no_zones) as f64 / zones.max(1) as f64;
    let mut many = Vec::with_capacity(changes);
    let mut max_stall = Duration::ZERO;
    for i in 0..changes {
        let want = format!("m{i}");
        let start = Instant::now();
        anyhow::ensure!(put_tp(&g, 0, &want) == 200);
        let mut seen = vec![false; zones];
        let mut left = zones;
        while left > 0 {
            let (z, v) = rx.recv_timeout(PROPAGATION_DEADLINE)?;
            if v == want && !seen[z] {
                seen[z] = true;
                left -= 1;
            }
        }
        let took = start.elapsed();
        max_stall = max_stall.max(took);
        many.push(took);
    }
    drop(sims);
    let many = percentiles(many);

    // 3. A fresh zone receiving every policy.
    eprintln!("preloading {policies} TrafficPermissions...");
    preload_policies(&g, policies, 4)?;
    let total = policies.max(1);
    let token = global.zone_token("fresh", None)?;
    let start = Instant::now();
    let fresh = InProcessZone::start("fresh", global.kds_addr.expect("kds"), &token, vec![])?;
    wait_until("fresh zone full sync", Duration::from_secs(60), || {
        (fresh.store.count(api::ResourceType::TrafficPermission) >= total).then_some(())
    })?;
    let fresh_inproc = start.elapsed();
    drop(fresh);
    let start = Instant::now();
    let fresh_proc = ControlPlane::zone("fresh-process", &global)?;
    let fc = fresh_proc.client();
    wait_until("fresh zone-cp full sync", Duration::from_secs(60), || {
        (fc.get("/meshes/default/traffic-permissions?size=1").body["total"].as_u64()
            >= Some(total as u64))
        .then_some(())
    })?;
    let fresh_process = start.elapsed();

    println!("\nKDS propagation: PUT on the global until readable in every zone ({changes} changes each)\n");
    println!("| figure | value | target | verdict |");
    println!("|---|---|---|---|");
    println!(
        "| 2 zone-cp processes, p50 | {:.2} ms | < 10 ms | {} |",
        two.p50,
        verdict(two.p50, 10.0)
    );
    println!(
        "| 2 zone-cp processes, p99 | {:.2} ms | < 50 ms | {} |",
        two.p99,
        verdict(two.p99, 50.0)
    );
    println!("| {zones} in-process zones, p50 | {:.2} ms | | |", many.p50);
    println!(
        "| {zones} in-process zones, p99 | {:.2} ms | no stall | {} |",
        many.p99,
        verdict(many.max, 1000.0)
    );
    println!("| {zones} in-process zones, max | {:.2} ms | | |", many.max);
    println!(
        "| global RSS with {zones} zones connected, per zone | {per_zone_kib:.0} KiB ({:.0} -> {:.0} MiB) | < 2 MB | {} |",
        rss_no_zones as f64 / 1024.0,
        rss_zones as f64 / 1024.0,
        verdict(per_zone_kib, 2048.0)
    );
    println!(
        "| fresh in-process zone, {policies} policies | {:.0} ms | < 2000 ms | {} |",
        ms(fresh_inproc),
        verdict(ms(fresh_inproc), 2000.0)
    );
    println!(
        "| fresh zone-cp process, {policies} policies (incl. start) | {:.0} ms | < 2000 ms | {} |",
        ms(fresh_process),
        verdict(ms(fresh_process), 2000.0)
    );

    Ok(json!({
        "scenario": "kds",
        "changes": changes,
        "two_zones_ms": { "p50": two.p50, "p99": two.p99, "max": two.max },
        "many_zones": zones,
        "many_zones_ms": { "p50": many.p50, "p99": many.p99, "max": many.max },
        "policies": policies,
        "fresh_inprocess_ms": ms(fresh_inproc),
        "fresh_process_ms": ms(fresh_process),
        "global_rss_per_zone_kib": per_zone_kib,
    }))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn tp_yaml(name: &str, source: &str, destination: &str) -> String {
    format!(
        "type: TrafficPermission\nmesh: {MESH}\nname: {name}\nsources:\n  - match:\n      kuma.io/service: '{source}'\ndestinations:\n  - match:\n      kuma.io/service: '{destination}'\n"
    )
}

/// Registers `n` Dataplanes (service `svc-<i % services>`, outbounds to the
/// next two services) through the zone's API with `threads` clients.
fn register_dataplanes(
    zone: &ApiClient,
    n: usize,
    services: usize,
    threads: usize,
) -> anyhow::Result<()> {
    let next = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..threads.max(1))
        .map(|_| {
            let (zone, next, failed) = (zone.clone(), next.clone(), failed.clone());
            std::thread::spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return;
                }
                let svc = |k: usize| format!("svc-{}", k % services);
                let dp = json!({
                    "type": "Dataplane", "mesh": MESH, "name": format!("dp-{i}"),
                    "networking": {
                        "address": "127.0.0.1",
                        "inbound": [{"port": 20_000 + i, "servicePort": 8080,
                                     "tags": {"kuma.io/service": svc(i)}}],
                        "outbound": [
                            {"port": 10001, "tags": {"kuma.io/service": svc(i + 1)}},
                            {"port": 10002, "tags": {"kuma.io/service": svc(i + 2)}},
                        ],
                    },
                });
                let st = zone
                    .put_json(&format!("/meshes/{MESH}/dataplanes/dp-{i}"), &dp)
                    .status;
                if st != 201 && st != 200 {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
    let failed = failed.load(Ordering::Relaxed);
    anyhow::ensure!(failed == 0, "{failed} dataplanes could not be registered");
    Ok(())
}

fn xds_bench(
    n: usize,
    services: usize,
    changes: usize,
    connections: usize,
) -> anyhow::Result<serde_json::Value> {
    use integration_tests::xds_load::{cpu_time, rss_kib};
    let rt = tokio::runtime::Runtime::new()?;
    let global = mtls_global()?;
    let g = global.client();
    let mut rss_before = 0;
    let mut zone_pid = 0;
    let mut connecting = Instant::now();
    let zf = zone_fleet(&rt, &global, "zone-1", n, services, connections, |zone| {
        eprintln!("[{n}] registered {n} dataplanes; connecting simulated proxies...");
        std::thread::sleep(Duration::from_secs(2));
        zone_pid = zone.pid().expect("zone running");
        rss_before = rss_kib(zone_pid).unwrap_or(0);
        connecting = Instant::now();
    })?;
    let connect_time = connecting.elapsed();
    let (zone, fleet) = (&zf._zone, &zf.fleet);
    eprintln!(
        "[{n}] all configured after {:.1} s",
        connect_time.as_secs_f64()
    );
    std::thread::sleep(Duration::from_secs(3));
    let rss_after = rss_kib(zone_pid).unwrap_or(0);
    let per_dp_kib = rss_after.saturating_sub(rss_before) as f64 / n as f64;

    // Mesh-wide: the default permission every proxy uses changes.
    let m0 = metric_sums(zone);
    let cpu0 = cpu_time(zone_pid).unwrap_or_default();
    let all: Vec<usize> = (0..n).collect();
    let t0 = fleet.now_ns();
    anyhow::ensure!(
        g.put_yaml(
            &format!("/meshes/{MESH}/traffic-permissions/allow-all-default"),
            &tp_yaml("allow-all-default", "any-caller", "*")
        )
        .status
            == 200
    );
    let mesh_wide = rt.block_on(fleet.wait_lds_after(&all, t0, Duration::from_secs(120)))?;
    let mesh_wide_cpu = cpu_time(zone_pid).unwrap_or_default().saturating_sub(cpu0);
    let m1 = metric_sums(zone);
    let delta = |k: &str| m1.get(k).copied().unwrap_or(0.0) - m0.get(k).copied().unwrap_or(0.0);
    let regen_ms = delta("xds_regeneration_duration_seconds_sum") * 1000.0;
    let generated = delta("xds_proxy_generation_duration_seconds_count");
    let per_proxy_us =
        delta("xds_proxy_generation_duration_seconds_sum") * 1e6 / generated.max(1.0);
    eprintln!(
        "[{n}] mesh-wide change ACKed by all in {:.0} ms",
        ms(mesh_wide)
    );

    // Let the burst settle (insights of every proxy are written and synced
    // up a second after their ACKs) before timing single changes.
    std::thread::sleep(Duration::from_secs(5));

    // Targeted: one service's own permission changes; its proxies ACK.
    let mut samples = Vec::with_capacity(changes);
    for k in 0..changes {
        let s = k % services;
        let affected: Vec<usize> = (s..n).step_by(services).collect();
        let t0 = fleet.now_ns();
        let name = format!("tp-svc-{s}");
        let st = g
            .put_yaml(
                &format!("/meshes/{MESH}/traffic-permissions/{name}"),
                &tp_yaml(&name, &format!("caller-{k}"), &format!("svc-{s}")),
            )
            .status;
        anyhow::ensure!(st == 201 || st == 200, "PUT {name} answered {st}");
        samples.push(rt.block_on(fleet.wait_lds_after(&affected, t0, Duration::from_secs(30)))?);
    }
    let targeted = percentiles(samples);
    let per_service = n / services.max(1);

    println!("\nxDS at scale: {n} simulated proxies in one zone, {services} services ({per_service} proxies each), {connections} connections\n");
    println!("| figure | value | target | verdict |");
    println!("|---|---|---|---|");
    println!(
        "| all {n} proxies connected and configured | {:.1} s | | |",
        connect_time.as_secs_f64()
    );
    println!(
        "| zone CP RSS before / after connecting | {:.0} / {:.0} MiB | | |",
        rss_before as f64 / 1024.0,
        rss_after as f64 / 1024.0
    );
    println!("| zone CP memory per connected dataplane | {per_dp_kib:.1} KiB | < 100 KB at 10,000 | {} |", verdict(per_dp_kib, 97.6));
    println!(
        "| change-to-ACK p50 ({per_service} proxies, {changes} changes) | {:.1} ms | | |",
        targeted.p50
    );
    // The target is stated for 1,000 dataplanes.
    let (target, judged) = if n <= 1000 {
        ("< 100 ms at 1,000", verdict(targeted.p99, 100.0))
    } else {
        ("(target is for 1,000)", "")
    };
    println!(
        "| change-to-ACK p99 | {:.1} ms | {target} | {judged} |",
        targeted.p99
    );
    println!(
        "| mesh-wide change, all {n} ACKed | {:.0} ms | < 2 s at 10,000 | {} |",
        ms(mesh_wide),
        verdict(ms(mesh_wide), 2000.0)
    );
    println!(
        "| zone CP CPU for the mesh-wide change | {:.2} s | | |",
        mesh_wide_cpu.as_secs_f64()
    );
    println!("| of which regeneration passes (wall) | {regen_ms:.0} ms for {generated:.0} proxies, {per_proxy_us:.0} µs each | | |");
    drop(zf);
    Ok(json!({
        "scenario": "xds",
        "dataplanes": n,
        "services": services,
        "connections": connections,
        "connect_s": connect_time.as_secs_f64(),
        "rss_before_kib": rss_before,
        "rss_after_kib": rss_after,
        "per_dataplane_kib": per_dp_kib,
        "change_to_ack_ms": { "p50": targeted.p50, "p99": targeted.p99, "max": targeted.max, "proxies_per_change": per_service },
        "mesh_wide_ms": ms(mesh_wide),
        "mesh_wide_cpu_s": mesh_wide_cpu.as_secs_f64(),
        "mesh_wide_regeneration_ms": regen_ms,
        "proxy_generation_us": per_proxy_us,
    }))
}

/// `name value` lines of a control plane's /metrics, summed by name.
fn metric_sums(cp: &ControlPlane) -> std::collections::HashMap<String, f64> {
    let text = reqwest::blocking::get(format!("http://{}/metrics", cp.diagnostics_addr))
        .and_then(|r| r.text())
        .unwrap_or_default();
    let mut out = std::collections::HashMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let mut parts = line.split_whitespace();
        if let (Some(name), Some(v)) = (parts.next(), parts.next()) {
            if let Ok(v) = v.parse::<f64>() {
                let name = name.split('{').next().unwrap_or(name).to_owned();
                *out.entry(name).or_insert(0.0) += v;
            }
        }
    }
    out
}

/// The physical floor of a latency on this machine: an empty unary gRPC
/// call (the standard health check) over plain HTTP/2 on loopback.
fn baseline(samples: usize) -> anyhow::Result<Percentiles> {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let (_reporter, service) = tonic_health::server::health_reporter();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
            .connect()
            .await?;
        let mut client = HealthClient::new(channel);
        let mut out = Vec::with_capacity(samples);
        for i in 0..samples + 100 {
            let start = Instant::now();
            client
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await?;
            if i >= 100 {
                out.push(start.elapsed());
            }
        }
        Ok(percentiles(out))
    })
}

/// A zone with its fleet of simulated proxies.
struct ZoneFleet {
    // Declared first so it is dropped first: the proxies leave before the
    // zone stops.
    fleet: integration_tests::xds_load::Fleet,
    _zone: ControlPlane,
}

/// Starts zone `name`, registers `n` dataplanes over `services` and connects
/// a simulated proxy for each.
fn zone_fleet(
    rt: &tokio::runtime::Runtime,
    global: &ControlPlane,
    name: &str,
    n: usize,
    services: usize,
    connections: usize,
    before_connect: impl FnOnce(&ControlPlane),
) -> anyhow::Result<ZoneFleet> {
    use integration_tests::xds_load::{Fleet, Target};
    let zone = ControlPlane::zone(name, global)?;
    let z = zone.client();
    wait_until(
        "mesh and token key on the zone",
        PROPAGATION_DEADLINE * 10,
        || {
            (z.get("/meshes/default").status == 200
                && z.get("/dataplane-token-keys").body["total"].as_u64() >= Some(1))
            .then_some(())
        },
    )?;
    register_dataplanes(&z, n, services, 4)?;
    let tokens: Vec<String> = (0..services)
        .map(|s| global.dataplane_token(MESH, &format!("svc-{s}")))
        .collect::<anyhow::Result<_>>()?;
    let proxies: Vec<(String, String)> = (0..n)
        .map(|i| (format!("{MESH}.dp-{i}"), tokens[i % services].clone()))
        .collect();
    before_connect(&zone);
    let target = Target {
        addr: zone.dp_addr.expect("dp server"),
        ca_pem: std::fs::read_to_string(zone.data_dir.join("dp-server-ca.pem"))?,
    };
    let fleet = rt.block_on(Fleet::connect(&target, &proxies, connections))?;
    rt.block_on(fleet.wait_ready(Duration::from_secs(600)))?;
    Ok(ZoneFleet { _zone: zone, fleet })
}

fn mtls_global() -> anyhow::Result<ControlPlane> {
    let global = ControlPlane::start()?;
    let g = global.client();
    let mesh = "type: Mesh\nname: default\nmtls:\n  enabledBackend: ca-1\n  backends:\n    - name: ca-1\n      type: builtin\n";
    anyhow::ensure!(g.put_yaml("/meshes/default", mesh).status == 201);
    anyhow::ensure!(
        g.put_yaml(
            &format!("/meshes/{MESH}/traffic-permissions/allow-all-default"),
            &tp_yaml("allow-all-default", "*", "*")
        )
        .status
            == 201
    );
    Ok(global)
}

/// Scenario 1: one permission changed on the global at a time, timed until
/// every affected proxy in every zone ACKed its new listeners.
fn propagation(
    zones: usize,
    n: usize,
    services: usize,
    changes: usize,
    base: &Percentiles,
    judge: bool,
) -> anyhow::Result<serde_json::Value> {
    let rt = tokio::runtime::Runtime::new()?;
    let global = mtls_global()?;
    let g = global.client();
    eprintln!("[propagation] {zones} zones x {n} simulated proxies...");
    let fleets: Vec<ZoneFleet> = (0..zones)
        .map(|i| zone_fleet(&rt, &global, &format!("zone-{i}"), n, services, 20, |_| {}))
        .collect::<anyhow::Result<_>>()?;
    std::thread::sleep(Duration::from_secs(3));
    let mut samples = Vec::with_capacity(changes);
    for k in 0..changes {
        let s = k % services;
        let affected: Vec<usize> = (s..n).step_by(services).collect();
        let t0: Vec<u64> = fleets.iter().map(|f| f.fleet.now_ns()).collect();
        let start = Instant::now();
        let name = format!("tp-svc-{s}");
        let st = g
            .put_yaml(
                &format!("/meshes/{MESH}/traffic-permissions/{name}"),
                &tp_yaml(&name, &format!("caller-{k}"), &format!("svc-{s}")),
            )
            .status;
        anyhow::ensure!(st == 201 || st == 200, "PUT {name} answered {st}");
        for (f, t) in fleets.iter().zip(&t0) {
            rt.block_on(
                f.fleet
                    .wait_lds_after(&affected, *t, Duration::from_secs(30)),
            )?;
        }
        samples.push(start.elapsed());
    }
    let p = percentiles(samples);
    let per_change = zones * n.div_ceil(services);
    println!("\nScenario 1, policy propagation: {zones} zones x {n} proxies, {changes} changes, {per_change} proxies affected per change\n");
    latency_header();
    latency_rows("change-to-ACK", &p, base, 100.0, judge);
    drop(fleets);
    Ok(json!({
        "scenario": "propagation", "zones": zones, "dataplanes_per_zone": n,
        "changes": changes, "proxies_per_change": per_change,
        "p50_ms": p.p50, "p99_ms": p.p99, "max_ms": p.max,
        "baseline_p50_ms": base.p50, "baseline_p99_ms": base.p99,
    }))
}

/// The whole suite; `ci` shrinks every size and judges nothing.
fn all(ci: bool) -> anyhow::Result<serde_json::Value> {
    let base = baseline(if ci { 200 } else { 2000 })?;
    println!(
        "\nBaseline: empty gRPC call on loopback, p50 {:.3} ms, p99 {:.3} ms",
        base.p50, base.p99
    );
    let (dp, zones_n, policies, changes, services) = if ci {
        (100, 5, 200, 20, 10)
    } else {
        (1000, 256, 10_000, 200, 100)
    };
    let propagation = propagation(2, dp, services, changes, &base, !ci)?;
    let churn = churn(dp, services, if ci { 3 } else { 10 }, &base, !ci)?;
    let envoy = real_envoy(if ci { 4 } else { 20 }, if ci { 4 } else { 20 }, &base, !ci)?;
    let mut xds = Vec::new();
    for n in if ci { vec![dp] } else { vec![dp, 10 * dp] } {
        xds.push(xds_bench(
            n,
            services,
            changes.min(100),
            if ci { 10 } else { 100 },
        )?);
    }
    let kds = kds_bench(changes, zones_n, policies)?;
    Ok(json!({
        "baseline_ms": { "p50": base.p50, "p99": base.p99 },
        "propagation": propagation,
        "xds": xds,
        "kds": kds,
        "churn": churn,
        "real_envoy": envoy,
        "ci": ci,
    }))
}

/// Scenario 3: proxies come and go at 100/s (registered and removed on the
/// zone, which changes their callers' endpoints) while a permission
/// changes on the global 10 times a second. Reports change-to-ACK and
/// checks that every proxy ends on the config the zone would generate now.
fn churn(
    n: usize,
    services: usize,
    seconds: u64,
    base: &Percentiles,
    judge: bool,
) -> anyhow::Result<serde_json::Value> {
    let rt = tokio::runtime::Runtime::new()?;
    let global = mtls_global()?;
    let g = global.client();
    eprintln!(
        "[churn] {n} simulated proxies, churn 100/s and policy changes 10/s for {seconds} s..."
    );
    let zf = zone_fleet(&rt, &global, "zone-0", n, services, 20, |_| {})?;
    let z = zf._zone.client();
    std::thread::sleep(Duration::from_secs(2));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let churned = Arc::new(AtomicUsize::new(0));
    let churner = {
        let (z, stop, churned) = (z.clone(), stop.clone(), churned.clone());
        std::thread::spawn(move || {
            let mut i = 0usize;
            let tick = Duration::from_millis(10);
            let mut next = Instant::now();
            // Bounded: stops when told, at most 100 per second.
            while !stop.load(Ordering::Relaxed) && i < 100_000 {
                let name = format!("churn-{i}");
                let svc = format!("svc-{}", i % services);
                let dp = json!({
                    "type": "Dataplane", "mesh": MESH, "name": name,
                    "networking": {"address": "127.0.0.1", "inbound": [
                        {"port": 40_000 + (i % 20_000), "tags": {"kuma.io/service": svc}}]},
                });
                z.put_json(&format!("/meshes/{MESH}/dataplanes/{name}"), &dp);
                if i >= 50 {
                    z.delete(&format!("/meshes/{MESH}/dataplanes/churn-{}", i - 50));
                }
                churned.fetch_add(1, Ordering::Relaxed);
                i += 1;
                next += tick;
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
        })
    };
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut k = 0usize;
    while started.elapsed() < Duration::from_secs(seconds) {
        let tick = Instant::now();
        let s = k % services;
        let affected: Vec<usize> = (s..n).step_by(services).collect();
        let t0 = zf.fleet.now_ns();
        let name = format!("tp-svc-{s}");
        let st = g
            .put_yaml(
                &format!("/meshes/{MESH}/traffic-permissions/{name}"),
                &tp_yaml(&name, &format!("churn-caller-{k}"), &format!("svc-{s}")),
            )
            .status;
        anyhow::ensure!(st == 201 || st == 200, "PUT {name} answered {st}");
        samples.push(
            rt.block_on(
                zf.fleet
                    .wait_lds_after(&affected, t0, Duration::from_secs(30)),
            )?,
        );
        k += 1;
        std::thread::sleep(Duration::from_millis(100).saturating_sub(tick.elapsed()));
    }
    stop.store(true, Ordering::Relaxed);
    let _ = churner.join();
    let rate = churned.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    // Every proxy must end on what the zone generates now: checked until
    // none is stale, within a deadline.
    let count_stale = || {
        (0..n)
            .filter(|&i| {
                let cfg = z.get(&format!("/meshes/{MESH}/dataplanes/dp-{i}/_config"));
                let want = cfg.body["types"]
                    ["type.googleapis.com/envoy.config.listener.v3.Listener"]["version"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                let have = zf.fleet.clients[i]
                    .lds_version
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
                want != have
            })
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut stale = count_stale();
    while stale > 0 && Instant::now() < deadline {
        stale = count_stale();
    }
    let p = percentiles(samples);
    println!("\nScenario 3, churn: {n} proxies; dataplanes registered and removed at {rate:.0}/s while a permission changes 10 times a second ({k} changes)\n");
    latency_header();
    latency_rows("change-to-ACK", &p, base, 250.0, judge);
    println!(
        "| proxies not on the final config | {stale} of {n} | | | 0 | {} |",
        if stale == 0 { "pass" } else { "FAIL" }
    );
    anyhow::ensure!(stale == 0, "{stale} proxies missed an update");
    Ok(json!({
        "scenario": "churn", "dataplanes": n, "churn_per_s": rate, "changes": k,
        "p50_ms": p.p50, "p99_ms": p.p99, "max_ms": p.max, "stale": stale,
    }))
}

/// Scenario 6: real Envoy sidecars (half callers, half backends); time
/// from a permission change on the global to the first request through a
/// caller's sidecar that shows the new behaviour (denied after a delete,
/// allowed after a re-create).
fn real_envoy(
    sidecars: usize,
    rounds: usize,
    base: &Percentiles,
    judge: bool,
) -> anyhow::Result<serde_json::Value> {
    use integration_tests::envoy::{dataplane_yaml, http_get, Sidecar, Workload};
    let global = mtls_global()?;
    let g = global.client();
    // Only web may call backend: no default allow-all.
    anyhow::ensure!(
        g.delete(&format!(
            "/meshes/{MESH}/traffic-permissions/allow-all-default"
        ))
        .status
            == 200
    );
    let allow = || {
        g.put_yaml(
            &format!("/meshes/{MESH}/traffic-permissions/web-to-backend"),
            &tp_yaml("web-to-backend", "web", "backend"),
        )
        .status
    };
    anyhow::ensure!(allow() == 201);
    let zone = ControlPlane::zone("zone-0", &global)?;
    wait_until(
        "mesh and token key on the zone",
        PROPAGATION_DEADLINE * 10,
        || {
            let z = zone.client();
            (z.get("/meshes/default").status == 200
                && z.get("/dataplane-token-keys").body["total"].as_u64() >= Some(1))
            .then_some(())
        },
    )?;
    eprintln!("[envoy] starting {sidecars} real Envoy sidecars...");
    let half = (sidecars / 2).max(1);
    let mut keep = Vec::new();
    let mut outs = Vec::new();
    let backend_token = global.dataplane_token(MESH, "backend")?;
    let web_token = global.dataplane_token(MESH, "web")?;
    for i in 0..half {
        let app = Workload::start("backend");
        let dp = dataplane_yaml(
            MESH,
            &format!("backend-{i}"),
            "backend",
            integration_tests::free_addr().port(),
            app.addr.port(),
            &[],
        );
        keep.push((Sidecar::start(&zone, &dp, &backend_token)?, app));
    }
    for i in 0..half {
        let app = Workload::start("web");
        let out = integration_tests::free_addr();
        let dp = dataplane_yaml(
            MESH,
            &format!("web-{i}"),
            "web",
            integration_tests::free_addr().port(),
            app.addr.port(),
            &[(out.port(), "backend")],
        );
        keep.push((Sidecar::start(&zone, &dp, &web_token)?, app));
        outs.push(out);
    }
    for (s, _) in &keep {
        s.wait_live()?;
    }
    let ok = |i: usize| http_get(outs[i % outs.len()]).is_some_and(|b| b == "hello from backend");
    wait_until("every web reaches backend", Duration::from_secs(60), || {
        (0..outs.len()).all(ok).then_some(())
    })?;
    let mut deny = Vec::new();
    let mut admit = Vec::new();
    for r in 0..rounds {
        let start = Instant::now();
        anyhow::ensure!(
            g.delete(&format!(
                "/meshes/{MESH}/traffic-permissions/web-to-backend"
            ))
            .status
                == 200
        );
        let mut i = r;
        while ok(i) {
            i += 1;
            anyhow::ensure!(
                start.elapsed() < Duration::from_secs(10),
                "the delete never took effect"
            );
        }
        deny.push(start.elapsed());
        let start = Instant::now();
        anyhow::ensure!(allow() == 201);
        while !ok(i) {
            i += 1;
            anyhow::ensure!(
                start.elapsed() < Duration::from_secs(10),
                "the re-create never took effect"
            );
        }
        admit.push(start.elapsed());
    }
    let (d, a) = (percentiles(deny), percentiles(admit));
    println!("\nScenario 6, real Envoy: {} sidecars ({half} web, {half} backend), {rounds} rounds; permission change on the global until a request through a web sidecar shows it\n", 2 * half);
    latency_header();
    latency_rows("delete -> first denied,", &d, base, 250.0, judge);
    latency_rows("create -> first allowed,", &a, base, 250.0, judge);
    drop(keep);
    Ok(json!({
        "scenario": "real_envoy", "sidecars": 2 * half, "rounds": rounds,
        "deny_ms": {"p50": d.p50, "p99": d.p99, "max": d.max},
        "allow_ms": {"p50": a.p50, "p99": a.p99, "max": a.max},
    }))
}

/// Two table rows, p50 and p99, each beside the baseline; the p99 judged
/// against `target_ms` when `judge`.
fn latency_rows(what: &str, p: &Percentiles, base: &Percentiles, target_ms: f64, judge: bool) {
    println!(
        "| {what} p50 | {:.1} ms | {:.3} ms | {:.0}x | | |",
        p.p50,
        base.p50,
        p.p50 / base.p50
    );
    println!(
        "| {what} p99 | {:.1} ms | {:.3} ms | {:.0}x | < {target_ms} ms | {} |",
        p.p99,
        base.p99,
        p.p99 / base.p99,
        if judge {
            verdict(p.p99, target_ms)
        } else {
            "not judged"
        }
    );
}

fn latency_header() {
    println!("| figure | value | baseline (empty gRPC call) | ratio | target | verdict |");
    println!("|---|---|---|---|---|---|");
}
