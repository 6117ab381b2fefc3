//! End-to-end with real Envoy speaking incremental (delta) ADS: a
//! standalone zone, sidecars run with `--ads-variant delta` in front of two
//! workloads, TrafficPermissions enforced as RBAC over mesh mTLS and
//! updated incrementally. One test runs the same scenario over state of the
//! world, so both variants stay covered whichever is the default.

use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use integration_tests::envoy::{dataplane_yaml, http_get, Sidecar, Workload};
use integration_tests::{free_addr, traffic_permission, wait_until, ControlPlane};

const MESH_MTLS: &str = "type: Mesh\nname: default\nmtls:\n  enabledBackend: ca-1\n  backends:\n    - name: ca-1\n      type: builtin\n";
const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";

struct Setup {
    zone: ControlPlane,
    web: Sidecar,
    backend: Sidecar,
    _apps: (Workload, Workload),
    web_outbound: SocketAddr,
    /// Last, so it is released once the processes above have stopped.
    _serial: MutexGuard<'static, ()>,
}

/// The scenarios run one at a time: each starts a zone and two Envoys on
/// ports picked by [`free_addr`], and running them side by side makes it
/// likelier that one process takes a port another was about to bind.
static SERIAL: Mutex<()> = Mutex::new(());

/// A zone with an mTLS mesh, and web and backend behind sidecars that
/// speak `variant` ("sotw" or "delta").
fn setup(variant: &str) -> Setup {
    let serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let zone = ControlPlane::standalone_zone("zone-1").unwrap();
    assert_eq!(
        zone.client().put_yaml("/meshes/default", MESH_MTLS).status,
        201
    );
    let backend_app = Workload::start("backend");
    let web_app = Workload::start("web");
    let web_outbound = free_addr();
    let backend_dp = dataplane_yaml(
        "default",
        "backend-1",
        "backend",
        free_addr().port(),
        backend_app.addr.port(),
        &[],
    );
    let web_dp = dataplane_yaml(
        "default",
        "web-1",
        "web",
        free_addr().port(),
        web_app.addr.port(),
        &[(web_outbound.port(), "backend")],
    );
    let args = ["--ads-variant", variant];
    let backend = Sidecar::start_with_args(
        &zone,
        &backend_dp,
        &zone.dataplane_token("default", "backend").unwrap(),
        &args,
    )
    .unwrap();
    let web = Sidecar::start_with_args(
        &zone,
        &web_dp,
        &zone.dataplane_token("default", "web").unwrap(),
        &args,
    )
    .unwrap();
    backend.wait_live().unwrap();
    web.wait_live().unwrap();
    Setup {
        _serial: serial,
        zone,
        web,
        backend,
        _apps: (backend_app, web_app),
        web_outbound,
    }
}

fn allow(zone: &ControlPlane, name: &str, source: &str) {
    let r = zone.client().put_json(
        &format!("/meshes/default/traffic-permissions/{name}"),
        &traffic_permission("default", name, source, "backend"),
    );
    assert!(r.status == 201 || r.status == 200, "{:?}", r.body);
}

fn forbid(zone: &ControlPlane, name: &str) {
    let r = zone
        .client()
        .delete(&format!("/meshes/default/traffic-permissions/{name}"));
    assert_eq!(r.status, 200, "{:?}", r.body);
}

/// The dataplane's insight from `_overview`.
fn insight(zone: &ControlPlane, dataplane: &str) -> serde_json::Value {
    let o = zone
        .client()
        .get(&format!("/meshes/default/dataplanes/{dataplane}/_overview"));
    assert_eq!(o.status, 200, "{:?}", o.body);
    o.body["dataplaneInsight"].clone()
}

