//! Kuma's REST API over the store.
//!
//! Paths: `/meshes[/{name}]`, `/meshes/{mesh}/{kind}[/{name}]` for mesh-scoped
//! kinds, `/{kind}[/{name}]` for global kinds (and cross-mesh lists),
//! `/global-insight`. `PUT` answers 201 on create and 200 on update, with an
//! `ETag` of the new version; `If-Match: "<version>"` makes it conditional and
//! `If-None-Match: *` create-only (409 when not met).

use std::sync::Arc;

use api::{Resource, ResourceKey, ResourceType};
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};
use store::{Outcome, Precondition, Store};

use crate::body::{read_value, respond};
use crate::error::ApiError;
use crate::metrics::Metrics;

/// Default and largest page size of a list.
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

/// What a control plane's REST API allows.
#[derive(Debug, Clone)]
pub struct RestConfig {
    /// The bearer token every request must carry.
    pub token: String,
    /// Types this control plane does not accept writes for, each with the
    /// sentence a refused client is shown (405).
    pub read_only: Vec<(ResourceType, String)>,
    /// Labels stamped on every resource written here (`kuma.io/origin`, and
    /// on a zone `kuma.io/zone`), whatever the client sent for them.
    pub labels: Vec<(String, String)>,
    /// Whether the API is served over HTTPS (for the `next` links).
    pub https: bool,
}

#[derive(Clone)]
struct AppState {
    store: Store,
    config: Arc<RestConfig>,
}

/// The REST router: auth, metrics and Kuma error bodies on every path,
/// `extra`'s routes (a control plane's own, such as insights) included.
pub fn router(store: Store, config: RestConfig, metrics: Arc<Metrics>, extra: Router) -> Router {
    let token: Arc<str> = config.token.as_str().into();
    let state = AppState {
        store,
        config: Arc::new(config),
    };
    Router::new()
        .route("/meshes", get(list_meshes))
        .route(
            "/meshes/:name",
            get(get_mesh).put(put_mesh).delete(delete_mesh),
        )
        .route("/meshes/:mesh/:kind", get(list_scoped))
        .route(
            "/meshes/:mesh/:kind/:name",
            get(get_scoped).put(put_scoped).delete(delete_scoped),
        )
        .route("/global-insight", get(global_insight))
        .route("/:kind", get(list_global))
        .route(
            "/:kind/:name",
            get(get_global).put(put_global).delete(delete_global),
        )
        .with_state(state)
        .merge(extra)
        .route_layer(middleware::from_fn_with_state(
            metrics,
            crate::metrics::track,
        ))
        .fallback(|| async { ApiError::not_found("no such path") })
        .layer(middleware::from_fn(kuma_error_bodies))
        .layer(middleware::from_fn_with_state(token, authenticate))
}

async fn authenticate(State(token): State<Arc<str>>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(t) if certs::token_matches(t.trim(), &token) => next.run(req).await,
        Some(_) => ApiError::unauthorized("the bearer token was refused").into_response(),
        None => ApiError::unauthorized(
            "missing header 'Authorization: Bearer <token>'; the admin token is in the control plane's data directory (admin-token)",
        )
        .into_response(),
    }
}

/// axum answers a wrong method with an empty 405; give it Kuma's body.
async fn kuma_error_bodies(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let resp = next.run(req).await;
    if resp.status() == StatusCode::METHOD_NOT_ALLOWED
        && !resp.headers().contains_key(header::CONTENT_TYPE)
    {
        return ApiError::read_only(format!("{method} is not allowed on this path"))
            .into_response();
    }
    resp
}

/// Which resource (or list) a path names.
struct Target {
    ty: ResourceType,
    mesh: Option<String>,
}

impl Target {
    fn mesh() -> Self {
        Self {
            ty: ResourceType::Mesh,
            mesh: None,
        }
    }

    fn scoped(mesh: String, kind: &str) -> Result<Self, ApiError> {
        match ResourceType::ALL.into_iter().find(|t| t.plural() == kind) {
            Some(ty) if ty.is_mesh_scoped() => Ok(Self {
                ty,
                mesh: Some(mesh),
            }),
            _ => Err(ApiError::not_found(format!(
                "{kind:?} is not a mesh-scoped resource type"
            ))),
        }
    }

    /// A global kind, or for lists a mesh-scoped kind across all meshes.
    fn global(kind: &str, list: bool) -> Result<Self, ApiError> {
        match ResourceType::ALL.into_iter().find(|t| t.plural() == kind) {
            Some(ty) if list || !ty.is_mesh_scoped() => Ok(Self { ty, mesh: None }),
            Some(ty) => Err(ApiError::not_found(format!(
                "{} are mesh-scoped: use /meshes/{{mesh}}/{kind}/{{name}}",
                ty.plural()
            ))),
            None => Err(ApiError::not_found(format!(
                "{kind:?} is not a resource type"
            ))),
        }
    }

