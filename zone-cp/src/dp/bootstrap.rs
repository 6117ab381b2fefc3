//! `POST /bootstrap`: a sidecar registers its Dataplane with its token and
//! gets Envoy's bootstrap, which points Envoy's ADS at this server over TLS
//! (pinned to the dataplane server's CA) with the token as gRPC metadata.

use api::{Resource, ResourceType};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use cp_http::body::{read_value, respond};
use cp_http::error::ApiError;
use serde::Deserialize;
use serde_json::{json, Value};
use store::{Precondition, Store};

use super::tokens::DataplaneAuth;

#[derive(Clone)]
pub struct BootstrapState {
    pub store: Store,
    pub zone: String,
    pub auth: DataplaneAuth,
    /// PEM the bootstrap pins for the ADS connection.
    pub ca_pem: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct BootstrapRequest {
    dataplane: Value,
    token: String,
    /// `host:port` the sidecar reached this server at; Envoy uses the same.
    cp_address: String,
    #[serde(default = "default_admin_port")]
    admin_port: u16,
}

fn default_admin_port() -> u16 {
    9901
}

pub async fn bootstrap(
    State(s): State<BootstrapState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let req: BootstrapRequest = serde_json::from_value(read_value(&headers, body).await?)
        .map_err(|e| ApiError::bad_request(format!("not a bootstrap request: {e}")))?;
    let mut dp = Resource::from_value(req.dataplane)?;
    if dp.ty() != ResourceType::Dataplane {
        return Err(ApiError::invalid("dataplane.type", "must be Dataplane"));
    }
    dp.validate()?;
    s.auth.check_registration(&dp, &req.token).map_err(|e| {
        tracing::warn!(dataplane = %dp.key(), reason = %e, "refused a dataplane registration");
        ApiError::new(StatusCode::FORBIDDEN, "Forbidden", e)
    })?;
    dp.labels.insert(api::ORIGIN_LABEL.into(), "zone".into());
    dp.labels.insert(api::ZONE_TAG.into(), s.zone.clone());
    let key = dp.key();
    let store = s.store.clone();
    tokio::task::spawn_blocking(move || store.put(dp, Precondition::None))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))??;
    tracing::info!(dataplane = %key, "dataplane registered");
    let (host, port) = split_host_port(&req.cp_address)
        .ok_or_else(|| ApiError::invalid("cpAddress", "must be host:port"))?;
    let node_id = format!("{}.{}", key.mesh.clone().unwrap_or_default(), key.name);
    let bootstrap = envoy_bootstrap(
        &node_id,
        host,
        port,
        &s.ca_pem,
        req.token.trim(),
        req.admin_port,
    );
    Ok(respond(StatusCode::OK, &headers, &bootstrap))
}

fn split_host_port(addr: &str) -> Option<(&str, u16)> {
    let (h, p) = addr.rsplit_once(':')?;
    Some((h.trim_matches(['[', ']']), p.parse().ok()?))
}

/// Envoy's bootstrap: node, admin on loopback, ADS (state of the world)
/// over TLS to this server with the token as metadata.
pub fn envoy_bootstrap(
    node_id: &str,
    host: &str,
    port: u16,
    ca_pem: &str,
    token: &str,
    admin_port: u16,
) -> Value {
    let ads = json!({ "ads": {}, "resource_api_version": "V3" });
    let mut tls = json!({
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        "common_tls_context": {
            "alpn_protocols": ["h2"],
            "validation_context": { "trusted_ca": { "inline_string": ca_pem } },
        },
    });
    // SNI carries host names only; an IP address is left out.
    if host.parse::<std::net::IpAddr>().is_err() {
        tls["sni"] = json!(host);
    }
    json!({
        "node": { "id": node_id, "cluster": node_id },
        "admin": { "address": { "socket_address": { "address": "127.0.0.1", "port_value": admin_port } } },
        "dynamic_resources": {
            "ads_config": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "set_node_on_first_message_only": true,
                "grpc_services": [{
                    "envoy_grpc": { "cluster_name": "ads_cluster" },
                    "initial_metadata": [{ "key": "authorization", "value": format!("Bearer {token}") }],
                }],
            },
            "cds_config": ads,
            "lds_config": ads,
        },
        "static_resources": { "clusters": [{
            "name": "ads_cluster",
            "type": "STRICT_DNS",
            "connect_timeout": "1s",
            "typed_extension_protocol_options": {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "explicit_http_config": { "http2_protocol_options": {} },
                },
            },
            "load_assignment": { "cluster_name": "ads_cluster", "endpoints": [{ "lb_endpoints": [{
                "endpoint": { "address": { "socket_address": { "address": host, "port_value": port } } },
            }] }] },
            "transport_socket": {
                "name": "envoy.transport_sockets.tls",
                "typed_config": tls,
            },
        }] },
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeregisterRequest {
    mesh: String,
    name: String,
    token: String,
}

/// `POST /deregister`: a stopping sidecar removes its Dataplane; its token
/// must cover the Dataplane as registered.
pub async fn deregister(
    State(s): State<BootstrapState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let req: DeregisterRequest = serde_json::from_value(read_value(&headers, body).await?)
        .map_err(|e| ApiError::bad_request(format!("not a deregister request: {e}")))?;
    let key = api::ResourceKey::scoped(ResourceType::Dataplane, &req.mesh, &req.name);
    s.auth
        .check_stream(&key, Some(&req.token))
        .map_err(|e| ApiError::new(StatusCode::FORBIDDEN, "Forbidden", e))?;
    let store = s.store.clone();
    let k = key.clone();
    tokio::task::spawn_blocking(move || store.delete(&k, None))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))??;
    tracing::info!(dataplane = %key, "dataplane deregistered");
    Ok(respond(StatusCode::OK, &headers, &json!({})))
}
