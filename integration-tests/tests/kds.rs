//! End-to-end tests of KDS: a real global and real zone control planes as
//! separate processes, driven through their REST APIs and meshctl.

use std::time::Duration;

use integration_tests::{traffic_permission, wait_until, ApiClient, ControlPlane};
use serde_json::Value;

const SYNC: Duration = Duration::from_secs(15);

fn mesh(api: &ApiClient, name: &str) {
    let r = api.put_yaml(
        &format!("/meshes/{name}"),
        &format!("type: Mesh\nname: {name}\n"),
    );
    assert!(r.status == 201 || r.status == 200, "{:?}", r.body);
}

fn put_tp(api: &ApiClient, name: &str, source: &str) {
    let r = api.put_json(
        &format!("/meshes/default/traffic-permissions/{name}"),
        &traffic_permission("default", name, source, "backend"),
    );
    assert!(r.status == 201 || r.status == 200, "{:?}", r.body);
}

/// Waits until `path` on `api` answers with a body for which `check` holds.
fn eventually(
    api: &ApiClient,
    path: &str,
    what: &str,
    check: impl Fn(u16, &Value) -> bool,
) -> Value {
    wait_until(what, SYNC, || {
        let r = api.get(path);
        check(r.status, &r.body).then_some(r.body)
    })
    .unwrap()
}

fn source_of(body: &Value) -> &str {
    body["sources"][0]["match"]["kuma.io/service"]
        .as_str()
        .unwrap_or("")
}

