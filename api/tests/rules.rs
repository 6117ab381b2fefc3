//! Validation: every rule, with the field path it reports. Inputs are Kuma
//! Universal YAML, as a user would write them.

use api::{parse_documents, Resource};

/// Parses and validates one YAML document; the field paths of the problems.
fn problems(yaml: &str) -> Vec<String> {
    let doc = parse_documents(yaml).expect("test YAML parses").remove(0);
    let result = Resource::from_value(doc).and_then(|r| r.validate());
    match result {
        Ok(()) => Vec::new(),
        Err(e) => {
            assert!(e.violations.iter().all(|v| !v.reason.is_empty()), "{e}");
            e.violations.into_iter().map(|v| v.field).collect()
        }
    }
}

const TP_OK: &str = "type: TrafficPermission\nname: tp\nmesh: default\nsources:\n  - match:\n      kuma.io/service: web\ndestinations:\n  - match:\n      kuma.io/service: '*'\n";

#[test]
fn realistic_kuma_files_are_valid_and_round_trip() {
    let files = [
        "type: Mesh\nname: default\nmtls:\n  enabledBackend: ca-1\n  backends:\n    - name: ca-1\n      type: builtin\n      dpCert:\n        rotation:\n          expiration: 1d\n      conf:\n        caCert:\n          RSAbits: 2048\n          expiration: 10y\n",
        TP_OK,
        "type: Dataplane\nmesh: default\nname: web-01\nnetworking:\n  address: 192.168.0.1\n  inbound:\n    - port: 11011\n      servicePort: 11012\n      serviceAddress: 127.0.0.1\n      tags:\n        kuma.io/service: web\n        kuma.io/protocol: http\n  outbound:\n    - port: 33033\n      tags:\n        kuma.io/service: backend\n  admin:\n    port: 9901\n",
        "type: ZoneIngress\nname: zi-1\nnetworking:\n  address: 127.0.0.1\n  port: 10000\n  advertisedAddress: 10.0.0.1\n  advertisedPort: 10000\navailableServices:\n  - tags:\n      kuma.io/service: backend\n    instances: 2\n    mesh: default\n",
        "type: Zone\nname: zone-1\nenabled: false\n",
    ];
    for f in files {
        assert_eq!(problems(f), Vec::<String>::new(), "{f}");
        let r = Resource::from_value(parse_documents(f).unwrap().remove(0)).unwrap();
        let back = Resource::from_value(r.to_value()).unwrap();
        assert_eq!((back.name, back.mesh, back.spec), (r.name, r.mesh, r.spec));
    }
}

