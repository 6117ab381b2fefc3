//! Talking to the zone's dataplane server: register (bootstrap) and leave.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use serde_json::{json, Value};

use crate::{AdsVariant, ProxyType};

/// Reads the one resource of the dataplane file, which must be of the type
/// `proxy_type` runs (a Dataplane, or a ZoneIngress for `--proxy-type
/// ingress`).
pub fn read_dataplane(path: &Path, proxy_type: ProxyType) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the dataplane file {}", path.display()))?;
    let mut docs = api::parse_documents(&text)
        .map_err(|e| anyhow!("{} is not valid YAML: {}", path.display(), e.reason))?;
    let want = proxy_type.resource_type();
    if docs.len() != 1 {
        bail!(
            "{} must hold exactly one {want}, found {} documents",
            path.display(),
            docs.len()
        );
    }
    let doc = docs.remove(0);
    let r = api::Resource::from_value(doc.clone())
        .map_err(|e| anyhow!("{} is not a valid resource: {e}", path.display()))?;
    if r.ty().name() != want {
        bail!(
            "{} holds a {}, but --proxy-type {} runs a {want}",
            path.display(),
            r.ty(),
            match proxy_type {
                ProxyType::Dataplane => "dataplane",
                ProxyType::Ingress => "ingress",
            }
        );
    }
    r.validate()
        .map_err(|e| anyhow!("{} is not a valid {want}: {e}", path.display()))?;
    Ok(doc)
}

pub struct Client {
    base: String,
    host_port: String,
    http: reqwest::Client,
}

/// Kuma's error body as one line.
fn describe(status: reqwest::StatusCode, body: &str) -> String {
    let Ok(v) = serde_json::from_str::<Value>(body) else {
        return format!("{status}: {}", body.trim());
    };
    let mut out = format!("{status}: {}", v["detail"].as_str().unwrap_or(""));
    for p in v["invalid_parameters"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "; {}: {}",
            p["field"].as_str().unwrap_or(""),
            p["reason"].as_str().unwrap_or("")
        ));
    }
    out
}

impl Client {
    pub fn new(cp_address: &str, ca_file: &Path) -> anyhow::Result<Self> {
        let rest = cp_address
            .strip_prefix("https://")
            .ok_or_else(|| anyhow!("--cp-address {cp_address:?} must look like https://HOST:5678"))?
            .trim_end_matches('/');
        let ca = std::fs::read(ca_file)
            .with_context(|| format!("cannot read the CA file {}", ca_file.display()))?;
        let cert = reqwest::Certificate::from_pem(&ca)
            .with_context(|| format!("{} is not a PEM certificate", ca_file.display()))?;
        let http = reqwest::Client::builder()
            .add_root_certificate(cert)
            .tls_built_in_root_certs(false)
            .timeout(Duration::from_secs(10))
            .build()?;
        Ok(Self {
            base: format!("https://{rest}"),
            host_port: rest.to_owned(),
            http,
        })
    }

    /// Registers the Dataplane and returns Envoy's bootstrap, for the ADS
    /// variant asked for (else the zone's default). Connection failures are
    /// retried with backoff until `timeout`; a refusal is final.
    pub async fn bootstrap(
        &self,
        dataplane: &Value,
        token: &str,
        admin_port: u16,
        ads_variant: Option<AdsVariant>,
        timeout: Duration,
    ) -> anyhow::Result<Value> {
        let mut body = json!({ "dataplane": dataplane, "token": token, "cpAddress": self.host_port, "adminPort": admin_port });
        if let Some(v) = ads_variant {
            body["adsVariant"] = json!(v.as_str());
        }
        let deadline = Instant::now() + timeout;
        let mut wait = Duration::from_millis(200);
        loop {
            match self.http.post(format!("{}/bootstrap", self.base)).json(&body).send().await {
                Ok(resp) => {
                    let status = resp.status();
                    let text = resp.text().await.unwrap_or_default();
                    if status.is_success() {
                        tracing::info!(cp = %self.base, "registered the Dataplane");
                        return serde_json::from_str(&text).context("the bootstrap is not JSON");
                    }
                    if status == reqwest::StatusCode::SERVICE_UNAVAILABLE && Instant::now() + wait < deadline {
                        tracing::warn!(cp = %self.base, reason = %describe(status, &text), retry_in = ?wait, "control plane not ready; retrying");
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(Duration::from_secs(5));
                        continue;
                    }
                    if status == reqwest::StatusCode::FORBIDDEN || status == reqwest::StatusCode::UNAUTHORIZED {
                        bail!("the control plane refused the dataplane token: {}", describe(status, &text));
                    }
                    bail!("the control plane refused the Dataplane: {}", describe(status, &text));
                }
                Err(e) if Instant::now() + wait < deadline => {
                    tracing::warn!(cp = %self.base, error = %e, retry_in = ?wait, "control plane unreachable; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
                Err(e) => bail!(
                    "cannot reach the control plane at {} after {timeout:?}: {e}; is zone-cp running with --dp-server-addr there?",
                    self.base
                ),
            }
        }
    }

    /// Removes the Dataplane (the token proves it is ours).
    pub async fn deregister(&self, dataplane: &Value, token: &str) -> anyhow::Result<()> {
        let body = json!({ "mesh": dataplane["mesh"], "name": dataplane["name"], "token": token });
        let resp = self
            .http
            .post(format!("{}/deregister", self.base))
            .json(&body)
            .send()
            .await?;
        let status = resp.status();
        if status.is_success() {
            Ok(())
        } else {
            bail!(
                "{}",
                describe(status, &resp.text().await.unwrap_or_default())
            )
        }
    }
}
