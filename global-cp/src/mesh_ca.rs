//! Mesh certificate authorities on the global.
//!
//! Every Mesh with a `builtin` mTLS backend gets a root CA here (ECDSA
//! P-256, `conf.caCert.expiration`, default 10 years), kept in the store's
//! meta space; its private key never leaves the global. Each zone sends a
//! [`MeshCaRequest`](api::MeshCaRequestSpec) over KDS with a CSR for the
//! intermediate key it keeps; the global signs it for the zone the KDS
//! connection authenticated as and sends back a
//! [`ZoneIntermediate`](api::ZoneIntermediateSpec). Changing the enabled
//! backend means a new root, so zones re-request and every proxy's
//! certificate and trust bundle rotate.
//!
//! Also here: the global publishes the public half of its dataplane-token
//! signing key as a `DataplaneTokenKey`, so zones can verify tokens it
//! issues.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use api::{Resource, ResourceKey, ResourceType, Spec, ZONE_TAG};
use certs::CertifiedKey;
use store::{Op, Precondition, Store};
use tokio_util::sync::CancellationToken;

const DEFAULT_ROOT_VALIDITY: Duration = Duration::from_secs(10 * 365 * 86_400);
/// Asked for; the signer caps it at the root's own expiry.
const INTERMEDIATE_VALIDITY: Duration = Duration::from_secs(5 * 365 * 86_400);

fn root_meta_key(mesh: &str, backend: &str) -> String {
    format!("mesh-root/{mesh}/{backend}")
}

/// The root CA of `mesh`'s `backend`, created on first use.
fn root(
    store: &Store,
    mesh: &Resource,
    backend: &api::MtlsBackend,
) -> anyhow::Result<CertifiedKey> {
    let key = root_meta_key(&mesh.name, &backend.name);
    if let Some(bytes) = store.get_meta(&key)? {
        let v: serde_json::Value = serde_json::from_slice(&bytes)?;
        return Ok(CertifiedKey {
            cert_pem: v["cert"].as_str().unwrap_or_default().to_owned(),
            key_pem: v["key"].as_str().unwrap_or_default().to_owned(),
        });
    }
    let ca_cert = backend.conf.as_ref().and_then(|c| c.ca_cert.as_ref());
    if let Some(bits) = ca_cert.and_then(|c| c.rsa_bits) {
        tracing::warn!(mesh = %mesh.name, backend = %backend.name, rsa_bits = bits,
            "conf.caCert.RSAbits is accepted for compatibility but not applied: mesh CAs use ECDSA P-256 keys");
    }
    let validity = ca_cert
        .and_then(|c| c.expiration.as_deref())
        .and_then(|e| api::duration::parse_duration(e).ok())
        .unwrap_or(DEFAULT_ROOT_VALIDITY);
    let ca = certs::generate_mesh_ca(&mesh.name, validity)?;
    let v = serde_json::json!({ "cert": ca.cert_pem, "key": ca.key_pem });
    store.put_meta(&key, v.to_string().as_bytes())?;
    tracing::info!(mesh = %mesh.name, backend = %backend.name, ?validity, "created the mesh root CA");
    Ok(ca)
}

