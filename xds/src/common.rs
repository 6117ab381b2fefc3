//! Building blocks shared by inbounds and outbounds: addresses, listeners,
//! the tcp_proxy filter, and the name-keyed collections that keep the output
//! sorted and free of duplicates.

use std::collections::BTreeMap;
use std::net::IpAddr;

use xds_api::pb::envoy::config::cluster::v3::Cluster;
use xds_api::pb::envoy::config::core::v3::{
    address, socket_address::PortSpecifier, Address, SocketAddress, TrafficDirection,
};
use xds_api::pb::envoy::config::endpoint::v3::{
    lb_endpoint::HostIdentifier, ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
};
use xds_api::pb::envoy::config::listener::v3::{filter, Filter, FilterChain, Listener};
use xds_api::pb::google::protobuf::Duration;

use crate::extensions::{tcp_proxy::ClusterSpecifier, to_any, TcpProxy};
use crate::GenerateError;

/// Envoy's name for the TCP proxy network filter.
pub const TCP_PROXY_FILTER: &str = "envoy.filters.network.tcp_proxy";
/// Envoy's name for the RBAC network filter.
pub const RBAC_FILTER: &str = "envoy.filters.network.rbac";

/// Connect timeout of every cluster, as Kuma's default.
pub(crate) fn connect_timeout() -> Duration {
    Duration {
        seconds: 5,
        nanos: 0,
    }
}

/// Checks that `text` is an IP address (Envoy binds and connects to IPs only,
/// it does not resolve names in listeners or STATIC/EDS clusters).
pub(crate) fn parse_ip(
    text: &str,
    field: impl FnOnce() -> String,
) -> Result<IpAddr, GenerateError> {
    text.parse().map_err(|_| GenerateError::InvalidAddress {
        field: field(),
        address: text.to_owned(),
    })
}

/// Checks that `port` is a usable TCP port.
pub(crate) fn check_port(port: u32, field: impl FnOnce() -> String) -> Result<u32, GenerateError> {
    if (1..=65535).contains(&port) {
        Ok(port)
    } else {
        Err(GenerateError::InvalidPort {
            field: field(),
            port,
        })
    }
}

pub(crate) fn socket_address(ip: IpAddr, port: u32) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.to_string(),
            port_specifier: Some(PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
    }
}

/// Endpoints of one cluster, in the order given, in one locality. A cluster
/// with no endpoints still gets its (empty) assignment, so Envoy finishes
/// warming it.
pub(crate) fn load_assignment(
    cluster_name: &str,
    endpoints: impl IntoIterator<Item = (IpAddr, u32)>,
) -> ClusterLoadAssignment {
    weighted_load_assignment(cluster_name, endpoints.into_iter().map(|(i, p)| (i, p, 1)))
}

/// Like [`load_assignment`], with a load-balancing weight per endpoint (a
/// zone ingress stands for that many instances); weight 1 is left implicit.
pub(crate) fn weighted_load_assignment(
    cluster_name: &str,
    endpoints: impl IntoIterator<Item = (IpAddr, u32, u32)>,
) -> ClusterLoadAssignment {
    let lb_endpoints: Vec<_> = endpoints
        .into_iter()
        .map(|(ip, port, weight)| LbEndpoint {
            host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
                address: Some(socket_address(ip, port)),
                ..Default::default()
            })),
            load_balancing_weight: (weight != 1)
                .then_some(xds_api::pb::google::protobuf::UInt32Value { value: weight }),
            ..Default::default()
        })
        .collect();
    ClusterLoadAssignment {
        cluster_name: cluster_name.to_owned(),
        endpoints: if lb_endpoints.is_empty() {
            Vec::new()
        } else {
            vec![LocalityLbEndpoints {
                lb_endpoints,
                ..Default::default()
            }]
        },
        ..Default::default()
    }
}

/// A stat prefix from a name: anything but `[A-Za-z0-9_.-]` becomes `_`.
pub(crate) fn stat_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

pub(crate) fn tcp_proxy_filter(stat_prefix: String, cluster: &str) -> Filter {
    let config = TcpProxy {
        stat_prefix,
        cluster_specifier: Some(ClusterSpecifier::Cluster(cluster.to_owned())),
    };
    typed_filter(TCP_PROXY_FILTER, to_any(&config))
}

pub(crate) fn typed_filter(name: &str, config: xds_api::pb::google::protobuf::Any) -> Filter {
    Filter {
        name: name.to_owned(),
        config_type: Some(filter::ConfigType::TypedConfig(config)),
    }
}

/// A listener on `ip:port` with one filter chain.
pub(crate) fn listener(
    name: String,
    ip: IpAddr,
    port: u32,
    direction: TrafficDirection,
    chain: FilterChain,
) -> Listener {
    Listener {
        name,
        address: Some(socket_address(ip, port)),
        filter_chains: vec![chain],
        traffic_direction: direction as i32,
        ..Default::default()
    }
}

/// Listeners and clusters by name: sorted output, and a second definition
/// under one name is an error unless it is identical.
#[derive(Default)]
pub(crate) struct Resources {
    pub listeners: BTreeMap<String, Listener>,
    pub clusters: BTreeMap<String, Cluster>,
}

impl Resources {
    pub fn add_listener(&mut self, listener: Listener) -> Result<(), GenerateError> {
        if self.listeners.contains_key(&listener.name) {
            return Err(GenerateError::DuplicateListener {
                name: listener.name,
            });
        }
        self.listeners.insert(listener.name.clone(), listener);
        Ok(())
    }

    pub fn add_cluster(&mut self, cluster: Cluster) -> Result<(), GenerateError> {
        match self.clusters.get(&cluster.name) {
            Some(existing) if *existing == cluster => Ok(()),
            Some(_) => Err(GenerateError::ConflictingCluster { name: cluster.name }),
            None => {
                self.clusters.insert(cluster.name.clone(), cluster);
                Ok(())
            }
        }
    }
}

/// A healthy inbound with a usable IP address and port: an endpoint of
/// its service.
pub(crate) struct Reachable<'a> {
    pub mesh: &'a str,
    pub service: &'a str,
    pub ip: IpAddr,
    pub port: u32,
    pub tags: &'a api::Tags,
}

/// Every reachable inbound of `dataplanes` that carries a service tag and
/// is not marked unready. Inbounds without a usable IP address or port are
/// left out rather than failing the proxy that only reaches them.
pub(crate) fn reachable_inbounds(
    dataplanes: &[api::Resource],
) -> impl Iterator<Item = Reachable<'_>> {
    dataplanes.iter().flat_map(|dp| {
        let (api::Spec::Dataplane(spec), Some(mesh)) = (&dp.spec, dp.mesh.as_deref()) else {
            return Vec::new();
        };
        spec.networking
            .inbound
            .iter()
            .filter(|inbound| !inbound.health.as_ref().is_some_and(|h| !h.ready))
            .filter_map(|inbound| {
                let service = inbound.tags.get(api::SERVICE_TAG)?;
                let address = inbound
                    .address
                    .as_deref()
                    .unwrap_or(&spec.networking.address);
                Some(Reachable {
                    mesh,
                    service,
                    ip: parse_ip(address, String::new).ok()?,
                    port: check_port(inbound.port, String::new).ok()?,
                    tags: &inbound.tags,
                })
            })
            .collect()
    })
}
