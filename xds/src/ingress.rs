//! A zone ingress: one listener (default port 10000) with a TLS inspector
//! and one filter chain per SNI `<service>{mesh=<mesh>}`, each passing the
//! TLS stream through untouched (no transport socket: the ingress holds no
//! mesh keys) to an EDS cluster of that service's local endpoints. Only
//! meshes with mTLS are offered, as in Kuma: cross-zone traffic needs it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use api::{AvailableService, Resource, Spec};
use xds_api::pb::envoy::config::cluster::v3::{cluster, Cluster};
use xds_api::pb::envoy::config::core::v3::TrafficDirection;
use xds_api::pb::envoy::config::listener::v3::{
    listener_filter, FilterChain, FilterChainMatch, ListenerFilter,
};

use crate::common::{
    check_port, connect_timeout, listener, load_assignment, parse_ip, reachable_inbounds,
    stat_name, tcp_proxy_filter,
};
use crate::extensions::{to_any, TlsInspector};
use crate::{tls, GenerateError, ProxyResources};

/// Where an ingress listens when its resource does not say.
pub const DEFAULT_PORT: u32 = 10000;

/// What an ingress's config depends on.
#[derive(Debug, Clone, Copy)]
pub struct IngressSnapshot<'a> {
    pub zone: &'a str,
    /// Every Mesh; those without mTLS are skipped.
    pub meshes: &'a [Resource],
    /// This zone's Dataplanes, of every mesh.
    pub dataplanes: &'a [Resource],
}

fn mtls_meshes(meshes: &[Resource]) -> BTreeSet<&str> {
    meshes
        .iter()
        .filter(|m| api::enabled_mtls_backend(m).is_some())
        .map(|m| m.name.as_str())
        .collect()
}

/// Healthy local inbounds by (mesh, service): their addresses, and the tag
/// sets of the instances.
type Offered<'a> = BTreeMap<(&'a str, &'a str), Vec<(IpAddr, u32, &'a api::Tags)>>;

fn offered<'a>(meshes: &BTreeSet<&str>, dataplanes: &'a [Resource]) -> Offered<'a> {
    let mut out: Offered<'a> = BTreeMap::new();
    for r in reachable_inbounds(dataplanes).filter(|r| meshes.contains(r.mesh)) {
        out.entry((r.mesh, r.service))
            .or_default()
            .push((r.ip, r.port, r.tags));
    }
    out
}

/// The cluster an ingress sends one mesh's service to.
fn cluster_name(mesh: &str, service: &str) -> String {
    format!("{mesh}:{service}")
}

/// Generates the listener, clusters and endpoints of the ingress `ingress`.
pub fn generate_ingress(
    snapshot: &IngressSnapshot,
    ingress: &Resource,
) -> Result<ProxyResources, GenerateError> {
    let Spec::ZoneIngress(spec) = &ingress.spec else {
        return Err(GenerateError::WrongType {
            name: ingress.name.clone(),
            found: ingress.ty().name(),
            expected: "ZoneIngress",
        });
    };
    let n = &spec.networking;
    let ip = parse_ip(&n.address, || "networking.address".into())?;
    let port = check_port(if n.port == 0 { DEFAULT_PORT } else { n.port }, || {
        "networking.port".into()
    })?;
    let meshes = mtls_meshes(snapshot.meshes);
    let offered = offered(&meshes, snapshot.dataplanes);
    let mut chains = Vec::new();
    let mut clusters = Vec::new();
    let mut endpoints = Vec::new();
    for ((mesh, service), instances) in &offered {
        let name = cluster_name(mesh, service);
        chains.push(FilterChain {
            filter_chain_match: Some(FilterChainMatch {
                server_names: vec![tls::sni(service, mesh)],
                ..Default::default()
            }),
            filters: vec![tcp_proxy_filter(stat_name(&name), &name)],
            name: tls::sni(service, mesh),
            ..Default::default()
        });
        clusters.push(Cluster {
            name: name.clone(),
            connect_timeout: Some(connect_timeout()),
            cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
                cluster::DiscoveryType::Eds as i32,
            )),
            eds_cluster_config: Some(cluster::EdsClusterConfig {
                eds_config: Some(tls::ads()),
                service_name: String::new(),
            }),
            ..Default::default()
        });
        let set: BTreeSet<(IpAddr, u32)> = instances.iter().map(|(i, p, _)| (*i, *p)).collect();
        endpoints.push(load_assignment(&name, set));
    }
    let mut l = listener(
        format!("ingress:{}:{port}", n.address),
        ip,
        port,
        TrafficDirection::Inbound,
        FilterChain::default(),
    );
    l.filter_chains = chains;
    l.listener_filters = vec![ListenerFilter {
        name: "envoy.filters.listener.tls_inspector".into(),
        config_type: Some(listener_filter::ConfigType::TypedConfig(to_any(
            &TlsInspector {},
        ))),
        ..Default::default()
    }];
    Ok(ProxyResources {
        // Envoy refuses a listener without filter chains: until this zone
        // offers a service, the ingress has no listener.
        listeners: if l.filter_chains.is_empty() {
            Vec::new()
        } else {
            vec![l]
        },
        clusters,
        endpoints,
    })
}

/// What this zone offers through its ingress: per (mtls mesh, tag set of a
/// healthy inbound) the number of instances, sorted.
pub fn available_services(
    _zone: &str,
    meshes: &[Resource],
    dataplanes: &[Resource],
) -> Vec<AvailableService> {
    let meshes = mtls_meshes(meshes);
    let mut counts: BTreeMap<(&str, &api::Tags), u32> = BTreeMap::new();
    for ((mesh, _), instances) in offered(&meshes, dataplanes) {
        for (_, _, tags) in instances {
            *counts.entry((mesh, tags)).or_default() += 1;
        }
    }
    counts
        .into_iter()
        .map(|((mesh, tags), instances)| AvailableService {
            tags: tags.clone(),
            instances,
            mesh: mesh.to_owned(),
            external_service: false,
        })
        .collect()
}
