//! Security domains on a real network: the global and two zones each in
//! their own network namespace (addresses from 198.18.0.0/15, reserved for
//! tests), joined by a router namespace that forwards only what
//! `deployments/security-domains/nftables.conf` allows: zone → global
//! 5685 and → ingress 10000. Cross-zone traffic and sync work; a direct
//! connection from one zone to a service port in the other does not.
//!
//! Needs root (CI has it) and `ip` and `nft` (scripts/test installs
//! nftables). It fails loudly without them rather than skipping. It
//! creates and removes its namespaces and sends nothing outside them.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use integration_tests::{bin, wait_until};

const GLOBAL: &str = "198.18.0.1";
const DMZ: &str = "198.18.1.10";
const INTERNAL: &str = "198.18.2.10";

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn ip(args: &[&str]) {
    run(Command::new("ip").args(args));
}

/// The namespaces and their links; removed on drop (with the veths).
struct Network {
    names: Vec<String>,
}

impl Network {
    fn ns(&self, i: usize) -> &str {
        &self.names[i]
    }

    /// global, dmz, internal (each a /24 behind the router) and the router.
    fn create() -> Network {
        let uid = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| o.stdout)
            .unwrap_or_default();
        let root = String::from_utf8_lossy(&uid).trim() == "0";
        assert!(
            root,
            "the network-namespace test needs root (CI runs it as root)"
        );
        for tool in ["ip", "nft"] {
            let found = Command::new(tool).arg("-V").output().is_ok();
            assert!(
                found,
                "`{tool}` is missing: scripts/test installs it (apt-get install nftables iproute2)"
            );
        }
        let id = std::process::id() % 100_000;
        let names: Vec<String> = ["g", "a", "b", "r"]
            .iter()
            .map(|n| format!("msh{n}{id}"))
            .collect();
        let net = Network { names };
        for n in &net.names {
            ip(&["netns", "add", n]);
            ip(&["-n", n, "link", "set", "lo", "up"]);
        }
        let router = net.ns(3).to_owned();
        for (i, (addr, subnet)) in [(GLOBAL, 0), (DMZ, 1), (INTERNAL, 2)].iter().enumerate() {
            let (inner, outer) = (format!("v{i}i{id}"), format!("v{i}o{id}"));
            let ns = net.ns(i).to_owned();
            ip(&[
                "link", "add", &inner, "netns", &ns, "type", "veth", "peer", "name", &outer,
                "netns", &router,
            ]);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                &inner,
            ]);
            ip(&["-n", &ns, "link", "set", &inner, "up"]);
            ip(&[
                "-n",
                &router,
                "addr",
                "add",
                &format!("198.18.{subnet}.254/24"),
                "dev",
                &outer,
            ]);
            ip(&["-n", &router, "link", "set", &outer, "up"]);
            ip(&[
                "-n",
                &ns,
                "route",
                "add",
                "default",
                "via",
                &format!("198.18.{subnet}.254"),
            ]);
        }
        run(Command::new("ip").args([
            "netns",
            "exec",
            &router,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ]));
        let rules = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../deployments/security-domains/nftables.conf");
        run(Command::new("ip")
            .args(["netns", "exec", &router, "nft", "-f"])
            .arg(rules));
        net
    }

    fn exec(&self, ns: usize) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", self.ns(ns)]);
        c
    }

    /// Packets the router dropped.
    fn dropped(&self) -> u64 {
        let out =
            run(self
                .exec(3)
                .args(["nft", "list", "chain", "inet", "mesh_domains", "forward"]));
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .filter(|l| l.contains("drop") && l.contains("counter"))
            .filter_map(|l| {
                let rest = l.split("packets ").nth(1)?;
                rest.split_whitespace().next()?.parse::<u64>().ok()
            })
            .sum()
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

/// A process in a namespace, logging to a file, stopped on drop.
struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(mut cmd: Command, log: PathBuf) -> Proc {
        let file = fs::File::create(&log).unwrap();
        let child = cmd
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
        Proc { child, log }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let _ = wait_until("process to stop", Duration::from_secs(10), || {
            self.child.try_wait().ok().flatten()
        });
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn output(cmd: &mut Command) -> String {
    String::from_utf8_lossy(&run(cmd).stdout).trim().to_owned()
}

#[test]
fn only_kds_and_ingress_ports_cross_between_zones() {
    let net = Network::create();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let envoy = integration_tests::envoy::envoy_bin();
    let mut procs = Vec::new();

    // The global, in its own namespace.
    let gdata = dir.join("global");
    let mut c = net.exec(0);
    c.arg(bin("global-cp")).arg("--data-dir").arg(&gdata).args([
        "--kds-addr",
        &format!("{GLOBAL}:5685"),
        "--kds-cert-sans",
        GLOBAL,
    ]);
    procs.push(Proc::spawn(c, dir.join("global.log")));
    let meshctl = |args: &[&str], stdin: Option<&str>| -> String {
        let mut c = net.exec(0);
        c.arg(bin("meshctl"))
            .args(["--api-addr", "http://127.0.0.1:5681", "--token-file"])
            .arg(gdata.join("admin-token"))
            .args(args);
        if let Some(input) = stdin {
            let path = dir.join("stdin.yaml");
            fs::write(&path, input).unwrap();
            c.stdin(fs::File::open(path).unwrap());
        }
        output(&mut c)
    };
    wait_until("the global", Duration::from_secs(30), || {
        let mut c = net.exec(0);
        c.arg(bin("meshctl"))
            .args(["--api-addr", "http://127.0.0.1:5681", "--token-file"])
            .arg(gdata.join("admin-token"))
            .args(["get", "meshes"]);
        c.output().ok().filter(|o| o.status.success()).map(|_| ())
    })
    .unwrap_or_else(|e| panic!("{e}: {}", procs[0].log()));
    meshctl(
        &["apply", "-f", "-"],
        Some("type: Mesh\nname: default\nmtls:\n  enabledBackend: ca-1\n  backends:\n    - name: ca-1\n      type: builtin\n---\ntype: TrafficPermission\nmesh: default\nname: web-to-ledger\nsources:\n  - match:\n      kuma.io/service: web\ndestinations:\n  - match:\n      kuma.io/service: ledger\n"),
    );

    // A zone per domain, each with its ingress on <zone address>:10000.
    for (ns, zone) in [(1, "dmz"), (2, "internal")] {
        let token = dir.join(format!("{zone}.token"));
        fs::write(
            &token,
            meshctl(&["generate", "zone-token", "--zone", zone], None),
        )
        .unwrap();
        let mut c = net.exec(ns);
        c.arg(bin("zone-cp"))
            .args(["--zone", zone, "--data-dir"])
            .arg(dir.join(zone))
            .args([
                "--global-address",
                &format!("grpcs://{GLOBAL}:5685"),
                "--zone-token-file",
            ])
            .arg(&token)
            // Listening on every address: only the router keeps other
            // domains out.
            .args([
                "--api-addr",
                "0.0.0.0:5681",
                "--dp-server-addr",
                "0.0.0.0:5678",
            ]);
        procs.push(Proc::spawn(c, dir.join(format!("{zone}.log"))));
        let zone_ready = || {
            let mut c = net.exec(ns);
            c.arg(bin("demo-app"))
                .args(["get", "127.0.0.1:5680", "--path", "/ready"]);
            c.output().ok().filter(|o| o.status.success()).map(|_| ())
        };
        wait_until("the zone", Duration::from_secs(30), zone_ready)
            .unwrap_or_else(|e| panic!("{e}: {}", procs.last().unwrap().log()));
    }
    wait_until(
        "both zones online over 5685",
        Duration::from_secs(30),
        || {
            (meshctl(&["inspect", "zones"], None)
                .matches("Online")
                .count()
                == 2)
                .then_some(())
        },
    )
    .unwrap();

    let sidecar =
        |ns: usize, zone: &str, name: &str, yaml: String, token: String, extra: &[&str]| {
            let f = dir.join(format!("{name}.yaml"));
            fs::write(&f, yaml).unwrap();
            let t = dir.join(format!("{name}.token"));
            fs::write(&t, token).unwrap();
            let mut c = net.exec(ns);
            c.arg(bin("sidecar"))
                .args([
                    "run",
                    "--cp-address",
                    "https://127.0.0.1:5678",
                    "--ca-cert-file",
                ])
                .arg(dir.join(zone).join("dp-server-ca.pem"))
                .arg("--dataplane-file")
                .arg(&f)
                .arg("--dataplane-token-file")
                .arg(&t)
                .arg("--envoy-bin")
                .arg(&envoy)
                .arg("--work-dir")
                .arg(dir.join(format!("envoy-{name}")))
                .args(["--drain-seconds", "1"])
                .args(extra);
            Proc::spawn(c, dir.join(format!("sidecar-{name}.log")))
        };
    for (ns, zone, addr) in [(1, "dmz", DMZ), (2, "internal", INTERNAL)] {
        let yaml = format!("type: ZoneIngress\nname: ingress\nnetworking:\n  address: {addr}\n  port: 10000\n  advertisedAddress: {addr}\n  advertisedPort: 10000\n");
        let token = meshctl(
            &[
                "generate",
                "zone-token",
                "--zone",
                zone,
                "--scope",
                "ingress",
            ],
            None,
        );
        procs.push(sidecar(
            ns,
            zone,
            &format!("ingress-{zone}"),
            yaml,
            token,
            &["--proxy-type", "ingress", "--admin-port", "9903"],
        ));
    }
    let app = |ns: usize, name: &str| {
        let mut c = net.exec(ns);
        c.arg(bin("demo-app"))
            .args(["serve", "--listen", "127.0.0.1:8080", "--name", name]);
        Proc::spawn(c, dir.join(format!("app-{name}.log")))
    };
    procs.push(app(2, "ledger"));
    procs.push(app(1, "web"));
    let dp = |name: &str, service: &str, addr: &str, outbound: &str| {
        format!("type: Dataplane\nmesh: default\nname: {name}\nnetworking:\n  address: {addr}\n  inbound:\n    - port: 8443\n      servicePort: 8080\n      tags:\n        kuma.io/service: {service}\n{outbound}")
    };
    let token = |service: &str| {
        meshctl(
            &[
                "generate",
                "dataplane-token",
                "--mesh",
                "default",
                "--tag",
                &format!("kuma.io/service={service}"),
            ],
            None,
        )
    };
    procs.push(sidecar(
        2,
        "internal",
        "ledger-1",
        dp("ledger-1", "ledger", INTERNAL, ""),
        token("ledger"),
        &[],
    ));
    procs.push(sidecar(
        1,
        "dmz",
        "web-1",
        dp(
            "web-1",
            "web",
            DMZ,
            "  outbound:\n    - port: 10001\n      tags:\n        kuma.io/service: ledger\n",
        ),
        token("web"),
        &[],
    ));

    // web (dmz) reaches ledger (internal) through internal's ingress.
    let call = |ns: usize, target: &str, verb: &str| {
        let mut c = net.exec(ns);
        c.arg(bin("demo-app")).args([verb, target]);
        c.output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    wait_until(
        "web reaches ledger across the domain boundary",
        Duration::from_secs(60),
        || call(1, "127.0.0.1:10001", "get").filter(|b| b == "hello from ledger"),
    )
    .unwrap_or_else(|e| {
        let logs: Vec<String> = procs
            .iter()
            .map(|p| format!("{}:\n{}", p.log.display(), p.log()))
            .collect();
        panic!("{e}\n{}", logs.join("\n"))
    });

    // The ledger's inbound port and internal's zone CP API are open in
    // their own domain ...
    assert!(call(2, &format!("{INTERNAL}:8443"), "connect").is_some());
    assert!(call(2, &format!("{INTERNAL}:5681"), "connect").is_some());
    // ... but from dmz, a direct connection to it is dropped by the router,
    // and so is one to internal's zone CP API, while the ingress port works.
    let dropped_before = net.dropped();
    assert!(
        call(1, &format!("{INTERNAL}:8443"), "connect").is_none(),
        "dmz must not reach ledger's port directly"
    );
    assert!(call(1, &format!("{INTERNAL}:5681"), "connect").is_none());
    assert!(call(1, &format!("{INTERNAL}:10000"), "connect").is_some());
    assert!(
        net.dropped() > dropped_before,
        "the router's drop rule counted the attempts"
    );
    // Sync still works: a policy change on the global reaches both zones'
    // proxies (web loses access within a few seconds).
    meshctl(
        &[
            "delete",
            "traffic-permission",
            "web-to-ledger",
            "--mesh",
            "default",
        ],
        None,
    );
    wait_until(
        "the deletion to reach internal over KDS",
        Duration::from_secs(10),
        || call(1, "127.0.0.1:10001", "get").is_none().then_some(()),
    )
    .unwrap();
    drop(procs);
}