/// Brings ZoneIntermediates in line with the zones' requests and the
/// meshes' backends. Returns how many were signed.
pub fn reconcile(store: &Store) -> anyhow::Result<usize> {
    let meshes: BTreeMap<String, Resource> = store
        .list(ResourceType::Mesh, None)?
        .into_iter()
        .map(|m| (m.name.clone(), m))
        .collect();
    let existing: BTreeMap<(String, String), Resource> = store
        .list(ResourceType::ZoneIntermediate, None)?
        .into_iter()
        .map(|r| ((r.mesh.clone().unwrap_or_default(), r.name.clone()), r))
        .collect();
    let mut wanted = BTreeSet::new();
    let mut ops = Vec::new();
    for req in store.list(ResourceType::MeshCaRequest, None)? {
        let (Spec::MeshCaRequest(spec), Some(zone), Some(mesh_name)) =
            (&req.spec, req.labels.get(ZONE_TAG), req.mesh.as_ref())
        else {
            continue;
        };
        let Some(mesh) = meshes.get(mesh_name) else {
            continue;
        };
        let Some(backend) = api::enabled_mtls_backend(mesh) else {
            continue;
        };
        if backend.name != spec.backend {
            // A request for a backend no longer enabled: the zone re-requests.
            continue;
        }
        if backend.kind != "builtin" {
            tracing::warn!(mesh = %mesh_name, backend = %backend.name, kind = %backend.kind,
                "only builtin mTLS backends are supported; not signing");
            continue;
        }
        wanted.insert((mesh_name.clone(), zone.clone()));
        let root = root(store, mesh, backend)?;
        let current = existing
            .get(&(mesh_name.clone(), zone.clone()))
            .and_then(|r| match &r.spec {
                Spec::ZoneIntermediate(s) => Some(s),
                _ => None,
            });
        if current.is_some_and(|c| {
            c.csr == spec.csr && c.root_certificate == root.cert_pem && c.backend == backend.name
        }) {
            continue;
        }
        let certificate = match certs::sign_intermediate(
            &root,
            &spec.csr,
            mesh_name,
            zone,
            INTERMEDIATE_VALIDITY,
        ) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(mesh = %mesh_name, zone, error = %e, "refused a zone's intermediate CA request");
                continue;
            }
        };
        tracing::info!(mesh = %mesh_name, zone, backend = %backend.name, "signed a zone's intermediate CA");
        let spec = api::ZoneIntermediateSpec {
            zone: zone.clone(),
            backend: backend.name.clone(),
            certificate,
            root_certificate: root.cert_pem,
            csr: spec.csr.clone(),
        };
        ops.push(Op::Put(
            Resource::new(zone, Some(mesh_name), Spec::ZoneIntermediate(spec)),
            Precondition::None,
        ));
    }
    let signed = ops.len();
    for (mesh, zone) in existing.keys() {
        if !wanted.contains(&(mesh.clone(), zone.clone())) {
            ops.push(Op::DeleteIfExists(ResourceKey::scoped(
                ResourceType::ZoneIntermediate,
                mesh,
                zone,
            )));
        }
    }
    if !ops.is_empty() {
        store.apply(ops)?;
    }
    // Roots of deleted meshes go with them.
    for (key, _) in store.list_meta("mesh-root/")? {
        let mesh = key
            .strip_prefix("mesh-root/")
            .and_then(|r| r.split('/').next())
            .unwrap_or_default();
        if !meshes.contains_key(mesh) {
            store.delete_meta(&key)?;
            tracing::info!(mesh, "removed the root CA of a deleted mesh");
        }
    }
    Ok(signed)
}

/// Publishes the public key zones verify the global's dataplane tokens with.
pub fn publish_token_key(store: &Store, key: &certs::VerifyingKey) -> anyhow::Result<()> {
    let name = key.key_id();
    let spec = api::DataplaneTokenKeySpec {
        public_key: key.to_base64(),
    };
    let k = ResourceKey::global(ResourceType::DataplaneTokenKey, &name);
    if store
        .get(&k)?
        .is_some_and(|r| r.spec == Spec::DataplaneTokenKey(spec.clone()))
    {
        return Ok(());
    }
    store.put(
        Resource::new(&name, None, Spec::DataplaneTokenKey(spec)),
        Precondition::None,
    )?;
    Ok(())
}