#[test]
fn each_rule_reports_its_field_path() {
    let long = "a".repeat(254);
    let cases: Vec<(String, Vec<&str>)> = vec![
        // names
        ("type: Mesh\nname: Bad_Name\n".into(), vec!["name"]),
        ("type: Mesh\nname: ''\n".into(), vec!["name"]),
        (format!("type: Mesh\nname: {long}\n"), vec!["name"]),
        ("type: Mesh\nname: -starts-with-dash\n".into(), vec!["name"]),
        ("type: Zone\nname: has.dot\n".into(), vec!["name"]),
        (TP_OK.replace("mesh: default", "mesh: Not_Ok"), vec!["mesh"]),
        (TP_OK.replace("mesh: default\n", ""), vec!["mesh"]),
        // selectors
        (TP_OK.replace("sources:\n  - match:\n      kuma.io/service: web\n", "sources: []\n"), vec!["sources"]),
        (TP_OK.replace("  - match:\n      kuma.io/service: '*'\n", "  - match: {}\n"), vec!["destinations[0].match"]),
        (TP_OK.replace("kuma.io/service: web", "version: v1"), vec!["sources[0].match"]),
        (TP_OK.replace("kuma.io/service: web", "kuma.io/service: 'bad value!'"), vec!["sources[0].match[\"kuma.io/service\"]"]),
        // mesh mTLS
        ("type: Mesh\nname: m\nmtls:\n  enabledBackend: missing\n".into(), vec!["mtls.enabledBackend"]),
        ("type: Mesh\nname: m\nmtls:\n  backends:\n    - name: a\n      type: provided\n".into(), vec!["mtls.backends[0].type"]),
        ("type: Mesh\nname: m\nmtls:\n  backends:\n    - name: a\n      type: builtin\n    - name: a\n      type: builtin\n".into(), vec!["mtls.backends[1].name"]),
        ("type: Mesh\nname: m\nmtls:\n  backends:\n    - name: a\n      type: builtin\n      dpCert:\n        rotation:\n          expiration: 1w\n".into(), vec!["mtls.backends[0].dpCert.rotation.expiration"]),
        ("type: Mesh\nname: m\nmtls:\n  backends:\n    - name: a\n      type: builtin\n      conf:\n        caCert:\n          expiration: ten\n".into(), vec!["mtls.backends[0].conf.caCert.expiration"]),
        // dataplane
        ("type: Dataplane\nmesh: m\nname: d\nnetworking:\n  address: 127.0.0.1\n".into(), vec!["networking"]),
        ("type: Dataplane\nmesh: m\nname: d\nnetworking:\n  address: 'not an address!'\n  inbound:\n    - port: 1\n      tags:\n        kuma.io/service: a\n".into(), vec!["networking.address"]),
        ("type: Dataplane\nmesh: m\nname: d\nnetworking:\n  address: 127.0.0.1\n  inbound:\n    - port: 70000\n      servicePort: 0\n      tags:\n        kuma.io/service: a\n".into(), vec!["networking.inbound[0].port", "networking.inbound[0].servicePort"]),
        ("type: Dataplane\nmesh: m\nname: d\nnetworking:\n  address: 127.0.0.1\n  inbound:\n    - port: 1\n      tags:\n        version: v1\n".into(), vec!["networking.inbound[0].tags"]),
        ("type: Dataplane\nmesh: m\nname: d\nnetworking:\n  address: 127.0.0.1\n  inbound:\n    - port: 1\n      tags:\n        kuma.io/service: '*'\n".into(), vec!["networking.inbound[0].tags[\"kuma.io/service\"]"]),
        ("type: Dataplane\nmesh: m\nname: d\nnetworking:\n  address: 127.0.0.1\n  inbound:\n    - port: 1\n      tags:\n        kuma.io/service: a\n        kuma.io/protocol: smtp\n".into(), vec!["networking.inbound[0].tags[\"kuma.io/protocol\"]"]),
        ("type: Dataplane\nmesh: m\nname: d\nnetworking:\n  address: 127.0.0.1\n  inbound:\n    - port: 1\n      tags:\n        kuma.io/service: a\n  outbound:\n    - port: 0\n      tags: {}\n  admin:\n    port: 0\n".into(), vec!["networking.outbound[0].port", "networking.outbound[0].tags", "networking.admin.port"]),
        // zone ingress
        ("type: ZoneIngress\nname: zi\nnetworking:\n  address: 127.0.0.1\n  port: 10000\n  advertisedAddress: 1.2.3.4\n".into(), vec!["networking.advertisedPort"]),
        ("type: ZoneIngress\nname: zi\nnetworking:\n  address: 127.0.0.1\n  port: 0\n".into(), vec!["networking.port"]),
        ("type: ZoneIngress\nname: zi\nnetworking:\n  address: 127.0.0.1\n  port: 1\navailableServices:\n  - tags:\n      kuma.io/service: a\n".into(), vec!["availableServices[0].mesh"]),
        // structure
        ("type: Meshy\nname: x\n".into(), vec!["type"]),
        ("name: x\n".into(), vec!["type"]),
        ("type: Mesh\nname: x\nfoo: 1\n".into(), vec!["foo"]),
        ("type: Dataplane\nmesh: m\nname: d\nnetworking:\n  address: 127.0.0.1\n  inbound:\n    - port: 1\n      colour: red\n".into(), vec!["networking.inbound[0].colour"]),
        ("type: Dataplane\nmesh: m\nname: d\nnetworking:\n  address: 127.0.0.1\n  inbound:\n    - port: one\n".into(), vec!["networking.inbound[0].port"]),
        ("type: Mesh\nname: x\ncreationTime: yesterday\n".into(), vec!["creationTime"]),
        ("type: Mesh\nname: x\nlabels: [a]\n".into(), vec!["labels"]),
    ];
    for (yaml, want) in cases {
        assert_eq!(problems(&yaml), want, "for:\n{yaml}");
    }
}

#[test]
fn every_problem_is_reported_at_once() {
    let yaml = "type: TrafficPermission\nname: Bad\nmesh: default\nsources: []\ndestinations: []\n";
    assert_eq!(problems(yaml), ["name", "sources", "destinations"]);
}

#[test]
fn documents_are_split_and_broken_ones_named_by_index() {
    let docs = parse_documents("type: Mesh\nname: a\n---\n---\ntype: Mesh\nname: b\n").unwrap();
    assert_eq!(docs.len(), 2, "empty documents are skipped");
    let err = parse_documents("type: Mesh\nname: a\n---\nname: [b\n").unwrap_err();
    assert_eq!(err.index, 1);
}
