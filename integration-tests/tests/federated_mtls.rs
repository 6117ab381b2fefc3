//! End-to-end with real Envoy in a federated zone: the mesh root CA lives
//! on the global, the zone gets its intermediate over KDS and issues
//! workload certificates from it; dataplane tokens come from the global;
//! insights flow up; meshes do not trust each other; a 1-minute
//! certificate is rotated under traffic; a config Envoy rejects leaves it
//! on its last good one and is reported.

use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use integration_tests::envoy::{dataplane_yaml, http_get, Sidecar, Workload};
use integration_tests::tls_probe::server_chain;
use integration_tests::{free_addr, traffic_permission, wait_until, ControlPlane};

const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";

fn mesh_yaml(name: &str, extra: &str) -> String {
    format!("type: Mesh\nname: {name}\nmtls:\n  enabledBackend: ca-1\n  backends:\n    - name: ca-1\n      type: builtin\n{extra}")
}

fn squash(pem: &str) -> String {
    pem.chars().filter(|c| !c.is_whitespace()).collect()
}

/// A global, one zone `east`, and the given meshes created on the global
/// and synced to the zone along with the global's token key.
fn federation(meshes: &[(&str, String)]) -> (ControlPlane, ControlPlane) {
    let global = ControlPlane::start().unwrap();
    for (name, yaml) in meshes {
        let r = global.client().put_yaml(&format!("/meshes/{name}"), yaml);
        assert_eq!(r.status, 201, "{:?}", r.body);
    }
    let zone = ControlPlane::zone("east", &global).unwrap();
    wait_until(
        "meshes and the token key on the zone",
        Duration::from_secs(10),
        || {
            let c = zone.client();
            let meshes_there = meshes
                .iter()
                .all(|(m, _)| c.get(&format!("/meshes/{m}")).status == 200);
            let keys = c.get("/dataplane-token-keys").body["total"]
                .as_u64()
                .unwrap_or(0);
            (meshes_there && keys >= 1).then_some(())
        },
    )
    .unwrap();
    (global, zone)
}

fn allow(global: &ControlPlane, mesh: &str, name: &str, source: &str, destination: &str) {
    let mut tp = traffic_permission(mesh, name, source, destination);
    tp["mesh"] = mesh.into();
    let r = global
        .client()
        .put_json(&format!("/meshes/{mesh}/traffic-permissions/{name}"), &tp);
    assert!(r.status == 201 || r.status == 200, "{:?}", r.body);
}

struct Service {
    sidecar: Sidecar,
    _app: Workload,
    inbound: SocketAddr,
}

/// A workload behind a sidecar in `zone`, its token issued by `issuer`.
fn service(
    zone: &ControlPlane,
    issuer: &ControlPlane,
    mesh: &str,
    name: &str,
    service: &str,
    outbounds: &[(u16, &str)],
) -> Service {
    let app = Workload::start(service);
    let inbound = free_addr();
    let dp = dataplane_yaml(
        mesh,
        name,
        service,
        inbound.port(),
        app.addr.port(),
        outbounds,
    );
    let token = issuer.dataplane_token(mesh, service).unwrap();
    let sidecar = Sidecar::start(zone, &dp, &token).unwrap();
    sidecar.wait_live().unwrap();
    Service {
        sidecar,
        _app: app,
        inbound,
    }
}

fn reaches(outbound: SocketAddr) -> bool {
    http_get(outbound).is_some_and(|b| b == "hello from backend")
}

