//! Kuma's error body: `{"type","status","title","detail","invalid_parameters"}`.

use api::ValidationError;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use store::StoreError;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct InvalidParameter {
    pub field: String,
    pub reason: String,
}

/// An API error; its response is the Kuma error body with a matching status.
#[derive(Debug, Clone, Serialize)]
pub struct ApiError {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub status: u16,
    pub title: String,
    pub detail: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub invalid_parameters: Vec<InvalidParameter>,
}

impl ApiError {
    pub fn new(status: StatusCode, title: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            kind: "/std-errors",
            status: status.as_u16(),
            title: title.into(),
            detail: detail.into(),
            invalid_parameters: Vec::new(),
        }
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "Bad Request", detail)
    }

    pub fn invalid(field: &str, reason: impl Into<String>) -> Self {
        Self::from(ValidationError::single(field, reason))
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "Not Found", detail)
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "Unauthorized", detail)
    }

    pub fn read_only(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed", detail)
    }

    pub fn internal(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal Server Error",
            detail,
        )
    }
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        let mut err = Self::new(
            StatusCode::BAD_REQUEST,
            "Invalid request",
            "Resource is not valid",
        );
        err.invalid_parameters = e
            .violations
            .into_iter()
            .map(|v| InvalidParameter {
                field: v.field,
                reason: v.reason,
            })
            .collect();
        err
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match &e {
            StoreError::NotFound(_) => Self::not_found(e.to_string()),
            StoreError::AlreadyExists(_) | StoreError::Conflict { .. } => {
                Self::new(StatusCode::CONFLICT, "Conflict", e.to_string())
            }
            StoreError::MeshNotFound(mesh) => Self::invalid(
                "mesh",
                format!("mesh {mesh:?} does not exist; create the Mesh first"),
            ),
            StoreError::Open { .. } | StoreError::Corrupt { .. } | StoreError::Backend(_) => {
                tracing::error!(error = %e, "store failure");
                Self::internal(e.to_string())
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut resp = (status, body).into_response();
        resp.headers_mut().insert(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        resp
    }
}