    fn key(&self, name: &str) -> ResourceKey {
        ResourceKey::new(self.ty, self.mesh.as_deref(), name)
    }
}

#[derive(Deserialize)]
struct ListQuery {
    size: Option<usize>,
    offset: Option<usize>,
}

async fn list_meshes(
    State(s): State<AppState>,
    q: Query<ListQuery>,
    uri: axum::http::Uri,
    h: HeaderMap,
) -> Result<Response, ApiError> {
    list(&s, Target::mesh(), q.0, &uri, &h)
}

async fn list_scoped(
    State(s): State<AppState>,
    Path((mesh, kind)): Path<(String, String)>,
    q: Query<ListQuery>,
    uri: axum::http::Uri,
    h: HeaderMap,
) -> Result<Response, ApiError> {
    list(&s, Target::scoped(mesh, &kind)?, q.0, &uri, &h)
}

async fn list_global(
    State(s): State<AppState>,
    Path(kind): Path<String>,
    q: Query<ListQuery>,
    uri: axum::http::Uri,
    h: HeaderMap,
) -> Result<Response, ApiError> {
    list(&s, Target::global(&kind, true)?, q.0, &uri, &h)
}

async fn get_mesh(
    State(s): State<AppState>,
    Path(name): Path<String>,
    h: HeaderMap,
) -> Result<Response, ApiError> {
    get_one(&s, Target::mesh(), &name, &h)
}

async fn get_scoped(
    State(s): State<AppState>,
    Path((mesh, kind, name)): Path<(String, String, String)>,
    h: HeaderMap,
) -> Result<Response, ApiError> {
    get_one(&s, Target::scoped(mesh, &kind)?, &name, &h)
}

async fn get_global(
    State(s): State<AppState>,
    Path((kind, name)): Path<(String, String)>,
    h: HeaderMap,
) -> Result<Response, ApiError> {
    get_one(&s, Target::global(&kind, false)?, &name, &h)
}

async fn put_mesh(
    State(s): State<AppState>,
    Path(name): Path<String>,
    h: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    put(s, Target::mesh(), name, h, body).await
}

async fn put_scoped(
    State(s): State<AppState>,
    Path((mesh, kind, name)): Path<(String, String, String)>,
    h: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    put(s, Target::scoped(mesh, &kind)?, name, h, body).await
}

async fn put_global(
    State(s): State<AppState>,
    Path((kind, name)): Path<(String, String)>,
    h: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    put(s, Target::global(&kind, false)?, name, h, body).await
}

async fn delete_mesh(
    State(s): State<AppState>,
    Path(name): Path<String>,
    h: HeaderMap,
) -> Result<Response, ApiError> {
    delete(s, Target::mesh(), name, h).await
}

async fn delete_scoped(
    State(s): State<AppState>,
    Path((mesh, kind, name)): Path<(String, String, String)>,
    h: HeaderMap,
) -> Result<Response, ApiError> {
    delete(s, Target::scoped(mesh, &kind)?, name, h).await
}

async fn delete_global(
    State(s): State<AppState>,
    Path((kind, name)): Path<(String, String)>,
    h: HeaderMap,
) -> Result<Response, ApiError> {
    delete(s, Target::global(&kind, false)?, name, h).await
}

fn etag(version: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).unwrap_or(HeaderValue::from_static("\"0\""))
}

fn with_etag(mut resp: Response, version: u64) -> Response {
    resp.headers_mut().insert(header::ETAG, etag(version));
    resp
}

fn get_one(s: &AppState, t: Target, name: &str, h: &HeaderMap) -> Result<Response, ApiError> {
    let key = t.key(name);
    let r = s
        .store
        .get(&key)?
        .ok_or_else(|| ApiError::not_found(format!("{key} not found")))?;
    Ok(with_etag(
        respond(StatusCode::OK, h, &r.to_value()),
        r.meta.version,
    ))
}

fn list(
    s: &AppState,
    t: Target,
    q: ListQuery,
    uri: &axum::http::Uri,
    h: &HeaderMap,
) -> Result<Response, ApiError> {
    if let Some(mesh) = &t.mesh {
        // Listing inside a mesh that does not exist is a 404, as in Kuma.
        if s.store
            .get(&ResourceKey::global(ResourceType::Mesh, mesh))?
            .is_none()
        {
            return Err(ApiError::not_found(format!("mesh {mesh:?} not found")));
        }
    }
    let size = q.size.unwrap_or(DEFAULT_PAGE);
    if size == 0 || size > MAX_PAGE {
        return Err(ApiError::invalid(
            "size",
            format!("must be in the range [1, {MAX_PAGE}]"),
        ));
    }
    let offset = q.offset.unwrap_or(0);
    let page = s.store.list_page(t.ty, t.mesh.as_deref(), offset, size)?;
    let next = (offset + size < page.total).then(|| {
        let host = h
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("localhost");
        let scheme = if s.config.https { "https" } else { "http" };
        format!(
            "{scheme}://{host}{}?offset={}&size={size}",
            uri.path(),
            offset + size
        )
    });
    let items: Vec<Value> = page.items.iter().map(Resource::to_value).collect();
    let body = json!({ "total": page.total, "items": items, "next": next });
    Ok(respond(StatusCode::OK, h, &body))
}

