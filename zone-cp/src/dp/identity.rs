//! Workload identities: one certificate per dataplane, issued from the
//! zone's CA of its mesh, cached and renewed at 4/5 of its real lifetime.
//!
//! Where the zone's CA of a mesh comes from:
//! - A **federated** zone keeps an intermediate key per mesh and backend in
//!   its store's meta space and asks the global to sign it: it writes a
//!   `MeshCaRequest` (its CSR), which KDS carries up; the global answers
//!   with a `ZoneIntermediate` signed by the mesh's root, whose key stays on
//!   the global. Until the answer arrives, proxies of that mesh get no
//!   certificate (and so no config).
//! - A **standalone** zone is its own security domain: it creates the
//!   mesh's root CA itself and issues from it.
//!
//! A certificate is reissued when it is due, when its dataplane's tags
//! change, or when the issuing CA changes (a new backend, a new
//! intermediate), so a backend switch rotates every proxy's certificate and
//! trust bundle.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use api::{Resource, ResourceKey, ResourceType, Spec};
use certs::CertifiedKey;
use store::{Precondition, Store};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

const DEFAULT_LIFETIME: Duration = Duration::from_secs(24 * 3600);
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 86_400);

#[derive(Debug)]
pub struct Identity {
    pub chain_pem: String,
    pub key_pem: String,
    /// The mesh's trust bundle.
    pub ca_pem: String,
    pub expiry_rfc3339: String,
    renew_at: Instant,
    /// The issuing CA certificate, to notice a CA change.
    issuer_pem: String,
    /// The inbound tags it was issued for.
    tags: BTreeMap<String, BTreeSet<String>>,
    /// Its SDS secrets, encoded once (by the proxy registry).
    pub encoded: std::sync::OnceLock<Arc<Vec<super::snapshot::Shared>>>,
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("mesh {0:?} does not exist")]
    NoMesh(String),
    #[error("mesh {0:?} has no enabled mTLS backend")]
    NoBackend(String),
    #[error("waiting for the global to sign this zone's intermediate CA of mesh {0:?}")]
    AwaitingIntermediate(String),
    #[error(transparent)]
    Cert(#[from] certs::CertError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("stored CA material {0:?} is unreadable")]
    BadCa(String),
}

/// The CA a zone issues workload certificates from, and what proxies trust.
#[derive(Clone)]
struct ZoneCa {
    backend: String,
    issuer: CertifiedKey,
    trust_bundle: String,
}

#[derive(Default)]
struct State {
    cas: HashMap<String, ZoneCa>,
    certs: HashMap<(String, String), Arc<Identity>>,
}

/// Issues and caches workload certificates; cheap to clone.
#[derive(Clone)]
pub struct Identities {
    store: Store,
    zone: String,
    federated: bool,
    state: Arc<Mutex<State>>,
}

/// The certificate lifetime a mesh asks for (`dpCert.rotation.expiration`).
pub fn lifetime(mesh: &Resource) -> Duration {
    api::enabled_mtls_backend(mesh)
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

fn read_pair(store: &Store, key: &str) -> Result<Option<(String, String)>, IdentityError> {
    let Some(bytes) = store.get_meta(key)? else {
        return Ok(None);
    };
    let v: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|_| IdentityError::BadCa(key.into()))?;
    let field = |f: &str| v[f].as_str().map(str::to_owned);
    match (field("cert").or_else(|| field("csr")), field("key")) {
        (Some(a), Some(b)) => Ok(Some((a, b))),
        _ => Err(IdentityError::BadCa(key.into())),
    }
}