/// Names, sources and creation times of every TrafficPermission, sorted.
fn tp_state(api: &ApiClient) -> Vec<(String, String, String)> {
    let list = api.get("/meshes/default/traffic-permissions?size=1000");
    let Some(items) = list.body["items"].as_array() else {
        return Vec::new(); // the mesh has not arrived yet
    };
    let mut v: Vec<_> = items
        .iter()
        .map(|i| {
            (
                i["name"].as_str().unwrap().to_owned(),
                source_of(i).to_owned(),
                i["creationTime"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn policies_flow_to_every_zone_and_follow_updates_and_deletes() {
    let global = ControlPlane::start().unwrap();
    let g = global.client();
    mesh(&g, "default");
    let zone1 = ControlPlane::zone("zone-1", &global).unwrap();
    let zone2 = ControlPlane::zone("zone-2", &global).unwrap();

    let out = global.meshctl(
        &["apply", "-f", "-"],
        Some(
            &serde_yaml::to_string(&traffic_permission(
                "default",
                "web-to-backend",
                "web",
                "backend",
            ))
            .unwrap(),
        ),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for zone in [&zone1, &zone2] {
        let body = eventually(
            &zone.client(),
            "/meshes/default/traffic-permissions/web-to-backend",
            "policy in zone",
            |s, _| s == 200,
        );
        assert_eq!(body["labels"]["kuma.io/origin"], "global");
    }
    // The same creation time everywhere: policy ranking depends on it.
    let created = g
        .get("/meshes/default/traffic-permissions/web-to-backend")
        .body["creationTime"]
        .clone();
    assert_eq!(
        zone1
            .client()
            .get("/meshes/default/traffic-permissions/web-to-backend")
            .body["creationTime"],
        created
    );

    put_tp(&g, "web-to-backend", "api");
    for zone in [&zone1, &zone2] {
        eventually(
            &zone.client(),
            "/meshes/default/traffic-permissions/web-to-backend",
            "update in zone",
            |_, b| source_of(b) == "api",
        );
    }
    assert_eq!(
        g.delete("/meshes/default/traffic-permissions/web-to-backend")
            .status,
        200
    );
    for zone in [&zone1, &zone2] {
        eventually(
            &zone.client(),
            "/meshes/default/traffic-permissions/web-to-backend",
            "delete in zone",
            |s, _| s == 404,
        );
    }

    // Synced types are read-only on a zone.
    let z = zone1.client();
    let r = z.put_json(
        "/meshes/default/traffic-permissions/local",
        &traffic_permission("default", "local", "a", "b"),
    );
    assert_eq!(r.status, 405);
    assert!(
        r.body["detail"].as_str().unwrap().contains("global"),
        "{:?}",
        r.body
    );
    assert_eq!(
        z.put_yaml("/meshes/other", "type: Mesh\nname: other\n")
            .status,
        405
    );
    assert_eq!(z.delete("/meshes/default").status, 405);

    // The global shows both zones online.
    let overview = eventually(&g, "/zones/zone-1/_overview", "zone-1 online", |_, b| {
        b["zoneInsight"]["online"] == true
    });
    assert_eq!(
        overview["zoneInsight"]["version"],
        env!("CARGO_PKG_VERSION")
    );
    let all = g.get("/zones+insights");
    assert_eq!(all.body["total"], 2);
    let out = global.meshctl(&["inspect", "zones"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("zone-1") && table.contains("Online"),
        "{table}"
    );
}

#[test]
fn zones_publish_dataplanes_and_ingresses_up_and_deleting_a_zone_removes_them() {
    let global = ControlPlane::start().unwrap();
    let g = global.client();
    mesh(&g, "default");
    let zone1 = ControlPlane::zone("zone-1", &global).unwrap();
    let zone2 = ControlPlane::zone("zone-2", &global).unwrap();
    let z1 = zone1.client();
    eventually(&z1, "/meshes/default", "mesh in zone-1", |s, _| s == 200);

    let dp = "type: Dataplane\nmesh: default\nname: web-1\nnetworking:\n  address: 127.0.0.1\n  inbound:\n    - port: 10001\n      servicePort: 8080\n      tags:\n        kuma.io/service: web\n";
    assert_eq!(
        z1.put_yaml("/meshes/default/dataplanes/web-1", dp).status,
        201
    );
    let zi = "type: ZoneIngress\nname: ingress\nnetworking:\n  address: 127.0.0.1\n  port: 10000\n  advertisedAddress: 127.0.0.1\n  advertisedPort: 10000\n";
    assert_eq!(z1.put_yaml("/zone-ingresses/ingress", zi).status, 201);

    let synced = eventually(
        &g,
        "/meshes/default/dataplanes/zone-1.web-1",
        "dataplane on the global",
        |s, _| s == 200,
    );
    assert_eq!(synced["labels"]["kuma.io/zone"], "zone-1");
    assert_eq!(synced["labels"]["kuma.io/origin"], "zone");
    eventually(
        &g,
        "/zone-ingresses/zone-1.ingress",
        "ingress on the global",
        |s, _| s == 200,
    );
    // Other zones learn of the ingress; the zone does not get its own back.
    eventually(
        &zone2.client(),
        "/zone-ingresses/zone-1.ingress",
        "ingress in zone-2",
        |s, _| s == 200,
    );
    assert_eq!(z1.get("/zone-ingresses/zone-1.ingress").status, 404);

    // Deleting in the zone deletes on the global.
    assert_eq!(z1.delete("/meshes/default/dataplanes/web-1").status, 200);
    eventually(
        &g,
        "/meshes/default/dataplanes/zone-1.web-1",
        "dataplane gone from the global",
        |s, _| s == 404,
    );

    // Deleting the zone disconnects it and removes what it synced, everywhere.
    assert_eq!(g.delete("/zones/zone-1").status, 200);
    eventually(
        &g,
        "/zone-ingresses/zone-1.ingress",
        "ingress gone from the global",
        |s, _| s == 404,
    );
    eventually(
        &zone2.client(),
        "/zone-ingresses/zone-1.ingress",
        "ingress gone from zone-2",
        |s, _| s == 404,
    );
    wait_until("zone-1 to be refused", SYNC, || {
        zone1
            .log()
            .contains("was deleted after this token was issued")
            .then_some(())
    })
    .unwrap();
    assert_eq!(
        g.get("/zones/zone-1").status,
        404,
        "a refused zone is not re-created"
    );
}

#[test]
fn a_late_zone_gets_everything_and_a_killed_zone_converges_to_the_globals_state() {
    let global = ControlPlane::start().unwrap();
    let g = global.client();
    mesh(&g, "default");
    for i in 0..50 {
        put_tp(&g, &format!("tp-{i}"), "web");
    }
    let mut zone = ControlPlane::zone("late", &global).unwrap();
    let z = zone.client();
    wait_until("late zone to have all 50", SYNC, || {
        (tp_state(&z).len() == 50).then_some(())
    })
    .unwrap();
    assert_eq!(tp_state(&z), tp_state(&g));

    zone.kill9();
    // 100 changes while the zone is away: updates, deletions, creations.
    for i in 0..40 {
        put_tp(&g, &format!("tp-{i}"), "changed");
    }
    for i in 40..50 {
        assert_eq!(
            g.delete(&format!("/meshes/default/traffic-permissions/tp-{i}"))
                .status,
            200
        );
    }
    for i in 50..100 {
        put_tp(&g, &format!("tp-{i}"), "new");
    }
    assert_eq!(tp_state(&g).len(), 90);
    zone.restart().unwrap();
    let z = zone.client();
    wait_until("zone to converge", SYNC, || {
        (tp_state(&z) == tp_state(&g)).then_some(())
    })
    .unwrap();
}

#[test]
fn zones_keep_serving_without_the_global_and_reconnect_when_it_returns() {
    let mut global = ControlPlane::start().unwrap();
    let g = global.client();
    mesh(&g, "default");
    put_tp(&g, "before", "web");
    let zone = ControlPlane::zone("zone-1", &global).unwrap();
    let z = zone.client();
    eventually(
        &z,
        "/meshes/default/traffic-permissions/before",
        "policy in zone",
        |s, _| s == 200,
    );

    global.terminate(Duration::from_secs(10)).unwrap();
    wait_until("zone to notice", SYNC, || {
        zone.log()
            .contains("KDS connection to the global lost")
            .then_some(())
    })
    .unwrap();
    assert_eq!(
        z.get("/meshes/default/traffic-permissions/before").status,
        200,
        "zone serves its store"
    );

    global.restart().unwrap();
    let g = global.client();
    put_tp(&g, "after", "web");
    eventually(
        &z,
        "/meshes/default/traffic-permissions/after",
        "policy after reconnect",
        |s, _| s == 200,
    );
}

fn refused(zone: &str, global: &ControlPlane, token: &str, zone_says: &str) {
    let cp = ControlPlane::zone_with_token(zone, global, token).unwrap();
    wait_until(zone_says, SYNC, || {
        cp.log().contains(zone_says).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\nzone log:\n{}", cp.log()));
    assert!(
        global.log().contains("refused a zone connection"),
        "{}",
        global.log()
    );
    let overview = global.client().get(&format!("/zones/{zone}/_overview"));
    assert_ne!(
        overview.body["zoneInsight"]["online"], true,
        "{zone} must not be online"
    );
}

#[test]
fn wrong_expired_and_revoked_tokens_are_refused() {
    let global = ControlPlane::start().unwrap();
    let g = global.client();
    mesh(&g, "default");

    // A token whose signature was tampered with.
    let token = global.zone_token("zone-x", None).unwrap();
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let sig = parts.last_mut().unwrap();
    let flipped = if sig.starts_with('A') { "B" } else { "A" };
    sig.replace_range(0..1, flipped);
    refused("zone-x", &global, &parts.join("."), "zone token refused");

    // A token from another global (another security domain): it pins that
    // global's KDS CA and is signed by its key, so this global is not
    // trusted by the zone and the zone is not let in.
    let other = ControlPlane::start().unwrap();
    let foreign = other.zone_token("zone-w", None).unwrap();
    refused("zone-w", &global, &foreign, "cannot connect to the global");
    drop(other);

    // An expired token.
    let token = global.zone_token("zone-y", Some("1s")).unwrap();
    let exp = certs::read_zone_token_unverified(&token).unwrap().exp;
    wait_until("the token to expire", Duration::from_secs(5), || {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        (now > exp).then_some(())
    })
    .unwrap();
    refused("zone-y", &global, &token, "expired");

    // A revoked token: its open connection is cut and redials fail.
    let token = global.zone_token("zone-z", None).unwrap();
    let zone = ControlPlane::zone_with_token("zone-z", &global, &token).unwrap();
    eventually(
        &zone.client(),
        "/meshes/default",
        "zone-z synced",
        |s, _| s == 200,
    );
    let token_file = zone.data_dir.parent().unwrap().join("zone-token");
    let out = global.meshctl(
        &[
            "revoke",
            "zone-token",
            "--zone-token-file",
            token_file.to_str().unwrap(),
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until("revoked zone to be refused", SYNC, || {
        zone.log().contains("revoked").then_some(())
    })
    .unwrap();
    let insight = eventually(&g, "/zones/zone-z/_overview", "zone-z offline", |_, b| {
        b["zoneInsight"]["online"] == false
    });
    assert!(insight["zoneInsight"]["lastDisconnect"].is_string());
}

#[test]
fn meshctl_generates_zone_tokens_that_a_zone_can_use() {
    let global = ControlPlane::start().unwrap();
    mesh(&global.client(), "default");
    let out = global.meshctl(
        &[
            "generate",
            "zone-token",
            "--zone",
            "from-cli",
            "--valid-for",
            "24h",
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap();
    let claims = certs::read_zone_token_unverified(token.trim()).unwrap();
    assert_eq!(claims.zone, "from-cli");
    assert!(claims.exp - claims.iat <= 24 * 3600 + 1);
    let zone = ControlPlane::zone_with_token("from-cli", &global, token.trim()).unwrap();
    eventually(
        &zone.client(),
        "/meshes/default",
        "mesh synced with a CLI token",
        |s, _| s == 200,
    );

    // A token for one zone does not start another.
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("t");
    std::fs::write(&file, token.trim()).unwrap();
    let mut other = ControlPlane::spawn_zone(
        "other",
        &tmp.path().join("d"),
        Some((global.kds_addr.unwrap(), &file)),
    )
    .unwrap();
    assert!(!other.wait_exit(Duration::from_secs(10)).unwrap().success());
    assert!(
        other.log().contains("is for zone \"from-cli\""),
        "{}",
        other.log()
    );
}

#[test]
fn a_zone_cannot_publish_into_another_zones_name() {
    let global = ControlPlane::start().unwrap();
    let g = global.client();
    mesh(&g, "default");
    let token = global.zone_token("attacker", None).unwrap();

    // The attacker's store holds a dataplane that claims to be the victim's,
    // and an honest one of its own.
    let dp = |name: &str, zone: &str| {
        let v = serde_json::json!({
            "type": "Dataplane", "mesh": "default", "name": name,
            "labels": { "kuma.io/origin": "zone", "kuma.io/zone": zone },
            "networking": { "address": "127.0.0.1", "inbound": [
                { "port": 10001, "tags": { "kuma.io/service": "web" } } ] },
        });
        api::Resource::from_value(v).unwrap()
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _guard = rt.enter();
    let _attacker = integration_tests::inproc::InProcessZone::start(
        "attacker",
        global.kds_addr.unwrap(),
        &token,
        vec![
            api::Resource::new("default", None, api::Spec::Mesh(Default::default())),
            dp("forged", "victim"),
            dp("honest", "attacker"),
        ],
    )
    .unwrap();

    eventually(
        &g,
        "/meshes/default/dataplanes/attacker.honest",
        "honest dataplane synced",
        |s, _| s == 200,
    );
    let overview = eventually(
        &g,
        "/zones/attacker/_overview",
        "the forged one NACKed",
        |_, b| {
            b["zoneInsight"]["zoneToGlobal"]["Dataplane"]["nacks"]
                .as_u64()
                .unwrap_or(0)
                >= 1
        },
    );
    assert!(
        overview["zoneInsight"]["zoneToGlobal"]["Dataplane"]["lastNack"]
            .as_str()
            .unwrap()
            .contains("claims zone \"victim\""),
        "{overview}"
    );
    let all = g.get("/meshes/default/dataplanes");
    let names: Vec<&str> = all.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["attacker.honest"]);
    assert!(all.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["labels"]["kuma.io/zone"] == "attacker"));
}
