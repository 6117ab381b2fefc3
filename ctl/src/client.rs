//! A blocking client of the control plane's REST API that turns every
//! failure into a message a person can act on.

use reqwest::blocking::{Client, Response};
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// An error meant for the person at the terminal.
#[derive(Debug)]
pub struct CliError(pub String);

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CliError {}

pub fn err(msg: impl Into<String>) -> CliError {
    CliError(msg.into())
}

pub struct ApiClient {
    base: String,
    token: Option<String>,
    http: Client,
}

/// The body of a successful answer.
pub struct Reply {
    pub status: StatusCode,
    pub text: String,
}

impl Reply {
    pub fn json(&self) -> Result<Value, CliError> {
        serde_json::from_str(&self.text).map_err(|e| {
            err(format!(
                "the control plane answered something that is not JSON: {e}"
            ))
        })
    }
}

impl ApiClient {
    pub fn new(base: &str, token: Option<String>) -> Result<Self, CliError> {
        let http = Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|e| err(format!("cannot set up an HTTP client: {e}")))?;
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            token,
            http,
        })
    }

    /// Also trusts the CA in `ca_file` (PEM) for HTTPS.
    pub fn trusting(mut self, ca_file: Option<&std::path::Path>) -> Result<Self, CliError> {
        let Some(path) = ca_file else {
            return Ok(self);
        };
        let pem = std::fs::read(path)
            .map_err(|e| err(format!("cannot read the CA file {}: {e}", path.display())))?;
        let ca = reqwest::Certificate::from_pem(&pem)
            .map_err(|e| err(format!("{} is not a PEM certificate: {e}", path.display())))?;
        self.http = Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .add_root_certificate(ca)
            .build()
            .map_err(|e| err(format!("cannot set up an HTTP client: {e}")))?;
        Ok(self)
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends a request; any status but 2xx becomes an error that quotes the
    /// server's title, detail and invalid parameters.
    pub fn send(
        &self,
        method: Method,
        path: &str,
        json: Option<&Value>,
    ) -> Result<Reply, CliError> {
        // A `next` link is absolute; keep only its path and query so the
        // request goes where the user pointed meshctl (scheme, proxy, CA).
        let path = match path.split_once("://") {
            Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
            None => path,
        };
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(body) = json {
            req = req
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let resp = req.send().map_err(|e| {
            err(format!(
                "cannot reach the control plane at {}: {}. Is it running? Set --api-addr or MESHCTL_API_ADDR.",
                self.base,
                root_cause(&e)
            ))
        })?;
        self.check(resp)
    }

    fn check(&self, resp: Response) -> Result<Reply, CliError> {
        let status = resp.status();
        let text = resp.text().unwrap_or_default();
        if status.is_success() {
            return Ok(Reply { status, text });
        }
        if status == StatusCode::UNAUTHORIZED {
            let hint = if self.token.is_some() {
                "the token was refused"
            } else {
                "no token was given"
            };
            return Err(err(format!(
                "401 Unauthorized: {hint}. Pass the admin token with --token-file or MESHCTL_TOKEN_FILE \
                 (the control plane writes it to <data-dir>/admin-token)."
            )));
        }
        Err(err(describe_error(status, &text)))
    }
}

/// The innermost cause of a transport error (reqwest nests them).
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// Formats Kuma's error body: status, title, detail, one line per parameter.
pub fn describe_error(status: StatusCode, body: &str) -> String {
    let Ok(v) = serde_json::from_str::<Value>(body) else {
        return format!("{status}: {}", body.trim());
    };
    let mut out = format!("{}", status);
    if let Some(title) = v["title"].as_str() {
        out = format!("{} {title}", status.as_u16());
    }
    if let Some(detail) = v["detail"].as_str() {
        out.push_str(": ");
        out.push_str(detail);
    }
    if let Some(params) = v["invalid_parameters"].as_array() {
        for p in params {
            let field = p["field"].as_str().unwrap_or("");
            let reason = p["reason"].as_str().unwrap_or("");
            out.push_str(&format!(
                "\n  {}: {reason}",
                if field.is_empty() {
                    "(resource)"
                } else {
                    field
                }
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kuma_error_bodies_read_as_sentences() {
        let body = r#"{"type":"/std-errors","status":400,"title":"Invalid request","detail":"Resource is not valid",
            "invalid_parameters":[{"field":"sources","reason":"must have at least one element"}]}"#;
        let msg = describe_error(StatusCode::BAD_REQUEST, body);
        assert_eq!(
            msg,
            "400 Invalid request: Resource is not valid\n  sources: must have at least one element"
        );
        assert_eq!(
            describe_error(StatusCode::BAD_GATEWAY, "oops"),
            "502 Bad Gateway: oops"
        );
    }
}