#[test]
fn the_root_stays_on_the_global_meshes_are_isolated_and_insights_reach_the_global() {
    let (global, zone) = federation(&[
        ("default", mesh_yaml("default", "")),
        ("other", mesh_yaml("other", "")),
    ]);
    allow(&global, "default", "web-to-backend", "web", "backend");
    allow(&global, "other", "everyone", "*", "*");
    let backend = service(&zone, &global, "default", "backend-1", "backend", &[]);
    let web_out = free_addr();
    let web = service(
        &zone,
        &global,
        "default",
        "web-1",
        "web",
        &[(web_out.port(), "backend")],
    );
    wait_until("web reaches backend", Duration::from_secs(20), || {
        reaches(web_out).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}\n{}", web.sidecar.log(), zone.log()));

    // The backend presents leaf + the zone's intermediate, which the global
    // signed with the mesh root; the zone holds the root certificate only.
    let chain = server_chain(backend.inbound).unwrap();
    assert_eq!(chain.len(), 2, "leaf and intermediate: {chain:?}");
    let sans = certs::cert_uri_sans(&chain[0]).unwrap();
    assert!(
        sans.contains(&"spiffe://default/backend".to_owned()),
        "{sans:?}"
    );
    assert!(
        sans.contains(&"kuma://kuma.io/zone/east".to_owned()),
        "{sans:?}"
    );
    let on_global = global
        .client()
        .get("/meshes/default/zone-intermediates/east");
    assert_eq!(on_global.status, 200, "{:?}", on_global.body);
    let on_zone = zone.client().get("/meshes/default/zone-intermediates/east");
    assert_eq!(
        squash(on_zone.body["certificate"].as_str().unwrap()),
        squash(&chain[1]),
        "the intermediate in the chain is the one the global signed"
    );
    assert_eq!(on_global.body["certificate"], on_zone.body["certificate"]);
    let request = global
        .client()
        .get("/meshes/default/mesh-ca-requests/east.east");
    assert_eq!(request.status, 200, "the zone's CSR reached the global");
    // System resources are not writable through the API.
    let r = zone
        .client()
        .put_json("/meshes/default/zone-intermediates/east", &on_zone.body);
    assert_eq!(r.status, 405, "{:?}", r.body);

    // Switching the mesh to another backend rotates every certificate and
    // the trust bundle: a new root, a new intermediate, and traffic flows.
    let two_backends = "type: Mesh\nname: default\nmtls:\n  enabledBackend: ca-2\n  backends:\n    - name: ca-1\n      type: builtin\n    - name: ca-2\n      type: builtin\n";
    let r = global.client().put_yaml("/meshes/default", two_backends);
    assert_eq!(r.status, 200, "{:?}", r.body);
    wait_until(
        "certificates from the new backend",
        Duration::from_secs(20),
        || {
            let now = server_chain(backend.inbound).ok()?;
            (now.len() == 2 && squash(&now[1]) != squash(&chain[1])).then_some(())
        },
    )
    .unwrap();
    wait_until(
        "web reaches backend after the switch",
        Duration::from_secs(10),
        || reaches(web_out).then_some(()),
    )
    .unwrap();
    let rotated = global
        .client()
        .get("/meshes/default/zone-intermediates/east");
    assert_eq!(rotated.body["backend"], "ca-2");
    assert_ne!(
        rotated.body["rootCertificate"],
        on_global.body["rootCertificate"]
    );

    // Mesh `other` has its own CA: its sidecar, pointed at the backend's
    // inbound by a Dataplane of its own mesh, cannot get through.
    let imposter = dataplane_yaml(
        "other",
        "backend-imposter",
        "backend",
        backend.inbound.port(),
        free_addr().port(),
        &[],
    );
    assert_eq!(
        zone.client()
            .put_yaml("/meshes/other/dataplanes/backend-imposter", &imposter)
            .status,
        201
    );
    let intruder_out = free_addr();
    let intruder = service(
        &zone,
        &global,
        "other",
        "intruder-1",
        "intruder",
        &[(intruder_out.port(), "backend")],
    );
    // The intruder's Envoy has the endpoint (the path exists) ...
    wait_until(
        "the intruder's config names the endpoint",
        Duration::from_secs(10),
        || {
            let o = zone
                .client()
                .get("/meshes/other/dataplanes/intruder-1/_overview");
            o.body["dataplaneInsight"]["acked"]
                .get("type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment")
                .map(|_| ())
        },
    )
    .unwrap();
    // ... but every attempt fails the mTLS handshake, while web still works.
    for _ in 0..5 {
        assert!(
            !reaches(intruder_out),
            "another mesh must not reach backend"
        );
        assert!(reaches(web_out));
    }
    let handshake_failures = backend.sidecar.counter("ssl.fail_verify_error")
        + backend.sidecar.counter("ssl.connection_error")
        + intruder.sidecar.counter("ssl.fail_verify_error")
        + intruder.sidecar.counter("ssl.fail_verify_san");
    assert!(
        handshake_failures > 0,
        "backend stats: {:?}\nintruder stats: {:?}",
        backend.sidecar.stats(),
        intruder.sidecar.stats()
    );

    // The zone's metrics show the proxies, their ACKs and delivery times;
    // the global's show the zone and what KDS carried.
    let metrics = |cp: &ControlPlane| {
        reqwest::blocking::get(format!("http://{}/metrics", cp.diagnostics_addr))
            .unwrap()
            .text()
            .unwrap()
    };
    let zm = metrics(&zone);
    for needle in [
        "xds_connected_proxies 3",
        "xds_delivery_duration_seconds_count",
        "xds_acks_total{type_url=\"type.googleapis.com/envoy.config.listener.v3.Listener\"}",
        "xds_regeneration_duration_seconds_bucket",
        "kds_acks_sent_total{resource_type=\"TrafficPermission\"}",
        "store_operation_duration_seconds_count{operation=\"apply\"}",
    ] {
        assert!(zm.contains(needle), "zone /metrics lacks {needle}:\n{zm}");
    }
    let gm = metrics(&global);
    for needle in [
        "kds_connected_zones 1",
        "kds_sent_bytes_total{resource_type=\"ZoneIntermediate\"}",
        "kds_acks_received_total{resource_type=\"Mesh\"}",
    ] {
        assert!(gm.contains(needle), "global /metrics lacks {needle}:\n{gm}");
    }

    // Insights are synced to the global, under the zone-prefixed name.
    wait_until("insight on the global", Duration::from_secs(10), || {
        let o = global
            .client()
            .get("/meshes/default/dataplanes/east.backend-1/_overview");
        let ins = &o.body["dataplaneInsight"];
        (ins["connected"] == true
            && ins["acked"].get(LISTENER).is_some()
            && ins["certExpiry"].is_string())
        .then_some(())
    })
    .unwrap();
    let out = global.meshctl(&["inspect", "dataplanes", "--mesh", "default"], None);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        table
            .lines()
            .any(|l| l.contains("east.backend-1") && l.contains("Online") && l.contains("east")),
        "{table}"
    );
    assert!(table.contains("east.web-1"), "{table}");
}

