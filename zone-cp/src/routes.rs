//! REST routes only a zone has: a dataplane's live overview and its
//! generated Envoy config, for debugging.

use api::{ResourceKey, ResourceType};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use cp_http::body::respond;
use cp_http::error::ApiError;
use prost::Message;
use serde_json::{json, Value};
use store::Store;

use crate::dp::proxies::Proxies;

#[derive(Clone)]
struct ZoneState {
    store: Store,
    proxies: Proxies,
}

pub fn routes(store: Store, proxies: Proxies) -> Router {
    Router::new()
        .route("/meshes/:mesh/dataplanes/:name/_overview", get(overview))
        .route("/meshes/:mesh/dataplanes/:name/_config", get(config))
        .with_state(ZoneState {
            store: store.clone(),
            proxies,
        })
        .merge(cp_http::insights::routes(store, false))
}

async fn overview(
    State(s): State<ZoneState>,
    Path((mesh, name)): Path<(String, String)>,
    h: HeaderMap,
) -> Result<Response, ApiError> {
    let key = ResourceKey::scoped(ResourceType::Dataplane, &mesh, &name);
    let dp = s
        .store
        .get(&key)?
        .ok_or_else(|| ApiError::not_found(format!("{key} not found")))?;
    let insight = s.proxies.status(&key).unwrap_or_default();
    let body = cp_http::insights::overview(&dp, json!(insight));
    Ok(respond(StatusCode::OK, &h, &body))
}

/// Names and sizes of every generated resource, plus listeners decoded, so
/// an operator can see what Envoy is given without a protobuf tool.
async fn config(
    State(s): State<ZoneState>,
    Path((mesh, name)): Path<(String, String)>,
    h: HeaderMap,
) -> Result<Response, ApiError> {
    let key = ResourceKey::scoped(ResourceType::Dataplane, &mesh, &name);
    let proxies = s.proxies.clone();
    let k = key.clone();
    let snap = tokio::task::spawn_blocking(move || proxies.generate(&k))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| ApiError::not_found(e.to_string()))?;
    let mut types = serde_json::Map::new();
    for (type_url, res) in &snap.types {
        let items: Vec<Value> = res
            .resources
            .iter()
            .map(|(name, any)| json!({ "name": name, "bytes": any.encoded_len() }))
            .collect();
        types.insert(
            type_url.clone(),
            json!({ "version": res.version, "resources": items }),
        );
    }
    Ok(respond(
        StatusCode::OK,
        &h,
        &json!({ "dataplane": key.to_string(), "types": types }),
    ))
}
