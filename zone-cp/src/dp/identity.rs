//! Workload identities: one certificate per dataplane, issued from its
//! mesh's CA, cached and renewed at 4/5 of its lifetime.
//!
//! Where the mesh CA comes from: on a standalone zone the zone creates the
//! mesh's root CA itself and keeps it in its store's meta space (it is its
//! own security domain). A federated zone will receive an intermediate
//! signed by the global's root instead (the global keeps the root key).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use api::{Resource, ResourceKey, ResourceType, Spec};
use certs::CertifiedKey;
use store::Store;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

const DEFAULT_LIFETIME: Duration = Duration::from_secs(24 * 3600);
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 86_400);

#[derive(Debug, Clone)]
pub struct Identity {
    pub chain_pem: String,
    pub key_pem: String,
    /// The mesh's trust bundle.
    pub ca_pem: String,
    pub expiry_rfc3339: String,
    renew_at: Instant,
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("mesh {0:?} does not exist")]
    NoMesh(String),
    #[error(transparent)]
    Cert(#[from] certs::CertError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("stored CA of mesh {0:?} is unreadable")]
    BadCa(String),
}

#[derive(Default)]
struct State {
    cas: HashMap<String, CertifiedKey>,
    certs: HashMap<(String, String), Identity>,
}

/// Issues and caches workload certificates; cheap to clone.
#[derive(Clone)]
pub struct Identities {
    store: Store,
    zone: String,
    state: Arc<Mutex<State>>,
}

fn ca_meta_key(mesh: &str) -> String {
    format!("mesh-ca/{mesh}")
}

/// The certificate lifetime a mesh asks for (`dpCert.rotation.expiration`).
pub fn lifetime(mesh: &Resource) -> Duration {
    let Spec::Mesh(m) = &mesh.spec else {
        return DEFAULT_LIFETIME;
    };
    let Some(mtls) = &m.mtls else {
        return DEFAULT_LIFETIME;
    };
    mtls.backends
        .iter()
        .find(|b| Some(&b.name) == mtls.enabled_backend.as_ref())
        .and_then(|b| b.dp_cert.as_ref())
        .and_then(|d| d.rotation.as_ref())
        .and_then(|r| r.expiration.as_deref())
        .and_then(|e| api::duration::parse_duration(e).ok())
        .unwrap_or(DEFAULT_LIFETIME)
}

/// Every inbound tag of a dataplane, as a multi-valued map.
pub fn inbound_tags(dp: &Resource) -> BTreeMap<String, BTreeSet<String>> {
    let mut tags: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    if let Spec::Dataplane(d) = &dp.spec {
        for inb in &d.networking.inbound {
            for (k, v) in &inb.tags {
                tags.entry(k.clone()).or_default().insert(v.clone());
            }
        }
    }
    tags
}

impl Identities {
    pub fn new(store: Store, zone: &str) -> Self {
        Self {
            store,
            zone: zone.to_owned(),
            state: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The mesh CA, created and stored on first use.
    fn mesh_ca(&self, mesh: &str) -> Result<CertifiedKey, IdentityError> {
        if let Some(ca) = self.lock().cas.get(mesh) {
            return Ok(ca.clone());
        }
        let key = ca_meta_key(mesh);
        let ca = match self.store.get_meta(&key)? {
            Some(bytes) => {
                let v: serde_json::Value = serde_json::from_slice(&bytes)
                    .map_err(|_| IdentityError::BadCa(mesh.into()))?;
                CertifiedKey {
                    cert_pem: v["cert"].as_str().unwrap_or_default().to_owned(),
                    key_pem: v["key"].as_str().unwrap_or_default().to_owned(),
                }
            }
            None => {
                let ca = certs::generate_mesh_ca(mesh, CA_VALIDITY)?;
                let v = serde_json::json!({ "cert": ca.cert_pem, "key": ca.key_pem });
                self.store.put_meta(&key, v.to_string().as_bytes())?;
                tracing::info!(mesh, "created the mesh CA");
                ca
            }
        };
        self.lock().cas.insert(mesh.to_owned(), ca.clone());
        Ok(ca)
    }

    /// The current identity of `dp`, issuing a new one when there is none,
    /// when it is due for renewal, or when its tags changed.
    pub fn identity(&self, mesh: &str, dp: &Resource) -> Result<Identity, IdentityError> {
        let slot = (mesh.to_owned(), dp.name.clone());
        let tags = inbound_tags(dp);
        if let Some(id) = self.lock().certs.get(&slot) {
            if Instant::now() < id.renew_at
                && certs::cert_uri_sans(&id.chain_pem).is_ok_and(|s| sans_match(&s, &tags))
            {
                return Ok(id.clone());
            }
        }
        let mesh_res = self
            .store
            .get(&ResourceKey::global(ResourceType::Mesh, mesh))?
            .ok_or_else(|| IdentityError::NoMesh(mesh.into()))?;
        let life = lifetime(&mesh_res);
        let ca = self.mesh_ca(mesh)?;
        let cert = certs::issue_workload_cert(&ca, mesh, &self.zone, &tags, life)?;
        let expiry = certs::cert_not_after(&cert.cert_pem)?;
        let expiry_rfc3339 = OffsetDateTime::from_unix_timestamp(expiry as i64)
            .ok()
            .and_then(|t| t.format(&Rfc3339).ok())
            .unwrap_or_default();
        let id = Identity {
            chain_pem: cert.cert_pem,
            key_pem: cert.key_pem,
            ca_pem: ca.cert_pem,
            expiry_rfc3339,
            renew_at: Instant::now() + life.mul_f64(0.8),
        };
        tracing::debug!(mesh, dataplane = %dp.name, lifetime = ?life, "issued a workload certificate");
        self.lock().certs.insert(slot, id.clone());
        Ok(id)
    }

    /// The earliest renewal among issued certificates.
    pub fn next_renewal(&self) -> Option<Instant> {
        self.lock().certs.values().map(|c| c.renew_at).min()
    }
}

/// Whether the issued SANs still carry every service of the tags.
fn sans_match(sans: &[String], tags: &BTreeMap<String, BTreeSet<String>>) -> bool {
    tags.get(api::SERVICE_TAG).is_none_or(|services| {
        services.iter().all(|s| {
            sans.iter()
                .any(|san| san.ends_with(&format!("/{s}")) && san.starts_with("spiffe://"))
        })
    })
}
