//! End-to-end with real Envoy: a standalone zone, sidecars in front of two
//! workloads, TrafficPermissions enforced as RBAC over mesh mTLS.

use std::time::{Duration, Instant};

use integration_tests::envoy::{dataplane_yaml, http_get, Sidecar, Workload};
use integration_tests::{free_addr, traffic_permission, wait_until, ControlPlane};

const MESH_MTLS: &str = "type: Mesh\nname: default\nmtls:\n  enabledBackend: ca-1\n  backends:\n    - name: ca-1\n      type: builtin\n";

struct Setup {
    zone: ControlPlane,
    web: Sidecar,
    backend: Sidecar,
    _backend_app: Workload,
    web_outbound: std::net::SocketAddr,
    backend_inbound: std::net::SocketAddr,
}

fn setup(mesh_yaml: &str) -> Setup {
    let zone = ControlPlane::standalone_zone("zone-1").unwrap();
    let api = zone.client();
    assert_eq!(api.put_yaml("/meshes/default", mesh_yaml).status, 201);
    let backend_app = Workload::start("backend");
    let backend_inbound = free_addr();
    let web_outbound = free_addr();
    let backend_dp = dataplane_yaml(
        "default",
        "backend-1",
        "backend",
        backend_inbound.port(),
        backend_app.addr.port(),
        &[],
    );
    let web_app = Workload::start("web");
    let web_dp = dataplane_yaml(
        "default",
        "web-1",
        "web",
        free_addr().port(),
        web_app.addr.port(),
        &[(web_outbound.port(), "backend")],
    );
    let backend = Sidecar::start(
        &zone,
        &backend_dp,
        &zone.dataplane_token("default", "backend").unwrap(),
    )
    .unwrap();
    let web = Sidecar::start(
        &zone,
        &web_dp,
        &zone.dataplane_token("default", "web").unwrap(),
    )
    .unwrap();
    backend.wait_live().unwrap();
    web.wait_live().unwrap();
    Setup {
        zone,
        web,
        backend,
        _backend_app: backend_app,
        web_outbound,
        backend_inbound,
    }
}

fn allow(zone: &ControlPlane, name: &str, source: &str) {
    let r = zone.client().put_json(
        &format!("/meshes/default/traffic-permissions/{name}"),
        &traffic_permission("default", name, source, "backend"),
    );
    assert!(r.status == 201 || r.status == 200, "{:?}", r.body);
}

/// The listener version Envoy last acknowledged, from the dataplane insight.
fn listener_version(zone: &ControlPlane, dataplane: &str) -> String {
    let o = zone
        .client()
        .get(&format!("/meshes/default/dataplanes/{dataplane}/_overview"));
    o.body["dataplaneInsight"]["acked"]["type.googleapis.com/envoy.config.listener.v3.Listener"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn reaches(s: &Setup) -> bool {
    http_get(s.web_outbound).is_some_and(|b| b == "hello from backend")
}

#[test]
fn traffic_permission_decides_who_reaches_backend_over_mtls() {
    let s = setup(MESH_MTLS);
    allow(&s.zone, "web-to-backend", "web");
    wait_until("web reaches backend", Duration::from_secs(10), || {
        reaches(&s).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\nweb:\n{}\nbackend:\n{}", s.web.log(), s.backend.log()));
    // The backend's Envoy terminated TLS and its RBAC allowed the caller
    // by its SPIFFE identity.
    let inbound_tls = format!(
        "listener.127.0.0.1_{}.ssl.handshake",
        s.backend_inbound.port()
    );
    assert!(
        s.backend.counter(&inbound_tls) >= 1,
        "{:?}",
        s.backend.stats()
    );
    assert!(
        s.backend.counter("rbac.allowed") >= 1,
        "{:?}",
        s.backend.stats()
    );

    // Deleting the permission denies the next request within a second.
    assert_eq!(
        s.zone
            .client()
            .delete("/meshes/default/traffic-permissions/web-to-backend")
            .status,
        200
    );
    let deleted_at = Instant::now();
    wait_until("denied after delete", Duration::from_secs(1), || {
        (!reaches(&s)).then_some(())
    })
    .unwrap();
    assert!(deleted_at.elapsed() < Duration::from_secs(1));
    assert!(s.backend.counter("rbac.denied") >= 1);

    // A permission for another source still denies web.
    let before = listener_version(&s.zone, "backend-1");
    allow(&s.zone, "api-to-backend", "api");
    wait_until(
        "backend to ACK the new RBAC",
        Duration::from_secs(5),
        || (listener_version(&s.zone, "backend-1") != before).then_some(()),
    )
    .unwrap();
    assert!(!reaches(&s), "a permission for api must not let web in");

    // Without a mesh certificate, the backend's inbound refuses outright.
    assert!(
        http_get(s.backend_inbound).is_none(),
        "plain TCP to the inbound must fail"
    );

    // Insights show the proxy connected with its acknowledged config.
    let o = s
        .zone
        .client()
        .get("/meshes/default/dataplanes/backend-1/_overview");
    assert_eq!(
        o.body["dataplaneInsight"]["connected"], true,
        "{:?}",
        o.body
    );
    assert!(
        o.body["dataplaneInsight"]["certExpiry"].is_string(),
        "{:?}",
        o.body
    );
}

#[test]
fn a_token_for_another_service_is_refused() {
    let zone = ControlPlane::standalone_zone("zone-1").unwrap();
    assert_eq!(
        zone.client().put_yaml("/meshes/default", MESH_MTLS).status,
        201
    );
    let dp = dataplane_yaml(
        "default",
        "sneaky",
        "backend",
        free_addr().port(),
        free_addr().port(),
        &[],
    );
    let token = zone.dataplane_token("default", "web").unwrap();
    let mut sidecar = Sidecar::start(&zone, &dp, &token).unwrap();
    let status = sidecar.wait_exit(Duration::from_secs(20)).unwrap();
    assert!(!status.success());
    assert!(
        sidecar.log().contains("refused the dataplane token"),
        "{}",
        sidecar.log()
    );
    assert_eq!(
        zone.client()
            .get("/meshes/default/dataplanes/sneaky")
            .status,
        404
    );
}

#[test]
fn without_mtls_traffic_flows_without_rbac_and_stopping_deregisters() {
    let mut s = setup("type: Mesh\nname: default\n");
    wait_until("web reaches backend", Duration::from_secs(10), || {
        reaches(&s).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\nweb:\n{}", s.web.log()));
    let inbound_tls = format!(
        "listener.127.0.0.1_{}.ssl.handshake",
        s.backend_inbound.port()
    );
    assert_eq!(s.backend.counter(&inbound_tls), 0);
    let status = s.backend.stop().unwrap();
    assert!(status.success(), "{}", s.backend.log());
    assert_eq!(
        s.zone
            .client()
            .get("/meshes/default/dataplanes/backend-1")
            .status,
        404
    );
}
