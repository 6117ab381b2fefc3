//! Envoy configuration for a sidecar, as a pure function: no I/O, no async.
//!
//! Start with [`generate`]: given a [`Snapshot`] of one mesh in one zone
//! (the Mesh, its TrafficPermissions and its Dataplanes) and one Dataplane,
//! it returns the [`ProxyResources`] of that Dataplane's Envoy, following
//! Kuma's Universal mode: one inbound listener per inbound (mesh TLS
//! requiring a client certificate, an RBAC network filter built from the
//! selected TrafficPermission, then tcp_proxy to `localhost:<servicePort>`),
//! one outbound listener per outbound (tcp_proxy to an EDS cluster named
//! after the service, with upstream TLS, Kuma's SNI and a SPIFFE SAN check),
//! and the endpoints of those clusters from the snapshot's Dataplanes. With
//! mTLS off (no `mtls.enabledBackend`) there is no TLS and no RBAC. The
//! output is sorted by name, so equal inputs give byte-identical resources.
//! [`secrets`] builds the SDS secrets a mesh's proxies reference by
//! [`identity_secret_name`] and [`ca_secret_name`]; [`encode`] and
//! [`encode_secrets`] wrap everything in `Any` once, in [`type_urls::ORDER`].
//!
//! `xds-api` lacks a few Envoy messages (tcp_proxy, network RBAC,
//! tls_inspector, the TLS transport socket contexts); [`extensions`] defines
//! them with field numbers from Envoy's `.proto` files.
//!
//! What it does not do: serve xDS, track versions or diff what changed
//! (the zone control plane does), issue certificates (the `certs` crate),
//! cross-zone endpoints through zone ingresses, or HTTP routing: every
//! listener is TCP.

mod common;
mod error;
pub mod extensions;
mod inbound;
pub mod ingress;
mod outbound;
mod rbac;
mod tls;

use std::collections::BTreeSet;

use api::{DataplaneNetworking, Resource, Spec};
use xds_api::pb::envoy::config::cluster::v3::Cluster;
use xds_api::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use xds_api::pb::envoy::config::listener::v3::Listener;
use xds_api::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
use xds_api::pb::google::protobuf::Any;

pub use common::{RBAC_FILTER, TCP_PROXY_FILTER};
pub use error::GenerateError;
pub use extensions::to_any;
pub use inbound::local_cluster_name;
pub use tls::{
    ca_secret_name, identity_secret_name, kuma_tag_uri, secrets, sni, spiffe_id,
    TLS_TRANSPORT_SOCKET,
};

/// What the configuration of one proxy depends on: one mesh in one zone.
#[derive(Debug, Clone, Copy)]
pub struct Snapshot<'a> {
    /// The zone this control plane serves: ingresses of this zone are not
    /// used as endpoints.
    pub zone: &'a str,
    /// The Mesh of the dataplane (`Spec::Mesh`).
    pub mesh: &'a Resource,
    /// The TrafficPermissions of that mesh; other resources are ignored.
    pub traffic_permissions: &'a [Resource],
    /// Every Dataplane of that mesh in this zone, the proxy itself included:
    /// the source of endpoints. Other resources and meshes are ignored.
    pub dataplanes: &'a [Resource],
    /// ZoneIngresses (of every zone; those of `zone` are skipped). Their
    /// `availableServices` become cross-zone endpoints, weighted by instance
    /// count, when the mesh has mTLS. Advertised addresses must be IPs
    /// (the zone CP resolves hostnames before generating).
    pub zone_ingresses: &'a [Resource],
}

/// The Envoy resources of one proxy, each list sorted by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProxyResources {
    pub listeners: Vec<Listener>,
    pub clusters: Vec<Cluster>,
    pub endpoints: Vec<ClusterLoadAssignment>,
}

/// Type URLs of the resources the ADS server sends.
pub mod type_urls {
    pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
    pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
    pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
    /// Not generated yet (every listener is TCP); here for the ADS order.
    pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
    pub const SECRET: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

    /// Envoy's make-before-break order for pushing over ADS: clusters, then
    /// their endpoints, then the listeners that use them, then routes, then
    /// secrets.
    pub const ORDER: [&str; 5] = [CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET];
}

/// The proxy being generated, with what every part of it needs.
pub(crate) struct Proxy<'a> {
    pub mesh: &'a str,
    pub mtls: bool,
    pub networking: &'a DataplaneNetworking,
    pub permissions: &'a [Resource],
}

/// Generates the listeners, clusters and endpoints of `dataplane`'s Envoy.
pub fn generate(
    snapshot: &Snapshot,
    dataplane: &Resource,
) -> Result<ProxyResources, GenerateError> {
    let (mut resources, services) = generate_parts(snapshot, dataplane)?;
    let services: BTreeSet<&str> = services.iter().map(String::as_str).collect();
    resources.endpoints = endpoints_of(snapshot, &services);
    Ok(resources)
}

