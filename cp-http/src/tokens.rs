//! `POST /tokens/dataplane`: issues a dataplane token for a mesh and a set
//! of tags, as Kuma's API does. Served by the global (tokens zones verify
//! with its public key) and by standalone zones (their own key).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use certs::SigningKey;
use serde::Deserialize;

use crate::body::read_value;
use crate::error::ApiError;

/// Default lifetime of a dataplane token.
const DEFAULT_VALID_FOR: Duration = Duration::from_secs(365 * 86_400);

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DataplaneTokenRequest {
    mesh: String,
    #[serde(default)]
    tags: BTreeMap<String, BTreeSet<String>>,
    #[serde(default)]
    valid_for: Option<String>,
    /// Accepted for Kuma compatibility; the token is not bound to a name.
    #[serde(default)]
    name: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
}

pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub fn dataplane_token_routes(key: Arc<SigningKey>) -> Router {
    Router::new()
        .route("/tokens/dataplane", post(issue))
        .with_state(key)
}

async fn issue(
    State(key): State<Arc<SigningKey>>,
    h: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let req: DataplaneTokenRequest = serde_json::from_value(read_value(&h, body).await?)
        .map_err(|e| ApiError::bad_request(format!("not a dataplane token request: {e}")))?;
    let _ = (&req.name, &req.kind);
    let mut e = api::ValidationError::default();
    if req.mesh.is_empty() {
        e.add("mesh", "must be set");
    }
    for (k, values) in &req.tags {
        if values.is_empty() {
            e.add(format!("tags[\"{k}\"]"), "must list at least one value");
        }
    }
    e.into_result()?;
    let valid_for = match &req.valid_for {
        None => DEFAULT_VALID_FOR,
        Some(d) => {
            api::duration::parse_duration(d).map_err(|e| ApiError::invalid("validFor", e))?
        }
    };
    let token = certs::issue_dataplane_token(&key, &req.mesh, &req.tags, valid_for, now_unix())
        .map_err(|e| ApiError::internal(e.to_string()))?;
    tracing::info!(mesh = req.mesh, tags = ?req.tags, "issued a dataplane token");
    Ok(([(header::CONTENT_TYPE, "text/plain")], token).into_response())
}