/// Reconciles at start and after every change of a Mesh or a request.
pub async fn run(store: Store, shutdown: CancellationToken) {
    let mut watch = store.watch();
    let pass = |store: Store| async move {
        match tokio::task::spawn_blocking(move || reconcile(&store)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "mesh CA reconciliation failed"),
            Err(e) => tracing::error!(error = %e, "mesh CA task panicked"),
        }
    };
    pass(store.clone()).await;
    loop {
        let relevant = tokio::select! {
            _ = shutdown.cancelled() => return,
            c = watch.recv() => match c {
                Ok(c) => matches!(c.kind.resource().ty(), ResourceType::Mesh | ResourceType::MeshCaRequest | ResourceType::ZoneIntermediate),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => true,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
        };
        if relevant {
            // Coalesce a burst (a zone resubscribing sends many at once).
            while let Ok(c) = watch.try_recv() {
                let _ = c;
            }
            pass(store.clone()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mesh(backend: &str) -> Resource {
        let v = serde_json::json!({
            "type": "Mesh", "name": "payments",
            "mtls": {"enabledBackend": backend, "backends": [
                {"name": "ca-1", "type": "builtin"},
                {"name": "ca-2", "type": "builtin", "conf": {"caCert": {"RSAbits": 2048, "expiration": "1y"}}}
            ]}
        });
        Resource::from_value(v).unwrap()
    }

    fn request(zone: &str, backend: &str) -> (Resource, certs::IntermediateRequest) {
        let req = certs::intermediate_request("payments", zone).unwrap();
        let mut r = Resource::new(
            format!("{zone}.{zone}"),
            Some("payments"),
            Spec::MeshCaRequest(api::MeshCaRequestSpec {
                backend: backend.into(),
                csr: req.csr_pem.clone(),
            }),
        );
        r.labels.insert(ZONE_TAG.into(), zone.into());
        (r, req)
    }

    fn intermediate(store: &Store, zone: &str) -> Option<api::ZoneIntermediateSpec> {
        let key = ResourceKey::scoped(ResourceType::ZoneIntermediate, "payments", zone);
        store.get(&key).unwrap().and_then(|r| match r.spec {
            Spec::ZoneIntermediate(s) => Some(s),
            _ => None,
        })
    }

    #[test]
    fn signs_for_the_authenticated_zone_and_rotates_with_the_backend() {
        let store = Store::temporary().unwrap();
        store.put(mesh("ca-1"), Precondition::None).unwrap();
        let (req, _) = request("east", "ca-1");
        store.put(req, Precondition::None).unwrap();
        assert_eq!(reconcile(&store).unwrap(), 1);
        let first = intermediate(&store, "east").expect("signed");
        assert_eq!(first.zone, "east");
        assert_eq!(first.backend, "ca-1");
        // Nothing to do a second time.
        assert_eq!(reconcile(&store).unwrap(), 0);
        // The intermediate is a CA named after the zone, issued by the root.
        let uris = certs::cert_uri_sans(&first.certificate).unwrap();
        assert!(uris.is_empty());
        // Switching the backend: the old request is stale, nothing is signed
        // for it and the old intermediate is withdrawn.
        store.put(mesh("ca-2"), Precondition::None).unwrap();
        assert_eq!(reconcile(&store).unwrap(), 0);
        assert!(intermediate(&store, "east").is_none());
        let (req, _) = request("east", "ca-2");
        store.put(req, Precondition::None).unwrap();
        assert_eq!(reconcile(&store).unwrap(), 1);
        let second = intermediate(&store, "east").unwrap();
        assert_ne!(
            second.root_certificate, first.root_certificate,
            "a new root"
        );
    }

    #[test]
    fn a_garbage_request_is_refused_and_the_root_key_stays_in_meta() {
        let store = Store::temporary().unwrap();
        store.put(mesh("ca-1"), Precondition::None).unwrap();
        let (mut req, _) = request("east", "ca-1");
        if let Spec::MeshCaRequest(s) = &mut req.spec {
            s.csr =
                "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"
                    .into();
        }
        store.put(req, Precondition::None).unwrap();
        assert_eq!(reconcile(&store).unwrap(), 0);
        assert!(intermediate(&store, "east").is_none());
        // The root exists only in meta, never as a resource.
        let roots = store.list_meta("mesh-root/").unwrap();
        assert_eq!(roots.len(), 1);
        store
            .delete(&ResourceKey::global(ResourceType::Mesh, "payments"), None)
            .unwrap();
        reconcile(&store).unwrap();
        assert!(store.list_meta("mesh-root/").unwrap().is_empty());
    }
}
