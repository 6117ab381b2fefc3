//! Cross-zone traffic with real Envoys: `web` in zone `dmz` calls `ledger`
//! in zone `internal` through `internal`'s zone ingress (SNI passthrough,
//! never decrypted), with TrafficPermission enforced by the ledger's
//! sidecar on the caller's own identity.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use integration_tests::envoy::{dataplane_yaml, http_get, Sidecar, Workload};
use integration_tests::{free_addr, wait_until, ControlPlane};

const MESH: &str = "type: Mesh\nname: default\nmtls:\n  enabledBackend: ca-1\n  backends:\n    - name: ca-1\n      type: builtin\n";

fn permission(name: &str, source: &[(&str, &str)], destination: &str) -> String {
    let tags: String = source
        .iter()
        .map(|(k, v)| format!("        {k}: {v}\n"))
        .collect();
    format!(
        "type: TrafficPermission\nmesh: default\nname: {name}\nsources:\n  - match:\n{tags}destinations:\n  - match:\n      kuma.io/service: {destination}\n"
    )
}

fn ingress_token(global: &ControlPlane, zone: &str) -> String {
    let body = serde_json::json!({ "zone": zone, "scope": "ingress" });
    let r = global.client().request(
        reqwest::Method::POST,
        "/tokens/zone",
        Some(("application/json", &body.to_string())),
        &[],
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.body.as_str().unwrap().to_owned()
}

/// A zone with its ingress Envoy on a free loopback port.
struct Zone {
    cp: ControlPlane,
    ingress: Sidecar,
    ingress_addr: SocketAddr,
}

/// `internal`'s ingress advertises a hostname, which zones resolve.
fn zone(global: &ControlPlane, name: &str) -> Zone {
    let cp = ControlPlane::zone(name, global).unwrap();
    wait_until(
        "mesh and token key on the zone",
        Duration::from_secs(10),
        || {
            let c = cp.client();
            (c.get("/meshes/default").status == 200
                && c.get("/dataplane-token-keys").body["total"].as_u64() >= Some(1))
            .then_some(())
        },
    )
    .unwrap();
    let ingress_addr = free_addr();
    let port = ingress_addr.port();
    let advertised = if name == "internal" {
        "localhost"
    } else {
        "127.0.0.1"
    };
    let yaml = format!(
        "type: ZoneIngress\nname: ingress\nnetworking:\n  address: 127.0.0.1\n  port: {port}\n  advertisedAddress: {advertised}\n  advertisedPort: {port}\n"
    );
    let ingress = Sidecar::start_with_args(
        &cp,
        &yaml,
        &ingress_token(global, name),
        &["--proxy-type", "ingress"],
    )
    .unwrap();
    ingress.wait_live().unwrap();
    Zone {
        cp,
        ingress,
        ingress_addr,
    }
}

struct App {
    sidecar: Sidecar,
    _app: Workload,
}

fn app(
    zone: &ControlPlane,
    global: &ControlPlane,
    name: &str,
    service: &str,
    answer: &str,
    outbounds: &[(u16, &str)],
) -> App {
    app_in("default", zone, global, name, service, answer, outbounds)
}

fn app_in(
    mesh: &str,
    zone: &ControlPlane,
    global: &ControlPlane,
    name: &str,
    service: &str,
    answer: &str,
    outbounds: &[(u16, &str)],
) -> App {
    let workload = Workload::start(answer);
    let dp = dataplane_yaml(
        mesh,
        name,
        service,
        free_addr().port(),
        workload.addr.port(),
        outbounds,
    );
    let sidecar =
        Sidecar::start(zone, &dp, &global.dataplane_token(mesh, service).unwrap()).unwrap();
    sidecar.wait_live().unwrap();
    App {
        sidecar,
        _app: workload,
    }
}

fn apply(global: &ControlPlane, yaml: &str) {
    let out = global.meshctl(&["apply", "-f", "-"], Some(yaml));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn web_in_dmz_reaches_ledger_in_internal_only_through_the_ingress() {
    let mut global = ControlPlane::start().unwrap();
    assert_eq!(
        global.client().put_yaml("/meshes/default", MESH).status,
        201
    );
    apply(
        &global,
        &permission("web-to-ledger", &[("kuma.io/service", "web")], "ledger"),
    );
    let dmz = zone(&global, "dmz");
    let internal = zone(&global, "internal");
    let ledger = app(
        &internal.cp,
        &global,
        "ledger-1",
        "ledger",
        "ledger in internal",
        &[],
    );
    let web_out = free_addr();
    let web = app(
        &dmz.cp,
        &global,
        "web-1",
        "web",
        "web",
        &[(web_out.port(), "ledger")],
    );
    let call = || http_get(web_out);
    wait_until(
        "web reaches ledger across zones",
        Duration::from_secs(30),
        || {
            call()
                .filter(|b| b == "hello from ledger in internal")
                .map(|_| ())
        },
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e}\nweb:\n{}\ningress:\n{}\ndmz:\n{}",
            web.sidecar.log(),
            internal.ingress.log(),
            dmz.cp.log()
        )
    });

    // A second mesh with its own ledger in internal: each mesh's web gets
    // its own mesh's ledger through the same ingress (the SNI names the
    // mesh), never the other's.
    let other = MESH.replace("name: default", "name: other");
    assert_eq!(
        global.client().put_yaml("/meshes/other", &other).status,
        201
    );
    apply(
        &global,
        &permission("web-to-ledger", &[("kuma.io/service", "web")], "ledger")
            .replace("mesh: default", "mesh: other"),
    );
    wait_until("mesh other on both zones", Duration::from_secs(10), || {
        [&dmz, &internal]
            .iter()
            .all(|z| z.cp.client().get("/meshes/other").status == 200)
            .then_some(())
    })
    .unwrap();
    let _other_ledger = app_in(
        "other",
        &internal.cp,
        &global,
        "ledger-o",
        "ledger",
        "other ledger",
        &[],
    );
    let other_out = free_addr();
    let _other_web = app_in(
        "other",
        &dmz.cp,
        &global,
        "web-o",
        "web",
        "web",
        &[(other_out.port(), "ledger")],
    );
    wait_until(
        "mesh other's web reaches its ledger",
        Duration::from_secs(30),
        || {
            http_get(other_out)
                .filter(|b| b == "hello from other ledger")
                .map(|_| ())
        },
    )
    .unwrap();
    for _ in 0..5 {
        assert_eq!(
            http_get(other_out).as_deref(),
            Some("hello from other ledger")
        );
        assert_eq!(call().as_deref(), Some("hello from ledger in internal"));
    }

    // Nothing was refused on the way: no KDS NACK (a zone must not send
    // other zones' ingresses back up), no Envoy NACK (an ingress with
    // nothing to offer yet must not get an empty listener).
    assert!(!global.log().contains("NACKed"), "{}", global.log());
    for z in [&dmz, &internal] {
        assert!(!z.cp.log().contains("rejected config"), "{}", z.cp.log());
    }

    // It went through internal's ingress, which passed TLS through: the
    // ingress counts the connection, terminates no TLS, and the ledger's
    // sidecar authorized web's own certificate.
    let ingress_cx = format!(
        "listener.127.0.0.1_{}.downstream_cx_total",
        internal.ingress_addr.port()
    );
    assert!(
        internal.ingress.counter(&ingress_cx) >= 1,
        "{:?}",
        internal.ingress.stats()
    );
    let ingress_tls = format!(
        "listener.127.0.0.1_{}.ssl.handshake",
        internal.ingress_addr.port()
    );
    assert_eq!(
        internal.ingress.counter(&ingress_tls),
        0,
        "the ingress must not decrypt"
    );
    assert!(ledger.sidecar.counter("rbac.allowed") >= 1);
    // The dmz ingress was not on the path.
    let dmz_cx = format!(
        "listener.127.0.0.1_{}.downstream_cx_total",
        dmz.ingress_addr.port()
    );
    assert_eq!(dmz.ingress.counter(&dmz_cx), 0);

    // Only sources from zone internal: the dmz caller is denied within a
    // second of the change reaching the global.
    apply(
        &global,
        &permission(
            "only-internal",
            &[("kuma.io/service", "'*'"), ("kuma.io/zone", "internal")],
            "ledger",
        ),
    );
    let r = global
        .client()
        .delete("/meshes/default/traffic-permissions/web-to-ledger");
    assert_eq!(r.status, 200);
    let changed = Instant::now();
    wait_until("dmz denied", Duration::from_secs(1), || {
        call().is_none().then_some(())
    })
    .unwrap();
    assert!(changed.elapsed() < Duration::from_secs(1));
    // Allowing the dmz zone by tag lets it back in.
    apply(
        &global,
        &permission(
            "dmz-web",
            &[("kuma.io/zone", "dmz"), ("kuma.io/service", "web")],
            "ledger",
        ),
    );
    wait_until("dmz allowed again", Duration::from_secs(5), || {
        call().filter(|b| b.contains("ledger")).map(|_| ())
    })
    .unwrap();

    // With the global stopped, cross-zone traffic keeps flowing: one
    // request every 50 ms for 10 s, none may fail.
    global.terminate(Duration::from_secs(10)).unwrap();
    let started = Instant::now();
    let (mut ok, mut failed) = (0, 0);
    while started.elapsed() < Duration::from_secs(10) {
        match call() {
            Some(b) if b.contains("ledger") => ok += 1,
            _ => failed += 1,
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        failed,
        0,
        "{failed} of {} requests failed with the global down",
        ok + failed
    );
    assert!(ok > 50);
    global.restart().unwrap();
    wait_until("zones back online", Duration::from_secs(30), || {
        let out = global.meshctl(&["inspect", "zones"], None);
        (String::from_utf8_lossy(&out.stdout)
            .matches("Online")
            .count()
            == 2)
            .then_some(())
    })
    .unwrap();

    // A second ledger in dmz: requests spread over both zones.
    let _ledger_dmz = app(&dmz.cp, &global, "ledger-2", "ledger", "ledger in dmz", &[]);
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let spread = wait_until("answers from both zones", Duration::from_secs(15), || {
        for _ in 0..10 {
            if let Some(b) = call() {
                *seen.entry(b).or_default() += 1;
            }
        }
        (seen.len() >= 2).then_some(())
    });
    spread.unwrap_or_else(|e| panic!("{e}: {seen:?}"));

    // Disabling zone internal withdraws its endpoints everywhere: only the
    // dmz ledger answers.
    let r = global.client().put_yaml(
        "/zones/internal",
        "type: Zone\nname: internal\nenabled: false\n",
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    wait_until(
        "internal's endpoints withdrawn",
        Duration::from_secs(15),
        || {
            (0..10)
                .all(|_| call().as_deref() == Some("hello from ledger in dmz"))
                .then_some(())
        },
    )
    .unwrap();
}
