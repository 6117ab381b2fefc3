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
    }))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