/// The listeners and clusters of `dataplane`'s Envoy (no endpoints), and
/// the services its outbounds reach. A control plane with many proxies
/// computes each service's endpoints once with [`endpoints_of`] (they
/// depend on the snapshot only) and shares them.
pub fn generate_parts(
    snapshot: &Snapshot,
    dataplane: &Resource,
) -> Result<(ProxyResources, BTreeSet<String>), GenerateError> {
    let proxy = proxy(snapshot, dataplane)?;
    let mut out = common::Resources::default();
    for (index, inbound) in proxy.networking.inbound.iter().enumerate() {
        inbound::add(&proxy, index, inbound, &mut out)?;
    }
    let mut services = BTreeSet::new();
    for (index, outbound) in proxy.networking.outbound.iter().enumerate() {
        services.insert(outbound::add(&proxy, index, outbound, &mut out)?.to_owned());
    }
    let resources = ProxyResources {
        listeners: out.listeners.into_values().collect(),
        clusters: out.clusters.into_values().collect(),
        endpoints: Vec::new(),
    };
    Ok((resources, services))
}

/// The endpoints of `services` in the snapshot's mesh: local inbounds and,
/// with mTLS, other zones' ingresses. Sorted by service.
pub fn endpoints_of(snapshot: &Snapshot, services: &BTreeSet<&str>) -> Vec<ClusterLoadAssignment> {
    let mtls = matches!(&snapshot.mesh.spec, Spec::Mesh(m) if m.mtls.as_ref().and_then(|t| t.enabled_backend.as_deref()).is_some_and(|b| !b.is_empty()));
    outbound::endpoints(
        &snapshot.mesh.name,
        services,
        snapshot.dataplanes,
        if mtls {
            outbound::Remote::Through(snapshot.zone, snapshot.zone_ingresses)
        } else {
            outbound::Remote::None
        },
    )
}

/// Checks the inputs' types and meshes and gathers what generation needs.
fn proxy<'a>(snapshot: &Snapshot<'a>, dataplane: &'a Resource) -> Result<Proxy<'a>, GenerateError> {
    let Spec::Mesh(mesh_spec) = &snapshot.mesh.spec else {
        return Err(wrong_type(snapshot.mesh, "Mesh"));
    };
    let Spec::Dataplane(spec) = &dataplane.spec else {
        return Err(wrong_type(dataplane, "Dataplane"));
    };
    let mesh = snapshot.mesh.name.as_str();
    if dataplane.mesh.as_deref() != Some(mesh) {
        return Err(GenerateError::MeshMismatch {
            dataplane: dataplane.name.clone(),
            found: dataplane.mesh.clone().unwrap_or_default(),
            expected: mesh.to_owned(),
        });
    }
    let mtls = mesh_spec
        .mtls
        .as_ref()
        .and_then(|m| m.enabled_backend.as_deref())
        .is_some_and(|b| !b.is_empty());
    Ok(Proxy {
        mesh,
        mtls,
        networking: &spec.networking,
        permissions: snapshot.traffic_permissions,
    })
}

fn wrong_type(resource: &Resource, expected: &'static str) -> GenerateError {
    GenerateError::WrongType {
        name: resource.name.clone(),
        found: resource.ty().name(),
        expected,
    }
}

/// Every resource encoded once as `(type_url, name, Any)`, in
/// [`type_urls::ORDER`] (clusters, endpoints, listeners), each kind sorted
/// by name.
pub fn encode(resources: &ProxyResources) -> Vec<(String, String, Any)> {
    let clusters = resources
        .clusters
        .iter()
        .map(|c| (c.name.clone(), to_any(c)));
    let endpoints = resources
        .endpoints
        .iter()
        .map(|e| (e.cluster_name.clone(), to_any(e)));
    let listeners = resources
        .listeners
        .iter()
        .map(|l| (l.name.clone(), to_any(l)));
    clusters
        .chain(endpoints)
        .chain(listeners)
        .map(|(name, any)| (any.type_url.clone(), name, any))
        .collect()
}

