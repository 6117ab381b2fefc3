//! Dataplanes with their insights, as Kuma's `dataplanes+insights`: every
//! Dataplane joined with the `DataplaneInsight` its zone wrote (on a zone,
//! its own; on the global, every zone's, synced over KDS).

use api::{Resource, ResourceKey, ResourceType};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};
use store::Store;

use crate::body::respond;
use crate::error::ApiError;

/// `GET /dataplanes+insights` and `GET /meshes/{mesh}/dataplanes+insights`;
/// with `overview`, also `GET /meshes/{mesh}/dataplanes/{name}/_overview`
/// from the stored insight (a zone serves its own, live one instead).
pub fn routes(store: Store, overview: bool) -> Router {
    let r = Router::new()
        .route("/dataplanes+insights", get(list_all))
        .route("/meshes/:mesh/dataplanes+insights", get(list_mesh));
    let r = if overview {
        r.route("/meshes/:mesh/dataplanes/:name/_overview", get(one))
    } else {
        r
    };
    r.with_state(store)
}

/// The overview of one Dataplane: the resource and its insight (`{}` when
/// its proxy never connected).
pub fn overview(dp: &Resource, insight: Value) -> Value {
    json!({
        "type": "DataplaneOverview",
        "mesh": dp.mesh,
        "name": dp.name,
        "dataplane": dp.to_value(),
        "dataplaneInsight": insight,
    })
}

fn stored_insight(store: &Store, dp: &Resource) -> Result<Value, ApiError> {
    let key = ResourceKey::new(ResourceType::DataplaneInsight, dp.mesh.as_deref(), &dp.name);
    Ok(store
        .get(&key)?
        .map(|r| r.to_value())
        .unwrap_or_else(|| json!({})))
}

async fn listing(store: Store, mesh: Option<String>, h: HeaderMap) -> Result<Response, ApiError> {
    let items = tokio::task::spawn_blocking(move || -> Result<Vec<Value>, ApiError> {
        store
            .list(ResourceType::Dataplane, mesh.as_deref())?
            .iter()
            .map(|dp| Ok(overview(dp, stored_insight(&store, dp)?)))
            .collect()
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))??;
    let body = json!({ "total": items.len(), "items": items, "next": null });
    Ok(respond(StatusCode::OK, &h, &body))
}

async fn list_all(State(store): State<Store>, h: HeaderMap) -> Result<Response, ApiError> {
    listing(store, None, h).await
}

async fn list_mesh(
    State(store): State<Store>,
    Path(mesh): Path<String>,
    h: HeaderMap,
) -> Result<Response, ApiError> {
    listing(store, Some(mesh), h).await
}

async fn one(
    State(store): State<Store>,
    Path((mesh, name)): Path<(String, String)>,
    h: HeaderMap,
) -> Result<Response, ApiError> {
    let key = ResourceKey::scoped(ResourceType::Dataplane, &mesh, &name);
    let dp = store
        .get(&key)?
        .ok_or_else(|| ApiError::not_found(format!("{key} not found")))?;
    let body = overview(&dp, stored_insight(&store, &dp)?);
    Ok(respond(StatusCode::OK, &h, &body))
}
