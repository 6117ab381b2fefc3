//! Request bodies in, response bodies out, as JSON or YAML.

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;

use crate::error::ApiError;

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Reads the body (at most [`MAX_BODY_BYTES`]) and parses it as JSON or YAML,
/// by `Content-Type`; without one, YAML (a superset of JSON) is assumed.
pub async fn read_value(headers: &HeaderMap, body: Body) -> Result<Value, ApiError> {
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Payload Too Large",
                format!("the request body is larger than {MAX_BODY_BYTES} bytes"),
            )
        })?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| ApiError::bad_request("the request body is not UTF-8 text"))?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if content_type.contains("json") {
        serde_json::from_str(text)
            .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))
    } else {
        let mut docs = api::parse_documents(text).map_err(|e| {
            ApiError::bad_request(format!("the request body is not valid YAML: {}", e.reason))
        })?;
        match docs.len() {
            1 => Ok(docs.remove(0)),
            0 => Err(ApiError::bad_request("the request body is empty")),
            n => Err(ApiError::bad_request(format!(
                "the request body holds {n} documents; send one resource per request"
            ))),
        }
    }
}

/// Whether the client asked for YAML.
pub fn wants_yaml(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("yaml"))
}

/// Serializes `value` as JSON, or YAML when the client asked for it.
pub fn respond<T: Serialize>(status: StatusCode, headers: &HeaderMap, value: &T) -> Response {
    let (bytes, ct) = if wants_yaml(headers) {
        match serde_yaml::to_string(value) {
            Ok(s) => (s.into_bytes(), "application/yaml"),
            Err(e) => return ApiError::internal(e.to_string()).into_response(),
        }
    } else {
        match serde_json::to_vec(value) {
            Ok(b) => (b, "application/json"),
            Err(e) => return ApiError::internal(e.to_string()).into_response(),
        }
    };
    let mut resp = (status, bytes).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    resp
}
