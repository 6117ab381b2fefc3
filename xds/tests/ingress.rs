//! The zone ingress's config and what it advertises: SNI passthrough to
//! healthy local endpoints, only for meshes with mTLS, never holding keys.

mod common;

use xds::ingress::{available_services, generate_ingress, IngressSnapshot};
use xds_api::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;

fn generate() -> xds::ProxyResources {
    let (meshes, dataplanes, ingress) = common::ingress_input();
    let snapshot = IngressSnapshot {
        zone: "zone-1",
        meshes: &meshes,
        dataplanes: &dataplanes,
    };
    generate_ingress(&snapshot, &ingress).expect("generate")
}

#[test]
fn one_passthrough_chain_per_sni_of_mtls_meshes_only() {
    let r = generate();
    let l = &r.listeners[0];
    let addr = format!("{:?}", l.address);
    assert!(
        addr.contains("10.0.0.100") && addr.contains("10000"),
        "{addr}"
    );
    assert_eq!(l.listener_filters.len(), 1, "a TLS inspector");
    let snis: Vec<&str> = l
        .filter_chains
        .iter()
        .flat_map(|c| c.filter_chain_match.as_ref().unwrap().server_names.iter())
        .map(String::as_str)
        .collect();
    // `plain` has no mTLS: db is not offered.
    assert_eq!(snis, ["backend{mesh=default}", "web{mesh=default}"]);
    for chain in &l.filter_chains {
        assert!(
            chain.transport_socket.is_none(),
            "the ingress never terminates TLS"
        );
        assert_eq!(chain.filters.len(), 1, "only a tcp_proxy");
    }
    assert!(r.clusters.iter().all(|c| c.transport_socket.is_none()));
    let names: Vec<&str> = r.clusters.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["default:backend", "default:web"]);
}

#[test]
fn endpoints_are_the_healthy_local_inbounds() {
    let r = generate();
    let backend = r
        .endpoints
        .iter()
        .find(|e| e.cluster_name == "default:backend")
        .expect("backend endpoints");
    let addrs: Vec<String> = backend.endpoints[0]
        .lb_endpoints
        .iter()
        .map(|e| match &e.host_identifier {
            Some(HostIdentifier::Endpoint(ep)) => format!("{:?}", ep.address),
            _ => String::new(),
        })
        .collect();
    assert_eq!(addrs.len(), 2, "backend-3 is not ready: {addrs:?}");
    assert!(addrs[0].contains("10.0.0.1") && addrs[1].contains("10.0.0.2"));
}

#[test]
fn available_services_count_healthy_instances_per_mtls_mesh() {
    let (meshes, dataplanes, _) = common::ingress_input();
    let services = available_services("zone-1", &meshes, &dataplanes);
    let summary: Vec<(String, String, u32)> = services
        .iter()
        .map(|s| {
            (
                s.mesh.clone(),
                s.tags["kuma.io/service"].clone(),
                s.instances,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("default".to_owned(), "backend".to_owned(), 2),
            ("default".to_owned(), "web".to_owned(), 1),
        ]
    );
    assert_eq!(
        services[0].tags["version"], "v1",
        "all inbound tags are advertised"
    );
}

#[test]
fn an_ingress_with_nothing_to_offer_has_no_listener() {
    let (meshes, _, ingress) = common::ingress_input();
    let snapshot = IngressSnapshot {
        zone: "zone-1",
        meshes: &meshes,
        dataplanes: &[],
    };
    let r = generate_ingress(&snapshot, &ingress).expect("generate");
    assert!(r.listeners.is_empty() && r.clusters.is_empty());
}
