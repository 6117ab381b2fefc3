//! Properties every generated configuration has, checked on every fixture:
//! unique names, every referenced cluster defined, endpoints for every EDS
//! cluster, and byte-identical output for equal inputs in any order.

mod common;

use std::collections::BTreeSet;

use prost::Message;
use xds::extensions::{tcp_proxy::ClusterSpecifier, type_urls as ext_urls, TcpProxy};
use xds::{encode, type_urls, ProxyResources};
use xds_api::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType};
use xds_api::pb::envoy::config::listener::v3::filter::ConfigType;

const CASES: [&str; 7] = [
    "mtls_on",
    "mtls_off",
    "several_inbounds",
    "no_permission",
    "wildcard_sources",
    "zone_source",
    "shared_outbound_service",
];

fn tcp_proxy_clusters(resources: &ProxyResources) -> Vec<String> {
    let mut out = Vec::new();
    for listener in &resources.listeners {
        assert!(!listener.filter_chains.is_empty(), "{}", listener.name);
        for chain in &listener.filter_chains {
            let last = chain.filters.last().expect("a filter");
            assert_eq!(last.name, xds::TCP_PROXY_FILTER, "{}", listener.name);
            let Some(ConfigType::TypedConfig(any)) = &last.config_type else {
                panic!("{}: tcp_proxy without typed_config", listener.name);
            };
            assert_eq!(any.type_url, ext_urls::TCP_PROXY);
            let tcp = TcpProxy::decode(any.value.as_slice()).expect("TcpProxy");
            assert!(!tcp.stat_prefix.is_empty(), "{}", listener.name);
            let Some(ClusterSpecifier::Cluster(cluster)) = tcp.cluster_specifier else {
                panic!("{}: tcp_proxy without cluster", listener.name);
            };
            out.push(cluster);
        }
    }
    out
}

fn assert_sorted_unique<'a>(what: &str, names: impl Iterator<Item = &'a str>) {
    let names: Vec<_> = names.collect();
    let mut sorted = names.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(names, sorted, "{what} are not sorted and unique");
}

#[test]
fn names_are_unique_and_references_resolve() {
    for case in CASES {
        let r = common::load(case).generate("web-1");
        assert_sorted_unique("listeners", r.listeners.iter().map(|l| l.name.as_str()));
        assert_sorted_unique("clusters", r.clusters.iter().map(|c| c.name.as_str()));
        assert_sorted_unique(
            "endpoints",
            r.endpoints.iter().map(|e| e.cluster_name.as_str()),
        );
        let clusters: BTreeSet<_> = r.clusters.iter().map(|c| c.name.clone()).collect();
        for cluster in tcp_proxy_clusters(&r) {
            assert!(clusters.contains(&cluster), "{case}: no cluster {cluster}");
        }
        let eds: BTreeSet<_> = r
            .clusters
            .iter()
            .filter(|c| {
                c.cluster_discovery_type
                    == Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32))
            })
            .map(|c| c.name.clone())
            .collect();
        let assigned: BTreeSet<_> = r.endpoints.iter().map(|e| e.cluster_name.clone()).collect();
        assert_eq!(eds, assigned, "{case}: EDS clusters and assignments differ");
        for c in &r.clusters {
            assert!(c.connect_timeout.is_some(), "{case}: {}", c.name);
        }
    }
}

#[test]
fn equal_inputs_in_any_order_encode_to_equal_bytes() {
    for case in CASES {
        let input = common::load(case);
        let first = encode(&input.generate("web-1"));
        let mut reversed = common::load(case);
        reversed.dataplanes.reverse();
        reversed.traffic_permissions.reverse();
        let second = encode(&reversed.generate("web-1"));
        assert_eq!(first, second, "{case}");
    }
}

#[test]
fn encode_follows_make_before_break_order() {
    let resources = common::load("mtls_on").generate("web-1");
    let encoded = encode(&resources);
    let n = resources.listeners.len() + resources.clusters.len() + resources.endpoints.len();
    assert_eq!(encoded.len(), n);
    let rank = |url: &str| {
        type_urls::ORDER
            .iter()
            .position(|u| *u == url)
            .expect("known")
    };
    let ranks: Vec<_> = encoded.iter().map(|(url, _, _)| rank(url)).collect();
    assert!(ranks.windows(2).all(|w| w[0] <= w[1]), "{ranks:?}");
    for (url, _, any) in &encoded {
        assert_eq!(url, &any.type_url);
    }
    let names: Vec<_> = encoded.iter().map(|(_, n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "backend",
            "localhost:80",
            "backend",
            "inbound:10.0.0.1:8080",
            "outbound:127.0.0.1:10001"
        ]
    );
}