#[test]
fn a_one_minute_certificate_is_replaced_before_it_expires_while_traffic_flows() {
    let rotation = "      dpCert:\n        rotation:\n          expiration: 1m\n";
    let (global, zone) = federation(&[("default", mesh_yaml("default", rotation))]);
    allow(&global, "default", "web-to-backend", "web", "backend");
    let backend = service(&zone, &global, "default", "backend-1", "backend", &[]);
    let web_out = free_addr();
    let _web = service(
        &zone,
        &global,
        "default",
        "web-1",
        "web",
        &[(web_out.port(), "backend")],
    );
    wait_until("web reaches backend", Duration::from_secs(20), || {
        reaches(web_out).then_some(())
    })
    .unwrap();
    let first = server_chain(backend.inbound).unwrap().remove(0);
    let first_expiry = certs::cert_not_after(&first).unwrap();
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    assert!(first_expiry <= now() + 61, "a 1-minute certificate");
    let started = Instant::now();
    let (mut ok, mut failed) = (0, 0);
    let mut replaced = None;
    // Bounded: at most 75 s, one request every 100 ms.
    while started.elapsed() < Duration::from_secs(75) {
        if reaches(web_out) {
            ok += 1;
        } else {
            failed += 1;
        }
        if ok % 20 == 0 && replaced.is_none() {
            let current = server_chain(backend.inbound).unwrap().remove(0);
            if squash(&current) != squash(&first) {
                replaced = Some(now());
                assert!(
                    certs::cert_not_after(&current).unwrap() > first_expiry,
                    "the new certificate outlives the old"
                );
            }
        }
        if replaced.is_some() && started.elapsed() > Duration::from_secs(62) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let replaced = replaced.expect("the certificate was never replaced");
    assert!(
        replaced < first_expiry,
        "replaced at {replaced}, but it expired at {first_expiry}"
    );
    assert_eq!(
        failed,
        0,
        "{failed} of {} requests failed during rotation",
        ok + failed
    );
}

#[test]
fn a_config_envoy_rejects_keeps_the_last_good_one_and_is_reported() {
    let zone = ControlPlane::standalone_zone("solo").unwrap();
    assert_eq!(
        zone.client()
            .put_yaml("/meshes/default", &mesh_yaml("default", ""))
            .status,
        201
    );
    let r = zone.client().put_json(
        "/meshes/default/traffic-permissions/web-to-backend",
        &traffic_permission("default", "web-to-backend", "web", "backend"),
    );
    assert_eq!(r.status, 201, "{:?}", r.body);
    let _backend = service(&zone, &zone, "default", "backend-1", "backend", &[]);
    let web_out = free_addr();
    let web_in = free_addr();
    let web_app = Workload::start("web");
    let good = dataplane_yaml(
        "default",
        "web-1",
        "web",
        web_in.port(),
        web_app.addr.port(),
        &[(web_out.port(), "backend")],
    );
    let web = Sidecar::start(
        &zone,
        &good,
        &zone.dataplane_token("default", "web").unwrap(),
    )
    .unwrap();
    web.wait_live().unwrap();
    wait_until("web reaches backend", Duration::from_secs(10), || {
        reaches(web_out).then_some(())
    })
    .unwrap();
    let overview = || {
        zone.client()
            .get("/meshes/default/dataplanes/web-1/_overview")
            .body["dataplaneInsight"]
            .clone()
    };
    let good_version = overview()["acked"][LISTENER].as_str().unwrap().to_owned();

    // An operator adds an outbound on a port another process holds: Envoy
    // cannot bind it and rejects the listener update.
    let squatter = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = squatter.local_addr().unwrap().port();
    let bad = dataplane_yaml(
        "default",
        "web-1",
        "web",
        web_in.port(),
        web_app.addr.port(),
        &[(web_out.port(), "backend"), (taken, "backend")],
    );
    let r = zone
        .client()
        .put_yaml("/meshes/default/dataplanes/web-1", &bad);
    assert_eq!(r.status, 200, "{:?}", r.body);
    let nack = wait_until("the NACK in the insight", Duration::from_secs(10), || {
        overview()["lastNack"].as_str().map(str::to_owned)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", web.log()));
    assert!(nack.contains("Listener"), "{nack}");
    assert!(
        nack.contains(&taken.to_string()) || nack.to_lowercase().contains("bind"),
        "{nack}"
    );
    let after = overview();
    assert!(after["nacks"].as_u64().unwrap() >= 1);
    assert_eq!(
        after["acked"][LISTENER],
        good_version.as_str(),
        "still on the last good listeners"
    );
    // Envoy kept its last good config: traffic keeps flowing.
    for _ in 0..5 {
        assert!(reaches(web_out));
    }
    assert!(zone.log().contains("NACK"), "the zone logs the rejection");
    drop(squatter);
}