fn refuse_read_only(s: &AppState, ty: ResourceType) -> Result<(), ApiError> {
    if ty.is_system() {
        return Err(ApiError::read_only(format!(
            "{} resources are written by the control planes, not through the API",
            ty.name()
        )));
    }
    match s.config.read_only.iter().find(|(t, _)| *t == ty) {
        Some((_, why)) => Err(ApiError::read_only(why.clone())),
        None => Ok(()),
    }
}

fn precondition(h: &HeaderMap) -> Result<Precondition, ApiError> {
    if let Some(v) = h.get(header::IF_MATCH) {
        let text = v.to_str().unwrap_or("").trim().trim_matches('"');
        let version = text.parse().map_err(|_| {
            ApiError::bad_request("If-Match must be a resource version such as \"3\"")
        })?;
        return Ok(Precondition::Version(version));
    }
    if h.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) == Some("*") {
        return Ok(Precondition::Absent);
    }
    Ok(Precondition::None)
}

async fn put(
    s: AppState,
    t: Target,
    name: String,
    h: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    refuse_read_only(&s, t.ty)?;
    let pre = precondition(&h)?;
    let mut value = read_value(&h, body).await?;
    // The path names the resource; a body may leave name and mesh out.
    if let Value::Object(obj) = &mut value {
        obj.entry("name")
            .or_insert_with(|| Value::String(name.clone()));
        if let Some(mesh) = &t.mesh {
            obj.entry("mesh")
                .or_insert_with(|| Value::String(mesh.clone()));
        }
    }
    let mut r = Resource::from_value(value)?;
    if r.ty() != t.ty {
        return Err(ApiError::invalid(
            "type",
            format!("is {} but the path is for {}", r.ty(), t.ty),
        ));
    }
    if r.name != name {
        return Err(ApiError::invalid(
            "name",
            format!("{:?} does not match the name in the path, {name:?}", r.name),
        ));
    }
    if r.mesh != t.mesh {
        return Err(ApiError::invalid(
            "mesh",
            format!(
                "{:?} does not match the mesh in the path, {:?}",
                r.mesh.unwrap_or_default(),
                t.mesh.unwrap_or_default()
            ),
        ));
    }
    r.validate()?;
    for (k, v) in &s.config.labels {
        r.labels.insert(k.clone(), v.clone());
    }
    let store = s.store.clone();
    let outcome = tokio::task::spawn_blocking(move || store.put(r, pre))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))??;
    let (status, r) = match &outcome {
        Outcome::Created(r) => (StatusCode::CREATED, r),
        Outcome::Updated(r) | Outcome::Deleted(r) => (StatusCode::OK, r),
    };
    tracing::debug!(resource = %r.key(), version = r.meta.version, "stored");
    Ok(with_etag(
        respond(status, &h, &r.to_value()),
        r.meta.version,
    ))
}

async fn delete(s: AppState, t: Target, name: String, h: HeaderMap) -> Result<Response, ApiError> {
    refuse_read_only(&s, t.ty)?;
    let version = match precondition(&h)? {
        Precondition::Version(v) => Some(v),
        _ => None,
    };
    let key = t.key(&name);
    let store = s.store.clone();
    let deleted = tokio::task::spawn_blocking(move || store.delete(&key, version))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))??;
    tracing::debug!(resource = %deleted.key(), "deleted");
    Ok(respond(StatusCode::OK, &h, &json!({})))
}

async fn global_insight(State(s): State<AppState>, h: HeaderMap) -> Result<Response, ApiError> {
    let mut resources = serde_json::Map::new();
    for ty in ResourceType::ALL {
        resources.insert(ty.name().into(), json!({ "total": s.store.count(ty) }));
    }
    let count = |ty| s.store.count(ty);
    let body = json!({
        "type": "GlobalInsight",
        "meshes": { "total": count(ResourceType::Mesh) },
        "zones": {
            "total": count(ResourceType::Zone),
            "zoneIngresses": { "total": count(ResourceType::ZoneIngress) },
        },
        "dataplanes": { "total": count(ResourceType::Dataplane) },
        "policies": { "total": count(ResourceType::TrafficPermission) },
        "resources": resources,
    });
    Ok(respond(StatusCode::OK, &h, &body))
}
