//! Resources the control planes write for each other, never an operator:
//! the exchange that gives each zone its intermediate CA of a mesh, the
//! global's dataplane-token keys, and dataplane insights. They travel over
//! KDS like any resource and are read-only on the REST API.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::ValidationError;

/// A zone asks the global to sign its intermediate CA of a mesh
/// (zone → global). Named after the zone; the global signs for the zone the
/// connection authenticated as, whatever the spec claims.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshCaRequestSpec {
    /// The mTLS backend of the mesh the request is for.
    pub backend: String,
    /// PKCS#10 request (PEM) proving possession of the intermediate key.
    pub csr: String,
}

/// A zone's intermediate CA of a mesh, signed by the mesh's root on the
/// global (global → zone). Named after the zone. Public material only.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ZoneIntermediateSpec {
    pub zone: String,
    pub backend: String,
    /// The intermediate certificate (PEM).
    pub certificate: String,
    /// The mesh's root certificate (PEM): the trust bundle of the mesh.
    pub root_certificate: String,
    /// The CSR this answers, so a zone can tell a stale answer.
    pub csr: String,
}

/// A public key the global signs dataplane tokens with (global → zone).
/// Named after its key id.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DataplaneTokenKeySpec {
    /// Ed25519 public key, standard base64.
    pub public_key: String,
}

/// What a zone knows of one proxy's xDS stream (zone → global). Named after
/// its Dataplane.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DataplaneInsightSpec {
    #[serde(default)]
    pub connected: bool,
    /// The last version Envoy accepted, per xDS type URL.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub acked: BTreeMap<String, String>,
    #[serde(default)]
    pub nacks: u64,
    /// The reason of the last rejection, prefixed with its type URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_nack: Option<String>,
    /// When the proxy's certificate expires (RFC 3339), if mTLS is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_expiry: Option<String>,
}

pub(crate) fn validate_mesh_ca_request(e: &mut ValidationError, s: &MeshCaRequestSpec) {
    if s.backend.is_empty() {
        e.add("backend", "must not be empty");
    }
    if !s.csr.contains("BEGIN CERTIFICATE REQUEST") {
        e.add("csr", "must be a PEM certificate request");
    }
}

pub(crate) fn validate_zone_intermediate(e: &mut ValidationError, s: &ZoneIntermediateSpec) {
    for (field, value) in [("zone", &s.zone), ("backend", &s.backend)] {
        if value.is_empty() {
            e.add(field, "must not be empty");
        }
    }
    for (field, value) in [
        ("certificate", &s.certificate),
        ("rootCertificate", &s.root_certificate),
    ] {
        if !value.contains("BEGIN CERTIFICATE") {
            e.add(field, "must be a PEM certificate");
        }
    }
}

pub(crate) fn validate_dataplane_token_key(e: &mut ValidationError, s: &DataplaneTokenKeySpec) {
    if s.public_key.trim().is_empty() {
        e.add("publicKey", "must not be empty");
    }
}

/// The enabled mTLS backend of a Mesh resource, if mTLS is on.
pub fn enabled_mtls_backend(mesh: &crate::Resource) -> Option<&crate::MtlsBackend> {
    let crate::Spec::Mesh(m) = &mesh.spec else {
        return None;
    };
    let mtls = m.mtls.as_ref()?;
    let name = mtls.enabled_backend.as_deref().filter(|b| !b.is_empty())?;
    mtls.backends.iter().find(|b| b.name == name)
}