/// Secrets encoded as `(type_url, name, Any)`, in the order given.
pub fn encode_secrets(secrets: &[Secret]) -> Vec<(String, String, Any)> {
    secrets
        .iter()
        .map(|s| (type_urls::SECRET.to_owned(), s.name.clone(), to_any(s)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Name;

    const MESH: &str = "type: Mesh\nname: default\n";

    fn resource(yaml: &str) -> Resource {
        let value = api::parse_documents(yaml)
            .expect("YAML")
            .pop()
            .expect("one document");
        Resource::from_value(value).expect("resource")
    }

    fn dataplane(networking: &str) -> Resource {
        resource(&format!(
            "type: Dataplane\nmesh: default\nname: dp-1\nnetworking:\n{networking}"
        ))
    }

    fn run(mesh: &Resource, dp: &Resource) -> Result<ProxyResources, GenerateError> {
        let snapshot = Snapshot {
            zone: "zone-1",
            mesh,
            traffic_permissions: &[],
            dataplanes: std::slice::from_ref(dp),
            zone_ingresses: &[],
        };
        generate(&snapshot, dp)
    }

    const INBOUND: &str =
        "  address: 10.0.0.1\n  inbound:\n  - port: 8080\n    tags: {kuma.io/service: web}\n";

    #[test]
    fn type_urls_match_the_messages() {
        assert_eq!(type_urls::LISTENER, Listener::type_url());
        assert_eq!(type_urls::CLUSTER, Cluster::type_url());
        assert_eq!(type_urls::ENDPOINT, ClusterLoadAssignment::type_url());
        assert_eq!(type_urls::SECRET, Secret::type_url());
        assert_eq!(
            type_urls::ROUTE,
            xds_api::pb::envoy::config::route::v3::RouteConfiguration::type_url()
        );
    }

    #[test]
    fn encode_secrets_keeps_names_and_types() {
        let encoded = encode_secrets(&secrets("m", "C", "K", "A"));
        let names: Vec<_> = encoded
            .iter()
            .map(|(u, n, a)| (u.as_str(), n.as_str(), a.type_url.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                (
                    type_urls::SECRET,
                    "identity_cert:secret:m",
                    type_urls::SECRET
                ),
                (type_urls::SECRET, "mesh_ca:secret:m", type_urls::SECRET)
            ]
        );
    }

    #[test]
    fn refuses_inputs_of_the_wrong_type_or_mesh() {
        let mesh = resource(MESH);
        let dp = dataplane(INBOUND);
        assert!(matches!(
            run(&dp, &dp),
            Err(GenerateError::WrongType {
                expected: "Mesh",
                ..
            })
        ));
        assert!(matches!(
            run(&mesh, &mesh),
            Err(GenerateError::WrongType {
                expected: "Dataplane",
                ..
            })
        ));
        let other = resource("type: Mesh\nname: other\n");
        assert_eq!(
            run(&other, &dp).map(|_| ()).unwrap_err().to_string(),
            "dataplane \"dp-1\" is in mesh \"default\", but the snapshot is of mesh \"other\""
        );
    }

    #[test]
    fn refuses_a_hostname_where_envoy_needs_an_ip() {
        let err = run(
            &resource(MESH),
            &dataplane(&INBOUND.replace("10.0.0.1", "web.local")),
        );
        assert_eq!(
            err.map(|_| ()).unwrap_err(),
            GenerateError::InvalidAddress {
                field: "networking.address".into(),
                address: "web.local".into()
            }
        );
    }

    #[test]
    fn refuses_bad_ports_and_missing_service() {
        let mesh = resource(MESH);
        let err = run(&mesh, &dataplane(&INBOUND.replace("8080", "70000")));
        assert_eq!(
            err.map(|_| ()).unwrap_err().to_string(),
            "networking.inbound[0].port: port 70000 is not in 1..=65535"
        );
        let no_service = format!("{INBOUND}  outbound:\n  - port: 10001\n    tags: {{team: a}}\n");
        assert_eq!(
            run(&mesh, &dataplane(&no_service)).map(|_| ()).unwrap_err(),
            GenerateError::MissingService {
                field: "networking.outbound[0].tags".into()
            }
        );
    }

    #[test]
    fn refuses_two_listeners_on_one_address() {
        let twice = format!(
            "{INBOUND}  outbound:\n  - port: 10001\n    tags: {{kuma.io/service: a}}\n  - port: 10001\n    tags: {{kuma.io/service: b}}\n"
        );
        assert_eq!(
            run(&resource(MESH), &dataplane(&twice))
                .map(|_| ())
                .unwrap_err(),
            GenerateError::DuplicateListener {
                name: "outbound:127.0.0.1:10001".into()
            }
        );
    }

    #[test]
    fn refuses_one_service_port_at_two_service_addresses() {
        let two = "  address: 10.0.0.1\n  inbound:\n  - port: 8080\n    servicePort: 80\n    tags: {kuma.io/service: a}\n  - port: 8081\n    servicePort: 80\n    serviceAddress: 127.0.0.2\n    tags: {kuma.io/service: b}\n";
        assert_eq!(
            run(&resource(MESH), &dataplane(two))
                .map(|_| ())
                .unwrap_err(),
            GenerateError::ConflictingCluster {
                name: "localhost:80".into()
            }
        );
    }

    #[test]
    fn empty_enabled_backend_means_mtls_off() {
        let mesh = resource("type: Mesh\nname: default\nmtls:\n  enabledBackend: \"\"\n");
        let out = run(&mesh, &dataplane(INBOUND)).expect("generate");
        let chain = &out.listeners[0].filter_chains[0];
        assert!(chain.transport_socket.is_none());
        assert_eq!(chain.filters.len(), 1);
        assert_eq!(chain.filters[0].name, TCP_PROXY_FILTER);
    }
}