/// The listener version Envoy last acknowledged.
fn listener_version(zone: &ControlPlane, dataplane: &str) -> String {
    insight(zone, dataplane)["acked"][LISTENER]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn reaches(s: &Setup) -> bool {
    http_get(s.web_outbound).is_some_and(|b| b == "hello from backend")
}

fn logs(s: &Setup) -> String {
    format!(
        "web:\n{}\nbackend:\n{}\nzone:\n{}",
        s.web.log(),
        s.backend.log(),
        s.zone.log()
    )
}

fn wait_reaches(s: &Setup, timeout: Duration) {
    wait_until("web reaches backend", timeout, || reaches(s).then_some(()))
        .unwrap_or_else(|e| panic!("{e}\n{}", logs(s)));
}

/// Deletes the permission and checks the next requests fail within a
/// second, then restores it; returns the listener versions Envoy
/// acknowledged before the delete, after it, and after the restore.
fn permission_round_trip(s: &Setup) -> [String; 3] {
    let before = listener_version(&s.zone, "backend-1");
    assert!(!before.is_empty(), "{}", insight(&s.zone, "backend-1"));

    forbid(&s.zone, "web-to-backend");
    let deleted_at = Instant::now();
    wait_until("denied after delete", Duration::from_secs(1), || {
        (!reaches(s)).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(s)));
    assert!(deleted_at.elapsed() < Duration::from_secs(1));
    wait_counter(&s.backend, "rbac.denied");
    let denied = wait_until(
        "backend to ACK the RBAC without web",
        Duration::from_secs(5),
        || Some(listener_version(&s.zone, "backend-1")).filter(|v| *v != before),
    )
    .unwrap();

    allow(&s.zone, "web-to-backend", "web");
    wait_reaches(s, Duration::from_secs(2));
    let restored = wait_until(
        "backend to ACK the RBAC with web again",
        Duration::from_secs(5),
        || Some(listener_version(&s.zone, "backend-1")).filter(|v| *v != denied),
    )
    .unwrap();
    // Equal config, equal version: the restore brings back the first one.
    assert_eq!(restored, before);
    [before, denied, restored]
}

/// Waits (briefly: stats lag the request) until Envoy's counter is set.
fn wait_counter(sidecar: &Sidecar, suffix: &str) {
    wait_until(suffix, Duration::from_secs(2), || {
        (sidecar.counter(suffix) >= 1).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}: {:?}", sidecar.stats()));
}

fn api_type(sidecar: &Sidecar) -> String {
    let b = wait_until("the bootstrap", Duration::from_secs(5), || {
        sidecar.bootstrap()
    })
    .unwrap();
    b["dynamic_resources"]["ads_config"]["api_type"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn delta_ads_delivers_traffic_permission_changes_incrementally() {
    let s = setup("delta");
    assert_eq!(api_type(&s.web), "DELTA_GRPC");
    assert_eq!(api_type(&s.backend), "DELTA_GRPC");
    assert!(
        s.zone.log().contains("variant=\"delta\"") || s.zone.log().contains("variant=delta"),
        "{}",
        s.zone.log()
    );

    allow(&s.zone, "web-to-backend", "web");
    wait_reaches(&s, Duration::from_secs(10));
    // The backend's Envoy terminated mTLS and its RBAC allowed the caller.
    wait_counter(&s.backend, "rbac.allowed");

    permission_round_trip(&s);

    // Both proxies are connected, acknowledged every type they use over
    // the delta stream (only web has outbounds, hence endpoints), and
    // rejected nothing.
    let all = ["Cluster", "ClusterLoadAssignment", "Secret", "Listener"];
    let no_endpoints = ["Cluster", "Secret", "Listener"];
    for (dp, types) in [("backend-1", &no_endpoints[..]), ("web-1", &all[..])] {
        let i = insight(&s.zone, dp);
        assert_eq!(i["connected"], true, "{i}");
        assert_eq!(i["nacks"], 0, "{i}");
        for ty in types {
            let found = i["acked"]
                .as_object()
                .is_some_and(|m| m.iter().any(|(k, v)| k.ends_with(ty) && v.is_string()));
            assert!(found, "{dp} acked no {ty}: {i}");
        }
    }
    // Envoy took every update over the delta subscription, none rejected.
    assert!(
        s.backend.counter("listener_manager.lds.update_success") >= 3,
        "{:?}",
        s.backend.stats()
    );
    assert_eq!(
        s.backend.counter("listener_manager.lds.update_rejected"),
        0,
        "{}",
        logs(&s)
    );
}

#[test]
fn a_restarted_zone_resumes_delta_streams_from_what_envoy_holds() {
    let mut s = setup("delta");
    allow(&s.zone, "web-to-backend", "web");
    wait_reaches(&s, Duration::from_secs(10));
    let before = listener_version(&s.zone, "backend-1");

    s.zone.kill9();
    s.zone.restart().unwrap();
    // Envoy kept its config meanwhile and reconnects on its own, reporting
    // what it holds in initial_resource_versions.
    wait_until("backend to reconnect", Duration::from_secs(30), || {
        let i = insight(&s.zone, "backend-1");
        (i["connected"] == true && i["acked"][LISTENER].is_string()).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(&s)));
    assert_eq!(listener_version(&s.zone, "backend-1"), before);
    assert!(reaches(&s), "{}", logs(&s));

    // Updates flow over the resumed stream.
    permission_round_trip(&s);
    assert_eq!(insight(&s.zone, "backend-1")["nacks"], 0);
}

#[test]
fn state_of_the_world_stays_available_as_a_variant() {
    let s = setup("sotw");
    assert_eq!(api_type(&s.web), "GRPC");
    allow(&s.zone, "web-to-backend", "web");
    wait_reaches(&s, Duration::from_secs(10));
    permission_round_trip(&s);
    assert_eq!(insight(&s.zone, "backend-1")["nacks"], 0);
}
