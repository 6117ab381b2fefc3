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
    check_port, connect_timeout, listener, parse_ip, reachable_inbounds, stat_name,
    tcp_proxy_filter, weighted_load_assignment, Resources,
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

/// Where cross-zone endpoints come from.
pub(crate) enum Remote<'a> {
    /// None (the mesh has no mTLS: cross-zone traffic needs it, as in Kuma).
    None,
    /// The ingresses of zones other than the first field.
    Through(&'a str, &'a [Resource]),
}

/// One assignment per service in `services`, sorted by service: every inbound
/// of every Dataplane of `mesh` that carries the service tag and is not
/// marked unready, then every other zone's ingress that offers the service,
/// weighted by its instance count. Inbounds or ingresses without a usable IP
/// address or port are left out rather than failing the proxy that only
/// reaches them.
pub(crate) fn endpoints(
    mesh: &str,
    services: &BTreeSet<&str>,
    dataplanes: &[Resource],
    remote: Remote,
) -> Vec<ClusterLoadAssignment> {
    let mut found: BTreeMap<&str, BTreeSet<(IpAddr, u32, u32)>> =
        services.iter().map(|s| (*s, BTreeSet::new())).collect();
    for r in reachable_inbounds(dataplanes).filter(|r| r.mesh == mesh) {
        if let Some(set) = found.get_mut(r.service) {
            set.insert((r.ip, r.port, 1));
        }
    }
    if let Remote::Through(zone, ingresses) = remote {
        for (service, set) in found.iter_mut() {
            set.extend(through_ingresses(zone, ingresses, mesh, service));
        }
    }
    found
        .into_iter()
        .map(|(service, set)| weighted_load_assignment(service, set))
        .collect()
}

/// The other zones' ingresses offering `service` of `mesh`: their advertised
/// address and port, weighted by the instances behind them.
fn through_ingresses<'a>(
    zone: &'a str,
    ingresses: &'a [Resource],
    mesh: &'a str,
    service: &'a str,
) -> impl Iterator<Item = (IpAddr, u32, u32)> + 'a {
    ingresses.iter().filter_map(move |r| {
        let Spec::ZoneIngress(zi) = &r.spec else {
            return None;
        };
        let its_zone = zi
            .zone
            .as_deref()
            .or(r.labels.get(api::ZONE_TAG).map(String::as_str));
        if its_zone.map_or(true, |z| z == zone) {
            return None;
        }
        let instances: u32 = zi
            .available_services
            .iter()
            .filter(|a| {
                a.mesh == mesh && a.tags.get(SERVICE_TAG).map(String::as_str) == Some(service)
            })
            .map(|a| a.instances)
            .sum();
        if instances == 0 {
            return None;
        }
        let n = &zi.networking;
        let address = n.advertised_address.as_deref().unwrap_or(&n.address);
        let port = n.advertised_port.unwrap_or(n.port);
        let ip = parse_ip(address, String::new).ok()?;
        let port = check_port(port, String::new).ok()?;
        Some((ip, port, instances))
    })
}
