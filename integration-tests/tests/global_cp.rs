//! End-to-end tests of the global control plane: the real `global-cp` and
//! `meshctl` binaries on loopback ports with temporary data directories.

use std::time::Duration;

use integration_tests::{traffic_permission, wait_until, GlobalCp};
use reqwest::Method;
use serde_json::{json, Value};

const KUMA_FILES: &str = r#"
type: Mesh
name: default
mtls:
  enabledBackend: ca-1
  backends:
    - name: ca-1
      type: builtin
      dpCert:
        rotation:
          expiration: 1d
      conf:
        caCert:
          RSAbits: 2048
          expiration: 10y
---
type: TrafficPermission
name: allow-all-traffic
mesh: default
sources:
  - match:
      kuma.io/service: '*'
destinations:
  - match:
      kuma.io/service: '*'
---
type: TrafficPermission
name: web-to-backend
mesh: default
sources:
  - match:
      kuma.io/service: web
destinations:
  - match:
      kuma.io/service: backend
---
type: Zone
name: zone-1
"#;

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn meshctl_applies_kuma_yaml_and_reads_it_back() {
    let cp = GlobalCp::start().unwrap();

    let out = cp.meshctl(&["apply", "-f", "-"], Some(KUMA_FILES));
    assert!(out.status.success(), "apply failed: {}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(text.matches("created").count(), 4, "{text}");

    // Applying the same files again updates them.
    let out = cp.meshctl(&["apply", "-f", "-"], Some(KUMA_FILES));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).matches("updated").count(),
        4,
        "{}",
        stdout(&out)
    );

    // REST shows Kuma's shape, with the origin label stamped by the global.
    let api = cp.client();
    let tp = api.get("/meshes/default/traffic-permissions/web-to-backend");
    assert_eq!(tp.status, 200);
    assert_eq!(tp.body["type"], "TrafficPermission");
    assert_eq!(tp.body["mesh"], "default");
    assert_eq!(tp.body["sources"][0]["match"]["kuma.io/service"], "web");
    assert_eq!(
        tp.body["destinations"][0]["match"]["kuma.io/service"],
        "backend"
    );
    assert_eq!(tp.body["labels"]["kuma.io/origin"], "global");
    assert_eq!(tp.etag.as_deref(), Some("\"2\""));
    let mesh = api.get("/meshes/default");
    assert_eq!(
        mesh.body["mtls"]["backends"][0]["conf"]["caCert"]["RSAbits"],
        2048
    );

    let list = api.get("/meshes/default/traffic-permissions");
    assert_eq!(list.body["total"], 2);
    assert_eq!(list.body["items"].as_array().unwrap().len(), 2);
    assert_eq!(list.body["next"], Value::Null);
    let page = api.get("/meshes/default/traffic-permissions?size=1");
    assert_eq!(page.body["items"].as_array().unwrap().len(), 1);
    assert!(page.body["next"].as_str().unwrap().contains("offset=1"));
    assert_eq!(api.get("/zones/zone-1").status, 200);

    // meshctl get in each output format.
    let out = cp.meshctl(&["get", "traffic-permissions", "--mesh", "default"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    assert!(
        table.contains("allow-all-traffic") && table.contains("web-to-backend"),
        "{table}"
    );

    let out = cp.meshctl(
        &["get", "traffic-permission", "web-to-backend", "-o", "json"],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["name"], "web-to-backend");

    let out = cp.meshctl(&["get", "meshes", "-o", "yaml"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    let docs = api::parse_documents(&stdout(&out)).unwrap();
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0]["name"], "default");

    let out = cp.meshctl(&["get", "zones"], None);
    assert!(stdout(&out).contains("zone-1"), "{}", stdout(&out));

    // Delete through meshctl; a Mesh delete takes its policies along.
    let out = cp.meshctl(
        &[
            "delete",
            "traffic-permission",
            "web-to-backend",
            "--mesh",
            "default",
        ],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        api.get("/meshes/default/traffic-permissions/web-to-backend")
            .status,
        404
    );
    let out = cp.meshctl(&["delete", "mesh", "default"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(api.get("/traffic-permissions").body["total"], 0);

    // Deleting what is not there is an error with a non-zero exit.
    let out = cp.meshctl(&["delete", "mesh", "default"], None);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not found"), "{}", stderr(&out));
}

#[test]
fn meshctl_apply_stops_at_the_first_invalid_document() {
    let cp = GlobalCp::start().unwrap();
    let files = r#"
type: Mesh
name: default
---
type: TrafficPermission
name: broken
mesh: default
sources: []
destinations:
  - match:
      kuma.io/service: 'bad value!'
---
type: TrafficPermission
name: never-applied
mesh: default
sources:
  - match:
      kuma.io/service: web
destinations:
  - match:
      kuma.io/service: backend
"#;
    let out = cp.meshctl(&["apply", "-f", "-"], Some(files));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("document 1"), "{err}");
    assert!(err.contains("sources"), "{err}");
    assert!(err.contains("destinations[0].match"), "{err}");
    let api = cp.client();
    assert_eq!(
        api.get("/meshes/default").status,
        200,
        "documents before the bad one apply"
    );
    assert_eq!(
        api.get("/meshes/default/traffic-permissions/broken").status,
        404
    );
    assert_eq!(
        api.get("/meshes/default/traffic-permissions/never-applied")
            .status,
        404
    );

    // Broken YAML is refused before anything is sent.
    let out = cp.meshctl(
        &["apply", "-f", "-"],
        Some("type: Mesh\nname: other\n---\n: : bad\n  - [\n"),
    );
    assert!(!out.status.success());
    assert_eq!(api.get("/meshes/other").status, 404);

    // Unreachable control plane: a message that names the address.
    let out = integration_tests::meshctl("http://127.0.0.1:9", None, &["get", "meshes"], None);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("127.0.0.1:9"), "{}", stderr(&out));
}

#[test]
fn rest_api_answers_bad_requests_precisely_and_writes_nothing() {
    let cp = GlobalCp::start().unwrap();
    let api = cp.client();
    assert_eq!(
        api.put_yaml("/meshes/default", "type: Mesh\nname: default\n")
            .status,
        201
    );
    let count_before = api.get("/global-insight").body["resources"].clone();

    // 401: no token and a wrong token, with Kuma's error body.
    let anon = api.with_token(None);
    let r = anon.get("/meshes");
    assert_eq!(r.status, 401);
    assert_eq!(r.body["status"], 401);
    assert_eq!(
        anon.with_token(Some("not-the-token")).get("/meshes").status,
        401
    );
    assert_eq!(
        anon.with_token(Some("x"))
            .put_yaml("/meshes/evil", "type: Mesh\nname: evil\n")
            .status,
        401
    );

    // 400: validation with field paths.
    let r = api.put_json(
        "/meshes/default/traffic-permissions/tp",
        &json!({"type": "TrafficPermission", "name": "tp", "mesh": "default",
                "sources": [], "destinations": [{"match": {}}]}),
    );
    assert_eq!(r.status, 400, "{:?}", r.body);
    let fields: Vec<&str> = r.body["invalid_parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["sources", "destinations[0].match"]);

    // 400: wrong field type names the field.
    let r = api.put_yaml(
        "/meshes/default/traffic-permissions/tp",
        "type: TrafficPermission\nname: tp\nmesh: default\nsources: 5\ndestinations: []\n",
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.body["invalid_parameters"][0]["field"], "sources");

    // 400: unknown type, malformed YAML, name and mesh mismatch, missing mesh.
    let r = api.put_yaml("/meshes/x", "type: Meshy\nname: x\n");
    assert_eq!(r.status, 400);
    assert_eq!(r.body["invalid_parameters"][0]["field"], "type");
    let r = api.put_yaml("/meshes/x", "type: Mesh\nname: [x\n");
    assert_eq!(r.status, 400);
    assert!(
        r.body["detail"].as_str().unwrap().contains("YAML"),
        "{:?}",
        r.body
    );
    let r = api.put_json("/meshes/x", &json!({"type": "Mesh", "name": "y"}));
    assert_eq!(r.status, 400);
    assert_eq!(r.body["invalid_parameters"][0]["field"], "name");
    let r = api.put_json(
        "/meshes/default/traffic-permissions/a",
        &traffic_permission("other", "a", "web", "backend"),
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.body["invalid_parameters"][0]["field"], "mesh");
    let r = api.put_json(
        "/meshes/nope/traffic-permissions/a",
        &traffic_permission("nope", "a", "web", "backend"),
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.body["invalid_parameters"][0]["field"], "mesh");
    assert!(r.body["invalid_parameters"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("does not exist"));
    let r = api.put_json(
        "/meshes/Bad_Name",
        &json!({"type": "Mesh", "name": "Bad_Name"}),
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.body["invalid_parameters"][0]["field"], "name");

    // 413: a body over 1 MiB.
    let huge = format!(
        "type: Mesh\nname: big\nlabels:\n  pad: \"{}\"\n",
        "x".repeat(1_100_000)
    );
    assert_eq!(api.put_yaml("/meshes/big", &huge).status, 413);

    // 404 and 405.
    assert_eq!(
        api.get("/meshes/default/traffic-permissions/none").status,
        404
    );
    assert_eq!(api.get("/meshes/nope/traffic-permissions").status, 404);
    assert_eq!(api.get("/no-such-kind").status, 404);
    let r = api.put_yaml(
        "/meshes/default/dataplanes/dp-1",
        "type: Dataplane\nname: dp-1\nmesh: default\nnetworking:\n  address: 127.0.0.1\n  inbound:\n    - port: 1\n      tags:\n        kuma.io/service: a\n",
    );
    assert_eq!(r.status, 405);
    assert!(
        r.body["detail"].as_str().unwrap().contains("zone"),
        "{:?}",
        r.body
    );
    assert_eq!(api.delete("/zone-ingresses/zi-1").status, 405);
    assert_eq!(api.request(Method::POST, "/meshes", None, &[]).status, 405);

    // Nothing above reached the store.
    assert_eq!(api.get("/global-insight").body["resources"], count_before);

    // 409: optimistic concurrency with If-Match, and create-only.
    let path = "/meshes/default/traffic-permissions/tp";
    let tp = traffic_permission("default", "tp", "web", "backend").to_string();
    let created = api.request(Method::PUT, path, Some(("application/json", &tp)), &[]);
    assert_eq!(created.status, 201);
    assert_eq!(created.etag.as_deref(), Some("\"1\""));
    let ok = api.request(
        Method::PUT,
        path,
        Some(("application/json", &tp)),
        &[("if-match", "\"1\"")],
    );
    assert_eq!(ok.status, 200);
    let stale = api.request(
        Method::PUT,
        path,
        Some(("application/json", &tp)),
        &[("if-match", "\"1\"")],
    );
    assert_eq!(stale.status, 409, "{:?}", stale.body);
    assert_eq!(stale.body["status"], 409);
    let dup = api.request(
        Method::PUT,
        path,
        Some(("application/json", &tp)),
        &[("if-none-match", "*")],
    );
    assert_eq!(dup.status, 409);
    assert_eq!(api.get(path).etag.as_deref(), Some("\"2\""));
}

#[test]
fn acknowledged_writes_survive_kill_9() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut cp = GlobalCp::start_in(&data).unwrap();
    let api = cp.client();
    assert_eq!(
        api.put_yaml("/meshes/default", "type: Mesh\nname: default\n")
            .status,
        201
    );
    let mut acked = Vec::new();
    for i in 0..300 {
        let name = format!("tp-{i}");
        let r = api.put_json(
            &format!("/meshes/default/traffic-permissions/{name}"),
            &traffic_permission("default", &name, &format!("svc-{i}"), "backend"),
        );
        assert_eq!(r.status, 201);
        acked.push(name);
    }
    // An update and a delete right before the kill must stick too.
    let r = api.put_json(
        "/meshes/default/traffic-permissions/tp-0",
        &traffic_permission("default", "tp-0", "updated", "backend"),
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        api.delete("/meshes/default/traffic-permissions/tp-1")
            .status,
        200
    );
    cp.kill9();

    let cp = GlobalCp::start_in(&data).unwrap();
    let api = cp.client();
    let all = api.get("/meshes/default/traffic-permissions?size=1000");
    assert_eq!(all.body["total"], 299);
    for name in acked.iter().filter(|n| *n != "tp-1") {
        let r = api.get(&format!("/meshes/default/traffic-permissions/{name}"));
        assert_eq!(r.status, 200, "{name} lost after kill -9");
    }
    let tp0 = api.get("/meshes/default/traffic-permissions/tp-0");
    assert_eq!(
        tp0.body["sources"][0]["match"]["kuma.io/service"],
        "updated"
    );
    assert_eq!(tp0.etag.as_deref(), Some("\"2\""));
    assert_eq!(
        api.get("/meshes/default/traffic-permissions/tp-1").status,
        404
    );
}

#[test]
fn a_locked_or_unusable_data_dir_is_refused_with_its_name() {
    let cp = GlobalCp::start().unwrap();
    let mut second = GlobalCp::spawn(
        &cp.data_dir,
        integration_tests::free_addr(),
        integration_tests::free_addr(),
    )
    .unwrap();
    let status = second.wait_exit(Duration::from_secs(10)).unwrap();
    assert!(!status.success());
    let log = second.log();
    assert!(log.contains(&cp.data_dir.display().to_string()), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    // The first one is unharmed.
    assert_eq!(cp.client().get("/meshes").status, 200);

    // A data dir that is a file.
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let mut bad = GlobalCp::spawn(
        &file,
        integration_tests::free_addr(),
        integration_tests::free_addr(),
    )
    .unwrap();
    let status = bad.wait_exit(Duration::from_secs(10)).unwrap();
    assert!(!status.success());
    let log = bad.log();
    assert!(log.contains(&file.display().to_string()), "{log}");
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn sigterm_stops_cleanly_and_metrics_are_served() {
    let mut cp = GlobalCp::start().unwrap();
    let api = cp.client();
    assert_eq!(
        api.put_yaml("/meshes/default", "type: Mesh\nname: default\n")
            .status,
        201
    );
    assert_eq!(api.get("/meshes/default").status, 200);
    let http = reqwest::blocking::Client::new();
    let metrics = http
        .get(format!("http://{}/metrics", cp.diagnostics_addr))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics
            .contains(r#"api_requests_total{method="PUT",route="/meshes/:name",status="201"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"store_resources{resource_type="Mesh"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("api_request_duration_seconds_bucket"),
        "{metrics}"
    );
    let healthy = http
        .get(format!("http://{}/healthy", cp.diagnostics_addr))
        .send()
        .unwrap();
    assert!(healthy.status().is_success());

    let status = cp.terminate(Duration::from_secs(10)).unwrap();
    assert!(status.success(), "exit status {status:?}\n{}", cp.log());
    wait_until("log says stopped", Duration::from_secs(1), || {
        cp.log().contains("stopped").then_some(())
    })
    .unwrap();
}

#[test]
fn the_rest_api_serves_https_when_given_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = certs::generate_ca("test CA", Duration::from_secs(3600)).unwrap();
    let server = certs::issue_server_cert(
        &ca,
        "global-cp",
        &["127.0.0.1".to_owned()],
        Duration::from_secs(3600),
    )
    .unwrap();
    let (cert, key, ca_file) = (
        dir.path().join("api.pem"),
        dir.path().join("api.key"),
        dir.path().join("ca.pem"),
    );
    std::fs::write(&cert, &server.cert_pem).unwrap();
    std::fs::write(&key, &server.key_pem).unwrap();
    std::fs::write(&ca_file, &ca.cert_pem).unwrap();
    let cp = GlobalCp::start_with(&[
        "--api-tls-cert",
        cert.to_str().unwrap(),
        "--api-tls-key",
        key.to_str().unwrap(),
    ])
    .unwrap();
    let https = format!("https://{}", cp.api_addr);
    let meshctl = |addr: &str, ca: Option<&std::path::Path>, args: &[&str]| {
        let mut c = std::process::Command::new(integration_tests::bin("meshctl"));
        c.args(["--api-addr", addr, "--token-file"])
            .arg(cp.token_path())
            .args(args);
        if let Some(ca) = ca {
            c.arg("--ca-cert-file").arg(ca);
        }
        c.output().unwrap()
    };
    // With the CA pinned, meshctl works over HTTPS, writes included, and
    // follows the API's `next` links (1,001 policies: two pages of 1,000).
    let mut yaml = String::from("type: Mesh\nname: default\n");
    for i in 0..1001 {
        yaml.push_str(&format!(
            "---\ntype: TrafficPermission\nmesh: default\nname: tp-{i}\nsources:\n  - match:\n      kuma.io/service: '*'\ndestinations:\n  - match:\n      kuma.io/service: svc-{i}\n"
        ));
    }
    let file = dir.path().join("resources.yaml");
    std::fs::write(&file, yaml).unwrap();
    let out = meshctl(
        &https,
        Some(&ca_file),
        &["apply", "-f", file.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = meshctl(
        &https,
        Some(&ca_file),
        &[
            "get",
            "traffic-permissions",
            "--mesh",
            "default",
            "-o",
            "json",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let items: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(items.len(), 1001);
    let page = reqwest::blocking::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.cert_pem.as_bytes()).unwrap())
        .build()
        .unwrap()
        .get(format!(
            "{https}/meshes/default/traffic-permissions?size=1000"
        ))
        .bearer_auth(cp.token())
        .send()
        .unwrap()
        .json::<Value>()
        .unwrap();
    let next = page["next"].as_str().unwrap_or_default();
    assert!(next.starts_with("https://"), "{next}");
    // Without trusting the CA, or over plain HTTP, nothing gets through.
    assert!(!meshctl(&https, None, &["get", "meshes"]).status.success());
    let http = format!("http://{}", cp.api_addr);
    assert!(!meshctl(&http, Some(&ca_file), &["get", "meshes"])
        .status
        .success());
}
