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
    /// `sotw` or `delta`; default [`AdsVariant::default`].
    #[serde(default)]
    ads_variant: Option<String>,
}

/// The ADS protocol variant the bootstrap tells Envoy to speak.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AdsVariant {
    /// State of the world (`api_type: GRPC`): every response carries all
    /// resources of its type.
    Sotw,
    /// Incremental (`api_type: DELTA_GRPC`): responses carry only what
    /// changed. Kuma's default too.
    #[default]
    Delta,
}

impl AdsVariant {
    /// Parses the `adsVariant` of a bootstrap request.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "sotw" => Some(Self::Sotw),
            "delta" => Some(Self::Delta),
            _ => None,
        }
    }

    /// Envoy's `ads_config.api_type`.
    pub fn api_type(self) -> &'static str {
        match self {
            Self::Sotw => "GRPC",
            Self::Delta => "DELTA_GRPC",
        }
    }
}

/// Where a zone ingress listens when its Dataplane file does not say.
const DEFAULT_INGRESS_PORT: u32 = 10000;

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
    let variant = match req.ads_variant.as_deref() {
        None => AdsVariant::default(),
        Some(v) => AdsVariant::parse(v).ok_or_else(|| {
            ApiError::invalid(
                "adsVariant",
                format!("must be \"sotw\" or \"delta\", not {v:?}"),
            )
        })?,
    };
    let mut dp = Resource::from_value(req.dataplane)?;
    dp.validate()?;
    let checked = match dp.ty() {
        ResourceType::Dataplane => s.auth.check_registration(&dp, &req.token),
        ResourceType::ZoneIngress => s.auth.check_ingress(&s.zone, &req.token),
        _ => {
            return Err(ApiError::invalid(
                "dataplane.type",
                "must be Dataplane or ZoneIngress",
            ))
        }
    };
    checked.map_err(|e| {
        if s.auth.awaiting_global_keys() {
            tracing::info!(proxy = %dp.key(), "registration before the global's token keys arrived; asking to retry");
            return ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "Service Unavailable",
                format!("this zone has not yet received the global's token keys over KDS; retry shortly ({e})"),
            );
        }
        tracing::warn!(proxy = %dp.key(), reason = %e, "refused a proxy registration");
        ApiError::new(StatusCode::FORBIDDEN, "Forbidden", e)
    })?;
    dp.labels.insert(api::ORIGIN_LABEL.into(), "zone".into());
    dp.labels.insert(api::ZONE_TAG.into(), s.zone.clone());
    if let api::Spec::ZoneIngress(zi) = &mut dp.spec {
        zi.zone = Some(s.zone.clone());
        if zi.networking.port == 0 {
            zi.networking.port = DEFAULT_INGRESS_PORT;
        }
    }
    let key = dp.key();
    let store = s.store.clone();
    tokio::task::spawn_blocking(move || store.put(dp, Precondition::None))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))??;
    tracing::info!(dataplane = %key, "dataplane registered");
    let (host, port) = split_host_port(&req.cp_address)
        .ok_or_else(|| ApiError::invalid("cpAddress", "must be host:port"))?;
    let node_id = match &key.mesh {
        Some(mesh) => format!("{mesh}.{}", key.name),
        None => format!("{}{}", super::ads::INGRESS_NODE_PREFIX, key.name),
    };
    let bootstrap = envoy_bootstrap(
        &node_id,
        host,
        port,
        &s.ca_pem,
        req.token.trim(),
        req.admin_port,
        variant,
    );
    Ok(respond(StatusCode::OK, &headers, &bootstrap))
}

fn split_host_port(addr: &str) -> Option<(&str, u16)> {
    let (h, p) = addr.rsplit_once(':')?;
    Some((h.trim_matches(['[', ']']), p.parse().ok()?))
}

