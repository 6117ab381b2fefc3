//! One outbound: its listener and the EDS cluster of the service it reaches,
//! and the endpoints of those clusters.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use api::{Outbound, Resource, Spec, SERVICE_TAG};
use xds_api::pb::envoy::config::cluster::v3::{cluster, Cluster};
use xds_api::pb::envoy::config::core::v3::TrafficDirection;
use xds_api::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use xds_api::pb::envoy::config::listener::v3::FilterChain;

use crate::common::{
    check_port, connect_timeout, listener, load_assignment, parse_ip, stat_name, tcp_proxy_filter,
    Resources,
};
use crate::{tls, GenerateError, Proxy};

/// Where outbound listeners bind when the outbound does not say.
const DEFAULT_OUTBOUND_ADDRESS: &str = "127.0.0.1";

/// Adds the listener and cluster of `networking.outbound[index]` and returns
/// the service it reaches.
pub(crate) fn add<'a>(
    proxy: &Proxy,
    index: usize,
    outbound: &'a Outbound,
    out: &mut Resources,
) -> Result<&'a str, GenerateError> {
    let field = |name: &str| format!("networking.outbound[{index}]{name}");
    let service = outbound
        .tags
        .get(SERVICE_TAG)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| GenerateError::MissingService {
            field: field(".tags"),
        })?;
    let address_text = outbound
        .address
        .as_deref()
        .unwrap_or(DEFAULT_OUTBOUND_ADDRESS);
    let address = parse_ip(address_text, || field(".address"))?;
    let port = check_port(outbound.port, || field(".port"))?;

    out.add_cluster(eds_cluster(proxy, service))?;
    let chain = FilterChain {
        filters: vec![tcp_proxy_filter(stat_name(service), service)],
        ..Default::default()
    };
    let name = format!("outbound:{address_text}:{port}");
    out.add_listener(listener(
        name,
        address,
        port,
        TrafficDirection::Outbound,
        chain,
    ))?;
    Ok(service)
}

/// An EDS cluster named after the service, with upstream mTLS when the mesh
/// has it.
fn eds_cluster(proxy: &Proxy, service: &str) -> Cluster {
    Cluster {
        name: service.to_owned(),
        connect_timeout: Some(connect_timeout()),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Eds as i32,
        )),
        eds_cluster_config: Some(cluster::EdsClusterConfig {
            eds_config: Some(tls::ads()),
            service_name: String::new(),
        }),
        transport_socket: proxy
            .mtls
            .then(|| tls::upstream_transport_socket(proxy.mesh, service)),
        ..Default::default()
    }
}

/// One assignment per service in `services`, sorted by service: every inbound
/// of every Dataplane of `mesh` that carries the service tag and is not
/// marked unready. Inbounds without a usable IP address or port are left out
/// rather than failing the proxy that only reaches them.
pub(crate) fn endpoints(
    mesh: &str,
    services: &BTreeSet<&str>,
    dataplanes: &[Resource],
) -> Vec<ClusterLoadAssignment> {
    let mut found: BTreeMap<&str, BTreeSet<(IpAddr, u32)>> =
        services.iter().map(|s| (*s, BTreeSet::new())).collect();
    for dataplane in dataplanes {
        let Spec::Dataplane(spec) = &dataplane.spec else {
            continue;
        };
        if dataplane.mesh.as_deref() != Some(mesh) {
            continue;
        }
        for inbound in &spec.networking.inbound {
            let Some(service) = inbound.tags.get(SERVICE_TAG) else {
                continue;
            };
            let Some(set) = found.get_mut(service.as_str()) else {
                continue;
            };
            if inbound.health.as_ref().is_some_and(|h| !h.ready) {
                continue;
            }
            let address = inbound
                .address
                .as_deref()
                .unwrap_or(&spec.networking.address);
            if let (Ok(ip), Ok(port)) = (
                parse_ip(address, String::new),
                check_port(inbound.port, String::new),
            ) {
                set.insert((ip, port));
            }
        }
    }
    found
        .into_iter()
        .map(|(service, set)| load_assignment(service, set))
        .collect()
}
