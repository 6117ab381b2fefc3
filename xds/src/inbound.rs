//! One inbound: its listener (TLS, RBAC, tcp_proxy) and the local cluster
//! that reaches the application.

use std::net::IpAddr;

use api::{selector::select_traffic_permission, Inbound};
use xds_api::pb::envoy::config::cluster::v3::{cluster, Cluster};
use xds_api::pb::envoy::config::core::v3::TrafficDirection;
use xds_api::pb::envoy::config::listener::v3::FilterChain;

use crate::common::{
    check_port, connect_timeout, listener, load_assignment, parse_ip, stat_name, tcp_proxy_filter,
    typed_filter, Resources, RBAC_FILTER,
};
use crate::extensions::{to_any, NetworkRbac};
use crate::{rbac, tls, GenerateError, Proxy};

/// Where the application behind an inbound listens when the inbound does not
/// say (`serviceAddress`).
const DEFAULT_SERVICE_ADDRESS: &str = "127.0.0.1";

/// Name of the cluster that reaches the application on `service_port`.
pub fn local_cluster_name(service_port: u32) -> String {
    format!("localhost:{service_port}")
}

/// Adds the listener and local cluster of `networking.inbound[index]`.
pub(crate) fn add(
    proxy: &Proxy,
    index: usize,
    inbound: &Inbound,
    out: &mut Resources,
) -> Result<(), GenerateError> {
    let field = |name: &str| format!("networking.inbound[{index}].{name}");
    let (address_text, address_field) = match &inbound.address {
        Some(a) => (a.as_str(), field("address")),
        None => (
            proxy.networking.address.as_str(),
            "networking.address".into(),
        ),
    };
    let address = parse_ip(address_text, || address_field)?;
    let port = check_port(inbound.port, || field("port"))?;
    let service_port = check_port(inbound.service_port.unwrap_or(port), || {
        field("servicePort")
    })?;
    let service_address = parse_ip(
        inbound
            .service_address
            .as_deref()
            .unwrap_or(DEFAULT_SERVICE_ADDRESS),
        || field("serviceAddress"),
    )?;

    let cluster_name = local_cluster_name(service_port);
    out.add_cluster(local_cluster(&cluster_name, service_address, service_port))?;

    let mut chain = FilterChain::default();
    if proxy.mtls {
        let policy = select_traffic_permission(&inbound.tags, proxy.permissions);
        let config = NetworkRbac {
            rules: Some(rbac::rules(proxy.mesh, policy)),
            stat_prefix: format!("inbound_{port}."),
        };
        chain
            .filters
            .push(typed_filter(RBAC_FILTER, to_any(&config)));
        chain.transport_socket = Some(tls::downstream_transport_socket(proxy.mesh));
    }
    chain
        .filters
        .push(tcp_proxy_filter(stat_name(&cluster_name), &cluster_name));
    let name = format!("inbound:{address_text}:{port}");
    out.add_listener(listener(
        name,
        address,
        port,
        TrafficDirection::Inbound,
        chain,
    ))
}

/// A STATIC cluster with the one application address.
fn local_cluster(name: &str, ip: IpAddr, port: u32) -> Cluster {
    Cluster {
        name: name.to_owned(),
        connect_timeout: Some(connect_timeout()),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Static as i32,
        )),
        load_assignment: Some(load_assignment(name, [(ip, port)])),
        ..Default::default()
    }
}