/// Envoy's bootstrap: node, admin on loopback, ADS (state of the world or
/// incremental, per `variant`) over TLS to this server with the token as
/// metadata.
pub fn envoy_bootstrap(
    node_id: &str,
    host: &str,
    port: u16,
    ca_pem: &str,
    token: &str,
    admin_port: u16,
    variant: AdsVariant,
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
                "api_type": variant.api_type(),
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
    /// Absent (or null) for a zone ingress.
    #[serde(default)]
    mesh: Option<String>,
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
    let key = match req.mesh.as_deref().filter(|m| !m.is_empty()) {
        Some(mesh) => api::ResourceKey::scoped(ResourceType::Dataplane, mesh, &req.name),
        None => api::ResourceKey::global(ResourceType::ZoneIngress, &req.name),
    };
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

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> BootstrapState {
        let store = Store::temporary().expect("store");
        let key = certs::SigningKey::generate().expect("key");
        BootstrapState {
            store: store.clone(),
            zone: "zone-1".into(),
            auth: DataplaneAuth::new(store, key),
            ca_pem: "CA".into(),
        }
    }

    #[test]
    fn the_variant_sets_envoys_api_type() {
        for (variant, api_type) in [
            (AdsVariant::Sotw, "GRPC"),
            (AdsVariant::Delta, "DELTA_GRPC"),
        ] {
            let b = envoy_bootstrap("m.n", "cp.example", 5678, "CA", "t", 9901, variant);
            let ads = &b["dynamic_resources"]["ads_config"];
            assert_eq!(ads["api_type"], api_type);
            assert_eq!(ads["transport_api_version"], "V3");
        }
        assert_eq!(AdsVariant::default(), AdsVariant::Delta);
        assert_eq!(AdsVariant::parse("sotw"), Some(AdsVariant::Sotw));
        assert_eq!(AdsVariant::parse("delta"), Some(AdsVariant::Delta));
        assert_eq!(AdsVariant::parse("Delta"), None);
    }

    #[tokio::test]
    async fn an_unknown_variant_is_a_400_naming_the_field() {
        let mut headers = HeaderMap::new();
        headers.insert(
            axum::http::header::CONTENT_TYPE,
            "application/json".parse().expect("header"),
        );
        let body = json!({
            "dataplane": {"type": "Dataplane", "mesh": "default", "name": "web-1"},
            "token": "t",
            "cpAddress": "127.0.0.1:5678",
            "adsVariant": "rest",
        });
        let err = bootstrap(State(state()), headers, Body::from(body.to_string()))
            .await
            .expect_err("refused");
        assert_eq!(err.status, 400);
        assert_eq!(err.invalid_parameters[0].field, "adsVariant");
        assert!(err.invalid_parameters[0].reason.contains("rest"), "{err:?}");
    }

    #[tokio::test]
    async fn a_federated_zone_without_the_globals_keys_asks_to_retry() {
        let mut st = state();
        st.auth = st.auth.clone().federated(true);
        let other = certs::SigningKey::generate().expect("key");
        let tags = std::collections::BTreeMap::from([(
            "kuma.io/service".to_owned(),
            std::collections::BTreeSet::from(["web".to_owned()]),
        )]);
        let token = certs::issue_dataplane_token(
            &other,
            "default",
            &tags,
            std::time::Duration::from_secs(60),
            crate::now_unix(),
        )
        .expect("token");
        let body = json!({
            "dataplane": {"type": "Dataplane", "mesh": "default", "name": "web-1",
                "networking": {"address": "127.0.0.1", "inbound": [
                    {"port": 8080, "servicePort": 80, "tags": {"kuma.io/service": "web"}}]}},
            "token": token,
            "cpAddress": "127.0.0.1:5678",
        });
        let post = |st: BootstrapState| {
            let mut headers = HeaderMap::new();
            headers.insert(
                axum::http::header::CONTENT_TYPE,
                "application/json".parse().expect("header"),
            );
            bootstrap(State(st), headers, Body::from(body.to_string()))
        };
        let err = post(st.clone()).await.expect_err("not yet");
        assert_eq!(err.status, 503, "{err:?}");
        // Once the global's key has arrived, a token it did not sign is refused.
        let global = certs::SigningKey::generate().expect("key");
        let key = api::Resource::new(
            "k",
            None,
            api::Spec::DataplaneTokenKey(api::DataplaneTokenKeySpec {
                public_key: global.verifying_key().to_base64(),
            }),
        );
        st.store.put(key, Precondition::None).expect("put");
        let err = post(st).await.expect_err("refused");
        assert_eq!(err.status, 403, "{err:?}");
    }
}