impl Identities {
    pub fn new(store: Store, zone: &str, federated: bool) -> Self {
        Self {
            store,
            zone: zone.to_owned(),
            federated,
            state: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets the cached CA of `mesh` (its Mesh or ZoneIntermediate
    /// changed); the next identity looks again.
    pub fn forget_ca(&self, mesh: &str) {
        self.lock().cas.remove(mesh);
    }

    /// Makes sure the zone has asked for (federated) or created
    /// (standalone) its CA of `mesh`, so the first proxy does not wait.
    pub fn prepare(&self, mesh: &str) {
        match self.zone_ca(mesh) {
            Ok(_) | Err(IdentityError::NoBackend(_)) | Err(IdentityError::NoMesh(_)) => {}
            Err(IdentityError::AwaitingIntermediate(_)) => {
                tracing::info!(mesh, "asked the global to sign this zone's intermediate CA")
            }
            Err(e) => tracing::warn!(mesh, error = %e, "cannot prepare the mesh CA"),
        }
    }

    fn zone_ca(&self, mesh: &str) -> Result<ZoneCa, IdentityError> {
        let mesh_res = self
            .store
            .get(&ResourceKey::global(ResourceType::Mesh, mesh))?
            .ok_or_else(|| IdentityError::NoMesh(mesh.into()))?;
        let backend = api::enabled_mtls_backend(&mesh_res)
            .ok_or_else(|| IdentityError::NoBackend(mesh.into()))?
            .name
            .clone();
        if let Some(ca) = self.lock().cas.get(mesh).filter(|c| c.backend == backend) {
            return Ok(ca.clone());
        }
        let ca = if self.federated {
            self.intermediate(mesh, &backend)?
        } else {
            self.standalone_root(mesh, &backend)?
        };
        self.lock().cas.insert(mesh.to_owned(), ca.clone());
        Ok(ca)
    }

    fn standalone_root(&self, mesh: &str, backend: &str) -> Result<ZoneCa, IdentityError> {
        let key = format!("mesh-ca/{mesh}/{backend}");
        let ca = match read_pair(&self.store, &key)? {
            Some((cert_pem, key_pem)) => CertifiedKey { cert_pem, key_pem },
            None => {
                let ca = certs::generate_mesh_ca(mesh, CA_VALIDITY)?;
                let v = serde_json::json!({ "cert": ca.cert_pem, "key": ca.key_pem });
                self.store.put_meta(&key, v.to_string().as_bytes())?;
                tracing::info!(mesh, backend, "created the mesh CA (standalone zone)");
                ca
            }
        };
        Ok(ZoneCa {
            backend: backend.to_owned(),
            trust_bundle: ca.cert_pem.clone(),
            issuer: ca,
        })
    }

    /// The zone's intermediate of `mesh`, or a request for it.
    fn intermediate(&self, mesh: &str, backend: &str) -> Result<ZoneCa, IdentityError> {
        let meta_key = format!("mesh-intermediate/{mesh}/{backend}");
        let (csr, key_pem) = match read_pair(&self.store, &meta_key)? {
            Some(pair) => pair,
            None => {
                let req = certs::intermediate_request(mesh, &self.zone)?;
                let v = serde_json::json!({ "csr": req.csr_pem, "key": req.key_pem });
                self.store.put_meta(&meta_key, v.to_string().as_bytes())?;
                (req.csr_pem, req.key_pem)
            }
        };
        let answer = self.store.get(&ResourceKey::scoped(
            ResourceType::ZoneIntermediate,
            mesh,
            &self.zone,
        ))?;
        if let Some(Spec::ZoneIntermediate(s)) = answer.map(|r| r.spec) {
            if s.csr == csr && s.backend == backend && s.zone == self.zone {
                return Ok(ZoneCa {
                    backend: backend.to_owned(),
                    issuer: CertifiedKey {
                        cert_pem: s.certificate,
                        key_pem,
                    },
                    trust_bundle: s.root_certificate,
                });
            }
        }
        self.request(mesh, backend, &csr)?;
        Err(IdentityError::AwaitingIntermediate(mesh.into()))
    }

    /// Writes this zone's request (KDS carries it to the global) unless it
    /// is already there.
    fn request(&self, mesh: &str, backend: &str, csr: &str) -> Result<(), IdentityError> {
        let spec = api::MeshCaRequestSpec {
            backend: backend.to_owned(),
            csr: csr.to_owned(),
        };
        let key = ResourceKey::scoped(ResourceType::MeshCaRequest, mesh, &self.zone);
        if self
            .store
            .get(&key)?
            .is_some_and(|r| r.spec == Spec::MeshCaRequest(spec.clone()))
        {
            return Ok(());
        }
        let mut r = Resource::new(&self.zone, Some(mesh), Spec::MeshCaRequest(spec));
        r.labels.insert(api::ORIGIN_LABEL.into(), "zone".into());
        r.labels.insert(api::ZONE_TAG.into(), self.zone.clone());
        self.store.put(r, Precondition::None)?;
        Ok(())
    }

    /// The current identity of `dp`, issuing a new one when there is none,
    /// when it is due for renewal, when its tags changed or when the CA
    /// changed.
    pub fn identity(&self, mesh: &Resource, dp: &Resource) -> Result<Arc<Identity>, IdentityError> {
        let slot = (mesh.name.clone(), dp.name.clone());
        let tags = inbound_tags(dp);
        let ca = self.zone_ca(&mesh.name)?;
        if let Some(id) = self.lock().certs.get(&slot) {
            if Instant::now() < id.renew_at
                && id.issuer_pem == ca.issuer.cert_pem
                && id.tags == tags
            {
                return Ok(id.clone());
            }
        }
        let life = lifetime(mesh);
        let cert = certs::issue_workload_cert(&ca.issuer, &mesh.name, &self.zone, &tags, life)?;
        debug_assert!(certs::cert_uri_sans(&cert.cert_pem).is_ok_and(|s| sans_match(&s, &tags)));
        let expiry = certs::cert_not_after(&cert.cert_pem)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        // Renew at 4/5 of what is really left (the issuer may cap it).
        let left = Duration::from_secs(expiry.saturating_sub(now));
        let expiry_rfc3339 = OffsetDateTime::from_unix_timestamp(expiry as i64)
            .ok()
            .and_then(|t| t.format(&Rfc3339).ok())
            .unwrap_or_default();
        let id = Arc::new(Identity {
            encoded: Default::default(),
            tags,
            chain_pem: cert.cert_pem,
            key_pem: cert.key_pem,
            ca_pem: ca.trust_bundle,
            expiry_rfc3339,
            renew_at: Instant::now() + left.mul_f64(0.8),
            issuer_pem: ca.issuer.cert_pem,
        });
        tracing::debug!(mesh = %mesh.name, dataplane = %dp.name, lifetime = ?left, "issued a workload certificate");
        self.lock().certs.insert(slot, id.clone());
        Ok(id)
    }

    /// When the certificate last issued to `name` of `mesh` expires.
    pub fn expiry(&self, mesh: &str, name: &str) -> Option<String> {
        self.lock()
            .certs
            .get(&(mesh.to_owned(), name.to_owned()))
            .map(|c| c.expiry_rfc3339.clone())
    }

    /// Forgets a dataplane's certificate (it left).
    pub fn forget(&self, mesh: &str, name: &str) {
        self.lock()
            .certs
            .remove(&(mesh.to_owned(), name.to_owned()));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn mesh() -> Resource {
        Resource::from_value(serde_json::json!({
            "type": "Mesh", "name": "default",
            "mtls": {"enabledBackend": "ca-1", "backends": [{"name": "ca-1", "type": "builtin",
                "dpCert": {"rotation": {"expiration": "1m"}}}]}
        }))
        .unwrap()
    }

    fn dp() -> Resource {
        Resource::from_value(serde_json::json!({
            "type": "Dataplane", "mesh": "default", "name": "web-1",
            "networking": {"address": "127.0.0.1", "inbound": [
                {"port": 8080, "servicePort": 80, "tags": {"kuma.io/service": "web"}}]}
        }))
        .unwrap()
    }

    #[test]
    fn a_federated_zone_waits_for_its_intermediate_then_issues_under_the_root() {
        let store = Store::temporary().unwrap();
        store.put(mesh(), Precondition::None).unwrap();
        let ids = Identities::new(store.clone(), "east", true);
        assert!(matches!(
            ids.identity(&mesh(), &dp()),
            Err(IdentityError::AwaitingIntermediate(_))
        ));
        let req = store
            .get(&ResourceKey::scoped(
                ResourceType::MeshCaRequest,
                "default",
                "east",
            ))
            .unwrap()
            .expect("a request was written");
        let Spec::MeshCaRequest(spec) = req.spec else {
            panic!()
        };
        // What the global does.
        let root = certs::generate_mesh_ca("default", CA_VALIDITY).unwrap();
        let certificate =
            certs::sign_intermediate(&root, &spec.csr, "default", "east", CA_VALIDITY).unwrap();
        store
            .put(
                Resource::new(
                    "east",
                    Some("default"),
                    Spec::ZoneIntermediate(api::ZoneIntermediateSpec {
                        zone: "east".into(),
                        backend: "ca-1".into(),
                        certificate: certificate.clone(),
                        root_certificate: root.cert_pem.clone(),
                        csr: spec.csr,
                    }),
                ),
                Precondition::None,
            )
            .unwrap();
        let id = ids.identity(&mesh(), &dp()).unwrap();
        assert_eq!(id.ca_pem, root.cert_pem, "proxies trust the root");
        assert!(
            id.chain_pem.contains(certificate.trim()),
            "leaf + intermediate"
        );
        let sans = certs::cert_uri_sans(&id.chain_pem).unwrap();
        assert!(sans.contains(&"spiffe://default/web".to_owned()));
        assert!(sans.contains(&"kuma://kuma.io/zone/east".to_owned()));
        // The 1-minute lifetime is renewed at 48 s.
        let renew_in = ids.next_renewal().unwrap() - Instant::now();
        assert!(renew_in <= Duration::from_secs(49) && renew_in >= Duration::from_secs(40));
        // Cached while valid.
        assert_eq!(
            ids.identity(&mesh(), &dp()).unwrap().chain_pem,
            id.chain_pem
        );
    }

    #[test]
    fn a_standalone_zone_issues_from_its_own_root() {
        let store = Store::temporary().unwrap();
        store.put(mesh(), Precondition::None).unwrap();
        let ids = Identities::new(store.clone(), "solo", false);
        let id = ids.identity(&mesh(), &dp()).unwrap();
        assert!(certs::cert_uri_sans(&id.chain_pem)
            .unwrap()
            .contains(&"kuma://kuma.io/zone/solo".to_owned()));
        assert!(store
            .get(&ResourceKey::scoped(
                ResourceType::MeshCaRequest,
                "default",
                "solo"
            ))
            .unwrap()
            .is_none());
    }
}
