//! REST routes only the global has: zone tokens and zone insights. They sit
//! behind the same admin-token auth as the resource API.

use std::sync::Arc;
use std::time::Duration;

use api::{Resource, ResourceKey, ResourceType};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use certs::{SigningKey, ZoneTokenScope};
use cp_http::body::{read_value, respond};
use cp_http::error::ApiError;
use serde::Deserialize;
use serde_json::{json, Value};
use store::Store;

use crate::kds_server::{now_unix, revoked_key};
use crate::zones::Zones;

/// Default lifetime of a zone token, as in Kuma.
const DEFAULT_VALID_FOR: Duration = Duration::from_secs(30 * 86_400);

#[derive(Clone)]
pub struct GlobalState {
    pub store: Store,
    pub zones: Zones,
    pub signing_key: Arc<SigningKey>,
    pub kds_ca_pem: Arc<str>,
}

pub fn routes(state: GlobalState) -> Router {
    Router::new()
        .route("/zones+insights", get(zones_with_insights))
        .route("/zones/:name/_overview", get(zone_overview))
        .route("/tokens/zone", post(issue_zone_token))
        .route("/tokens/zone/revoke", post(revoke_zone_token))
        .with_state(state)
}

fn overview(s: &GlobalState, zone: &Resource) -> Value {
    json!({
        "type": "ZoneOverview",
        "name": zone.name,
        "zone": zone.to_value(),
        "zoneInsight": s.zones.insight(&zone.name),
    })
}

async fn zones_with_insights(
    State(s): State<GlobalState>,
    h: HeaderMap,
) -> Result<Response, ApiError> {
    let zones = s.store.list(ResourceType::Zone, None)?;
    let items: Vec<Value> = zones.iter().map(|z| overview(&s, z)).collect();
    Ok(respond(
        StatusCode::OK,
        &h,
        &json!({ "total": items.len(), "items": items, "next": null }),
    ))
}

async fn zone_overview(
    State(s): State<GlobalState>,
    Path(name): Path<String>,
    h: HeaderMap,
) -> Result<Response, ApiError> {
    let zone = s
        .store
        .get(&ResourceKey::global(ResourceType::Zone, &name))?
        .ok_or_else(|| ApiError::not_found(format!("zone {name:?} not found")))?;
    Ok(respond(StatusCode::OK, &h, &overview(&s, &zone)))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ZoneTokenRequest {
    zone: String,
    #[serde(default)]
    valid_for: Option<String>,
    #[serde(default)]
    scope: Option<String>,
}

fn parse<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let field = e.path().to_string();
        ApiError::invalid(
            if field == "." { "" } else { &field },
            e.into_inner().to_string(),
        )
    })
}

async fn issue_zone_token(
    State(s): State<GlobalState>,
    h: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let req: ZoneTokenRequest = parse(read_value(&h, body).await?)?;
    api::validate_zone_name("zone", &req.zone)?;
    let valid_for = match &req.valid_for {
        None => DEFAULT_VALID_FOR,
        Some(d) => {
            api::duration::parse_duration(d).map_err(|e| ApiError::invalid("validFor", e))?
        }
    };
    let scope = match req.scope.as_deref() {
        None | Some("zone") => ZoneTokenScope::Zone,
        Some("ingress") => ZoneTokenScope::Ingress,
        Some(other) => {
            return Err(ApiError::invalid(
                "scope",
                format!("{other:?} is not a scope; use \"zone\" or \"ingress\""),
            ))
        }
    };
    let token = certs::issue_zone_token(
        &s.signing_key,
        &req.zone,
        scope,
        valid_for,
        &s.kds_ca_pem,
        now_unix(),
    )
    .map_err(|e| ApiError::internal(e.to_string()))?;
    tracing::info!(zone = req.zone, ?scope, ?valid_for, "issued a zone token");
    Ok(([(header::CONTENT_TYPE, "text/plain")], token).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeRequest {
    token: String,
}

async fn revoke_zone_token(
    State(s): State<GlobalState>,
    h: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let req: RevokeRequest = parse(read_value(&h, body).await?)?;
    let keys = [s.signing_key.verifying_key()];
    // Expired tokens need no revocation, but saying so beats an error.
    let claims = certs::read_zone_token_unverified(req.token.trim())
        .map_err(|e| ApiError::invalid("token", e.to_string()))?;
    if let Err(e) = certs::verify_zone_token(&keys, req.token.trim(), claims.iat) {
        return Err(ApiError::invalid(
            "token",
            format!("not a token this global issued: {e}"),
        ));
    }
    let store = s.store.clone();
    let key = revoked_key(&claims.jti);
    let exp = claims.exp.to_string();
    tokio::task::spawn_blocking(move || store.put_meta(&key, exp.as_bytes()))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))??;
    // Streams already open with this token end now; the zone's redial fails.
    s.zones.disconnect(&claims.zone);
    tracing::info!(zone = claims.zone, jti = claims.jti, "revoked a zone token");
    Ok(respond(
        StatusCode::OK,
        &h,
        &json!({ "revoked": claims.jti, "zone": claims.zone }),
    ))
}
