//! Mesh identities: a mesh's root CA (kept on the global), the per-zone
//! intermediate CAs it signs from the zones' certificate signing requests,
//! and the workload certificates a zone issues from its intermediate, with
//! SPIFFE and `kuma://` URI SANs.
//!
//! The chain of trust of a mesh is `root → zone intermediate (pathlen 0) →
//! workload`. Each mesh has its own root, so meshes never trust each other.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose,
    PublicKeyData, SanType, SignatureAlgorithm,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateSigningRequestDer;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY};
use x509_parser::prelude::FromDer;

use crate::pem::first_cert;
use crate::pki::{
    distinguished_name, gen_err, load_ca, new_key_pair, random_serial, set_validity,
    set_validity_capped,
};
use crate::{CertError, CertifiedKey};

const ZONE_TAG: &str = "kuma.io/zone";
const SERVICE_TAG: &str = "kuma.io/service";

/// Why `value` cannot be part of a URI SAN (`None` if it can): it must be
/// non-empty printable ASCII without whitespace.
fn uri_part_problem(value: &str) -> Option<String> {
    if value.is_empty() {
        return Some("is empty".into());
    }
    value
        .chars()
        .find(|c| !c.is_ascii_graphic())
        .map(|c| format!("contains {c:?} (only printable ASCII without spaces)"))
}

/// Checks a mesh or zone name: usable in a URI SAN and without `/`, so that
/// `spiffe://<mesh>/…` and `kuma://kuma.io/zone/<zone>` stay unambiguous.
fn check_name(what: &str, name: &str) -> Result<(), CertError> {
    let problem =
        uri_part_problem(name).or_else(|| name.contains('/').then(|| "contains '/'".to_owned()));
    match problem {
        Some(reason) => Err(CertError::InvalidName {
            what: what.to_owned(),
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// A mesh's root CA: ECDSA P-256, `CA:true` with path length 1 (room for
/// the zone intermediates and nothing below them), key usages keyCertSign,
/// cRLSign and digitalSignature, CN `<mesh> root CA`, valid from
/// [`crate::BACKDATE`] ago until `validity` from now.
pub fn generate_mesh_ca(mesh: &str, validity: Duration) -> Result<CertifiedKey, CertError> {
    check_name("mesh", mesh)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(&format!("{mesh} root CA"))?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.serial_number = Some(random_serial()?);
    set_validity(&mut params, validity)?;
    let key = new_key_pair()?;
    let cert = params.self_signed(&key).map_err(gen_err)?;
    Ok(CertifiedKey {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// The subject CN of the intermediate CA of `mesh` in `zone`.
fn intermediate_cn(mesh: &str, zone: &str) -> String {
    format!("{mesh} zone {zone} intermediate CA")
}

/// What a zone sends to the global to get an intermediate CA: a PKCS#10
/// certificate signing request (PEM, `CERTIFICATE REQUEST`). The private key
/// (PKCS#8 PEM) stays in the zone.
///
/// `Debug` shows the request but never the key.
#[derive(Clone)]
pub struct IntermediateRequest {
    pub csr_pem: String,
    pub key_pem: String,
}

impl fmt::Debug for IntermediateRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IntermediateRequest")
            .field("csr_pem", &self.csr_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// Zone side: a fresh ECDSA P-256 key and a CSR for the intermediate CA of
/// `mesh` in `zone`. The CSR asks for CN `<mesh> zone <zone> intermediate
/// CA`, `CA:true, pathlen 0`, but the global decides all of that itself (see
/// [`sign_intermediate`]); what counts is the key, and the CSR proves
/// possession of it.
///
/// Once signed, the zone's issuing CA is `CertifiedKey { cert_pem:
/// <the signed intermediate>, key_pem: request.key_pem }`.
pub fn intermediate_request(mesh: &str, zone: &str) -> Result<IntermediateRequest, CertError> {
    check_name("mesh", mesh)?;
    check_name("zone", zone)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(&intermediate_cn(mesh, zone))?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = new_key_pair()?;
    let csr = params.serialize_request(&key).map_err(gen_err)?;
    Ok(IntermediateRequest {
        csr_pem: csr.pem().map_err(gen_err)?,
        key_pem: key.serialize_pem(),
    })
}

/// The ECDSA P-256 public key of a verified CSR.
struct CsrKey {
    /// The uncompressed point (65 bytes).
    point: Vec<u8>,
}

impl PublicKeyData for CsrKey {
    fn der_bytes(&self) -> &[u8] {
        &self.point
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

/// Parses `csr_pem`, checks that it is signed by its own key (proof of
/// possession) and that the key is ECDSA P-256, and returns the key. Nothing
/// else of the request is looked at.
fn csr_key(csr_pem: &str) -> Result<CsrKey, CertError> {
    let bad = |reason: String| CertError::InvalidCsr(reason);
    let der = CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes())
        .map_err(|e| bad(format!("no PEM CERTIFICATE REQUEST: {e}")))?;
    let (rest, csr) = X509CertificationRequest::from_der(der.as_ref())
        .map_err(|e| bad(format!("cannot parse: {e}")))?;
    if !rest.is_empty() {
        return Err(bad("trailing data after the request".into()));
    }
    csr.verify_signature()
        .map_err(|e| bad(format!("not signed by its own key: {e}")))?;
    let spki = &csr.certification_request_info.subject_pki;
    let is_p256 = spki.algorithm.algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY
        && spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .is_some_and(|curve| curve == OID_EC_P256);
    let point = spki.subject_public_key.data.to_vec();
    if !is_p256 || point.len() != 65 || point[0] != 0x04 {
        return Err(bad(
            "the key is not an (uncompressed) ECDSA P-256 key".into()
        ));
    }
    Ok(CsrKey { point })
}

/// Global side: signs a zone's CSR as the intermediate CA of `mesh` in
/// `zone` under `root` (the mesh's root CA, see [`generate_mesh_ca`]).
///
/// Only the CSR's key is taken (after checking the CSR's signature and that
/// the key is ECDSA P-256); subject, SANs and requested extensions are
/// ignored. The certificate gets CN `<mesh> zone <zone> intermediate CA` —
/// `zone` must be the name the zone authenticated as, not one it claims —
/// `CA:true, pathlen 0` (it may issue workload certificates, not further
/// CAs), key usages keyCertSign and cRLSign, and is valid from
/// [`crate::BACKDATE`] ago until `validity` from now, but never after the
/// root's own `notAfter`.
///
/// Returns the intermediate certificate PEM (followed by `root`'s chain
/// without a self-signed root, i.e. nothing more for a mesh root).
pub fn sign_intermediate(
    root: &CertifiedKey,
    csr_pem: &str,
    mesh: &str,
    zone: &str,
    validity: Duration,
) -> Result<String, CertError> {
    check_name("mesh", mesh)?;
    check_name("zone", zone)?;
    let key = csr_key(csr_pem)?;
    let loaded = load_ca(root)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(&intermediate_cn(mesh, zone))?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial()?);
    set_validity_capped(&mut params, validity, loaded.not_after)?;
    let cert = params.signed_by(&key, &loaded.issuer).map_err(gen_err)?;
    let mut cert_pem = cert.pem();
    for der in &loaded.chain {
        cert_pem.push_str(&crate::pem::encode("CERTIFICATE", der));
    }
    Ok(cert_pem)
}

fn uri(s: String) -> Result<SanType, CertError> {
    let ia5 =
        rcgen::string::Ia5String::try_from(s.as_str()).map_err(|e| CertError::InvalidSan {
            name: s.clone(),
            reason: e.to_string(),
        })?;
    Ok(SanType::URI(ia5))
}

/// The URI SANs of a workload: `spiffe://<mesh>/<service>` per distinct
/// `kuma.io/service` value, then `kuma://<tag>/<value>` per tag value, with
/// `kuma.io/zone` forced to `zone` (any `kuma.io/zone` values in `tags` are
/// replaced). Sorted by tag, then value.
pub fn workload_uris(
    mesh: &str,
    zone: &str,
    tags: &BTreeMap<String, BTreeSet<String>>,
) -> Vec<String> {
    let mut tags = tags.clone();
    tags.insert(ZONE_TAG.to_owned(), BTreeSet::from([zone.to_owned()]));
    let mut uris: Vec<String> = tags
        .get(SERVICE_TAG)
        .into_iter()
        .flatten()
        .map(|s| format!("spiffe://{mesh}/{s}"))
        .collect();
    for (k, values) in &tags {
        for v in values {
            uris.push(format!("kuma://{k}/{v}"));
        }
    }
    uris
}

/// Checks the tags of a workload: keys and values non-empty printable ASCII
/// without whitespace (they become URI SANs). `kuma.io/zone` is skipped, as
/// it is replaced anyway.
fn check_tags(tags: &BTreeMap<String, BTreeSet<String>>) -> Result<(), CertError> {
    for (key, values) in tags {
        if key == ZONE_TAG {
            continue;
        }
        let bad = |name: String, reason: String| CertError::InvalidSan { name, reason };
        if let Some(reason) = uri_part_problem(key) {
            return Err(bad(format!("tag {key:?}"), format!("tag key {reason}")));
        }
        for value in values {
            if let Some(reason) = uri_part_problem(value) {
                return Err(bad(
                    format!("kuma://{key}/{value}"),
                    format!("tag value {reason}"),
                ));
            }
        }
    }
    Ok(())
}

/// Zone side: a workload certificate issued by `intermediate` (the zone's
/// intermediate CA of `mesh`; the mesh root works too): a fresh ECDSA P-256
/// key, CN `<first service>.<mesh>`, the URI SANs of [`workload_uris`]
/// (`kuma.io/zone` forced to `zone`), `CA:false`, key usages
/// digitalSignature and keyEncipherment, extended key usages serverAuth and
/// clientAuth, valid from [`crate::BACKDATE`] ago until `validity` from now
/// but never after the issuer's own `notAfter` (read the real expiry with
/// [`cert_not_after`]).
///
/// The returned `cert_pem` is the leaf followed by the issuer's chain
/// without the root: leaf + intermediate.
pub fn issue_workload_cert(
    intermediate: &CertifiedKey,
    mesh: &str,
    zone: &str,
    tags: &BTreeMap<String, BTreeSet<String>>,
    validity: Duration,
) -> Result<CertifiedKey, CertError> {
    check_name("mesh", mesh)?;
    check_name("zone", zone)?;
    check_tags(tags)?;
    let loaded = load_ca(intermediate)?;
    let mut params = CertificateParams::default();
    let service = tags
        .get(SERVICE_TAG)
        .and_then(|s| s.iter().next())
        .map_or("workload", String::as_str);
    params.distinguished_name = distinguished_name(&format!("{service}.{mesh}"))?;
    params.subject_alt_names = workload_uris(mesh, zone, tags)
        .into_iter()
        .map(uri)
        .collect::<Result<_, _>>()?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial()?);
    set_validity_capped(&mut params, validity, loaded.not_after)?;
    let key = new_key_pair()?;
    let cert = params.signed_by(&key, &loaded.issuer).map_err(gen_err)?;
    let mut cert_pem = cert.pem();
    for der in &loaded.chain {
        cert_pem.push_str(&crate::pem::encode("CERTIFICATE", der));
    }
    Ok(CertifiedKey {
        cert_pem,
        key_pem: key.serialize_pem(),
    })
}

fn parsed<T>(
    cert_pem: &str,
    f: impl FnOnce(&x509_parser::certificate::X509Certificate<'_>) -> T,
) -> Result<T, CertError> {
    let der = first_cert(cert_pem, "certificate")?;
    let (_, cert) =
        x509_parser::parse_x509_certificate(der.as_ref()).map_err(|e| CertError::InvalidPem {
            what: "certificate".into(),
            reason: e.to_string(),
        })?;
    Ok(f(&cert))
}

/// URI SANs of the first certificate in `cert_pem`, in certificate order
/// (empty if it has none).
pub fn cert_uri_sans(cert_pem: &str) -> Result<Vec<String>, CertError> {
    parsed(cert_pem, |c| {
        c.subject_alternative_name()
            .ok()
            .flatten()
            .map(|ext| {
                ext.value
                    .general_names
                    .iter()
                    .filter_map(|n| match n {
                        x509_parser::extensions::GeneralName::URI(u) => Some((*u).to_owned()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default()
    })
}

/// `notAfter` of the first certificate in `cert_pem`, unix seconds.
pub fn cert_not_after(cert_pem: &str) -> Result<u64, CertError> {
    parsed(cert_pem, |c| {
        c.validity().not_after.timestamp().max(0) as u64
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rcgen::{DnType, Issuer, KeyPair};
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::WebPkiSupportedAlgorithms;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
    use rustls::{
        CertificateError, ClientConfig, DigitallySignedStruct, Error as TlsError, RootCertStore,
        SignatureScheme,
    };
    use time::OffsetDateTime;
    use x509_parser::certificate::X509Certificate;
    use x509_parser::parse_x509_certificate;

    use super::*;
    use crate::pem::{parse_certs, parse_private_key};
    use crate::test_support::{session, Failure};
    use crate::BACKDATE;

    const HOUR: Duration = Duration::from_secs(3600);
    const DAY: Duration = Duration::from_secs(24 * 3600);
    const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);

    fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, BTreeSet<String>> {
        let mut t: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (k, v) in pairs {
            t.entry((*k).into()).or_default().insert((*v).into());
        }
        t
    }

    fn ders(pem: &str) -> Vec<CertificateDer<'static>> {
        parse_certs(pem, "test").expect("PEM parses")
    }

    fn x509<'a>(der: &'a CertificateDer<'_>) -> X509Certificate<'a> {
        parse_x509_certificate(der).expect("X.509").1
    }

    fn cn(c: &X509Certificate<'_>) -> String {
        c.subject()
            .iter_common_name()
            .next()
            .expect("CN")
            .as_str()
            .expect("utf8")
            .to_owned()
    }

    fn path_len(c: &X509Certificate<'_>) -> (bool, Option<u32>) {
        let bc = c
            .basic_constraints()
            .expect("bc")
            .expect("bc present")
            .value;
        (bc.ca, bc.path_len_constraint)
    }

    fn now() -> i64 {
        OffsetDateTime::now_utc().unix_timestamp()
    }

    /// The zone's issuing CA for `mesh`: CSR in the zone, signed by the
    /// global, combined with the zone's key.
    fn zone_ca(root: &CertifiedKey, mesh: &str, zone: &str) -> CertifiedKey {
        let req = intermediate_request(mesh, zone).expect("request");
        let cert_pem = sign_intermediate(root, &req.csr_pem, mesh, zone, YEAR).expect("signed");
        CertifiedKey {
            cert_pem,
            key_pem: req.key_pem,
        }
    }

    fn workload(ca: &CertifiedKey, mesh: &str, zone: &str, service: &str) -> CertifiedKey {
        issue_workload_cert(ca, mesh, zone, &tags(&[(SERVICE_TAG, service)]), HOUR)
            .expect("workload")
    }

    /// Path validation of `chain_pem` (leaf first) as a client certificate
    /// under `root_pem`, as an mTLS server does it.
    fn verify_chain(root_pem: &str, chain_pem: &str) -> Result<(), TlsError> {
        let mut roots = RootCertStore::empty();
        roots
            .add(first_cert(root_pem, "root").expect("root"))
            .expect("add");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
            .build()
            .expect("verifier");
        let chain = ders(chain_pem);
        verifier
            .verify_client_cert(&chain[0], &chain[1..], UnixTime::now())
            .map(|_| ())
    }

    /// Verifies a server as Envoy does inside a mesh: the chain against the
    /// mesh root, then the expected SPIFFE id among the URI SANs (there are
    /// no DNS names to match the SNI against).
    #[derive(Debug)]
    struct SpiffeVerifier {
        roots: Arc<RootCertStore>,
        expected: String,
        algs: WebPkiSupportedAlgorithms,
    }

    impl ServerCertVerifier for SpiffeVerifier {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp_response: &[u8],
            now: UnixTime,
        ) -> Result<ServerCertVerified, TlsError> {
            let cert = ParsedCertificate::try_from(end_entity)?;
            rustls::client::verify_server_cert_signed_by_trust_anchor(
                &cert,
                &self.roots,
                intermediates,
                now,
                self.algs.all,
            )?;
            let sans = cert_uri_sans(&crate::pem::encode("CERTIFICATE", end_entity))
                .map_err(|e| TlsError::General(e.to_string()))?;
            if sans.contains(&self.expected) {
                Ok(ServerCertVerified::assertion())
            } else {
                Err(TlsError::InvalidCertificate(
                    CertificateError::NotValidForName,
                ))
            }
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, TlsError> {
            rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, TlsError> {
            rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.algs.supported_schemes()
        }
    }

    /// A sidecar's upstream TLS: trusts `root_pem`, expects `expected` as
    /// the server's SPIFFE id, presents `me` (if any) as client certificate.
    fn mesh_client(root_pem: &str, expected: &str, me: Option<&CertifiedKey>) -> ClientConfig {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        roots
            .add(first_cert(root_pem, "root").expect("root"))
            .expect("add");
        let verifier = SpiffeVerifier {
            roots: Arc::new(roots),
            expected: expected.to_owned(),
            algs: provider.signature_verification_algorithms,
        };
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier));
        match me {
            Some(me) => builder
                .with_client_auth_cert(
                    parse_certs(&me.cert_pem, "chain").expect("chain"),
                    parse_private_key(&me.key_pem, "key").expect("key"),
                )
                .expect("client cert"),
            None => builder.with_no_client_auth(),
        }
    }

    /// A sidecar's inbound TLS: presents `me`, requires a client
    /// certificate chaining to `root_pem`.
    fn mesh_server(root_pem: &str, me: &CertifiedKey) -> rustls::ServerConfig {
        crate::server_config(&me.cert_pem, &me.key_pem, Some(root_pem)).expect("server config")
    }

    #[test]
    fn mesh_ca_is_a_p256_root_named_after_the_mesh() {
        let root = generate_mesh_ca("default", YEAR).expect("root");
        let der = ders(&root.cert_pem);
        assert_eq!(der.len(), 1);
        let c = x509(&der[0]);
        assert_eq!(cn(&c), "default root CA");
        assert_eq!(c.subject().as_raw(), c.issuer().as_raw());
        assert_eq!(path_len(&c), (true, Some(1)));
        assert!(c
            .key_usage()
            .expect("ku")
            .expect("ku")
            .value
            .key_cert_sign());
        assert_eq!(
            c.signature_algorithm.algorithm,
            x509_parser::oid_registry::OID_SIG_ECDSA_WITH_SHA256
        );
        let key = KeyPair::from_pem(&root.key_pem).expect("key");
        assert_eq!(key.algorithm(), &rcgen::PKCS_ECDSA_P256_SHA256);
        let not_after = cert_not_after(&root.cert_pem).expect("notAfter") as i64;
        assert!((not_after - (now() + YEAR.as_secs() as i64)).abs() < 60);
        for bad in ["", "a b", "a/b", "ünï"] {
            assert!(
                matches!(
                    generate_mesh_ca(bad, YEAR),
                    Err(CertError::InvalidName { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn intermediate_round_trip_through_a_csr() {
        let root = generate_mesh_ca("default", 10 * YEAR).expect("root");
        let req = intermediate_request("default", "zone-1").expect("request");
        assert!(req
            .csr_pem
            .starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
        assert!(!format!("{req:?}").contains("PRIVATE KEY"));
        let key = KeyPair::from_pem(&req.key_pem).expect("zone key");
        assert_eq!(key.algorithm(), &rcgen::PKCS_ECDSA_P256_SHA256);

        let inter_pem =
            sign_intermediate(&root, &req.csr_pem, "default", "zone-1", YEAR).expect("signed");
        let der = ders(&inter_pem);
        assert_eq!(der.len(), 1, "the root is not appended");
        let c = x509(&der[0]);
        let root_der = ders(&root.cert_pem);
        let r = x509(&root_der[0]);
        assert_eq!(cn(&c), "default zone zone-1 intermediate CA");
        assert_eq!(c.issuer().as_raw(), r.subject().as_raw());
        c.verify_signature(Some(r.public_key()))
            .expect("signed by the root");
        assert_eq!(path_len(&c), (true, Some(0)));
        let ku = c.key_usage().expect("ku").expect("ku present").value;
        assert!(ku.key_cert_sign());
        assert!(!ku.digital_signature());
        assert_eq!(
            c.public_key().subject_public_key.data.as_ref(),
            key.public_key_raw(),
            "the certificate is for the zone's key"
        );
        let not_after = cert_not_after(&inter_pem).expect("notAfter") as i64;
        assert!((not_after - (now() + YEAR.as_secs() as i64)).abs() < 60);
        assert!(c.validity().not_before.timestamp() <= now() - BACKDATE.as_secs() as i64 + 60);

        // The zone can issue with it: the key matches the certificate.
        let zone_ca = CertifiedKey {
            cert_pem: inter_pem,
            key_pem: req.key_pem,
        };
        let leaf = workload(&zone_ca, "default", "zone-1", "web");
        verify_chain(&root.cert_pem, &leaf.cert_pem).expect("root → intermediate → workload");
    }

    #[test]
    fn sign_intermediate_ignores_what_the_csr_asks_for() {
        let root = generate_mesh_ca("default", YEAR).expect("root");
        let mut params = CertificateParams::new(vec!["evil.example".to_string()]).expect("params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, "evil");
        params
            .distinguished_name
            .push(DnType::OrganizationName, "default zone zone-2");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let csr = params
            .serialize_request(&key)
            .expect("csr")
            .pem()
            .expect("pem");

        let pem = sign_intermediate(&root, &csr, "default", "zone-1", YEAR).expect("signed");
        let der = ders(&pem);
        let c = x509(&der[0]);
        assert_eq!(cn(&c), "default zone zone-1 intermediate CA");
        assert_eq!(
            c.subject().iter_attributes().count(),
            1,
            "only the CN the global chose"
        );
        assert_eq!(
            path_len(&c),
            (true, Some(0)),
            "not the unconstrained CA asked for"
        );
        assert!(c.subject_alternative_name().expect("san").is_none());
        assert!(c.extended_key_usage().expect("eku").is_none());
        assert_eq!(
            c.public_key().subject_public_key.data.as_ref(),
            key.public_key_raw()
        );
    }

    #[test]
    fn sign_intermediate_refuses_bad_requests() {
        let root = generate_mesh_ca("default", YEAR).expect("root");
        let sign = |csr: &str| sign_intermediate(&root, csr, "default", "zone-1", YEAR);
        let good = intermediate_request("default", "zone-1").expect("request");

        for garbage in ["", "not a csr", &root.cert_pem, &good.key_pem] {
            assert!(
                matches!(sign(garbage), Err(CertError::InvalidCsr(_))),
                "{garbage:?}"
            );
        }
        // Well-formed PEM, but not a CSR inside.
        let junk = crate::pem::encode("CERTIFICATE REQUEST", b"\x30\x03\x02\x01\x00");
        assert!(matches!(sign(&junk), Err(CertError::InvalidCsr(_))));

        // A signature that does not verify (no proof of possession).
        let mut der = CertificateSigningRequestDer::from_pem_slice(good.csr_pem.as_bytes())
            .expect("der")
            .as_ref()
            .to_vec();
        let last = der.len() - 1;
        der[last] ^= 0x01;
        let tampered = crate::pem::encode("CERTIFICATE REQUEST", &der);
        match sign(&tampered) {
            Err(CertError::InvalidCsr(reason)) => assert!(reason.contains("signed"), "{reason}"),
            other => panic!("expected InvalidCsr, got {other:?}"),
        }

        // Keys other than P-256.
        for alg in [&rcgen::PKCS_ED25519, &rcgen::PKCS_ECDSA_P384_SHA384] {
            let key = KeyPair::generate_for(alg).expect("key");
            let csr = CertificateParams::default()
                .serialize_request(&key)
                .expect("csr")
                .pem()
                .expect("pem");
            match sign(&csr) {
                Err(CertError::InvalidCsr(reason)) => assert!(reason.contains("P-256")),
                other => panic!("expected InvalidCsr, got {other:?}"),
            }
        }

        // Names, and a root that is not a CA.
        assert!(matches!(
            sign_intermediate(&root, &good.csr_pem, "default", "", YEAR),
            Err(CertError::InvalidName { .. })
        ));
        assert!(matches!(
            sign_intermediate(&root, &good.csr_pem, "", "zone-1", YEAR),
            Err(CertError::InvalidName { .. })
        ));
        let leaf = workload(&root, "default", "zone-1", "web");
        assert!(matches!(
            sign_intermediate(&leaf, &good.csr_pem, "default", "zone-1", YEAR),
            Err(CertError::InvalidCa(_))
        ));
        assert!(matches!(
            sign_intermediate(&root, &good.csr_pem, "default", "zone-1", Duration::ZERO),
            Err(CertError::InvalidValidity(_))
        ));
        assert!(sign(&good.csr_pem).is_ok());
    }

    #[test]
    fn nothing_outlives_its_issuer() {
        let root = generate_mesh_ca("default", HOUR).expect("root");
        let root_end = cert_not_after(&root.cert_pem).expect("notAfter");
        let req = intermediate_request("default", "zone-1").expect("request");
        let inter =
            sign_intermediate(&root, &req.csr_pem, "default", "zone-1", 10 * YEAR).expect("signed");
        assert_eq!(cert_not_after(&inter).expect("notAfter"), root_end);
        let zone_ca = CertifiedKey {
            cert_pem: inter,
            key_pem: req.key_pem,
        };
        let leaf = issue_workload_cert(
            &zone_ca,
            "default",
            "zone-1",
            &tags(&[(SERVICE_TAG, "web")]),
            DAY,
        )
        .expect("leaf");
        assert_eq!(cert_not_after(&leaf.cert_pem).expect("notAfter"), root_end);
    }

    #[test]
    fn the_intermediate_cannot_make_further_cas_nor_can_a_workload() {
        let root = generate_mesh_ca("default", YEAR).expect("root");

        // A rogue sub-CA below `inter`, and a workload below that sub-CA,
        // checked under the mesh root.
        let via_sub_ca = |inter: &CertifiedKey| {
            let issuer = Issuer::from_ca_cert_pem(
                &inter.cert_pem,
                KeyPair::from_pem(&inter.key_pem).expect("key"),
            )
            .expect("issuer");
            let mut params = CertificateParams::default();
            params.distinguished_name = distinguished_name("rogue sub CA").expect("dn");
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
            let key = new_key_pair().expect("key");
            let sub = params.signed_by(&key, &issuer).expect("sub CA");
            let sub_ca = CertifiedKey {
                cert_pem: format!("{}{}", sub.pem(), inter.cert_pem),
                key_pem: key.serialize_pem(),
            };
            let leaf = workload(&sub_ca, "default", "zone-1", "web");
            assert_eq!(ders(&leaf.cert_pem).len(), 3);
            verify_chain(&root.cert_pem, &leaf.cert_pem)
        };

        // Control: under an intermediate without a path length limit (not
        // what sign_intermediate makes) the rogue chain is accepted. (The
        // root's own pathlen 1 does not stop it: webpki, like RFC 5280,
        // does not apply a trust anchor's constraints.)
        let root_issuer = Issuer::from_ca_cert_pem(
            &root.cert_pem,
            KeyPair::from_pem(&root.key_pem).expect("key"),
        )
        .expect("issuer");
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name("unconstrained").expect("dn");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let key = new_key_pair().expect("key");
        let loose = CertifiedKey {
            cert_pem: params
                .signed_by(&key, &root_issuer)
                .expect("intermediate")
                .pem(),
            key_pem: key.serialize_pem(),
        };
        via_sub_ca(&loose).expect("control: no path length limit");

        // The real intermediate has pathlen 0 and refuses it.
        let inter = zone_ca(&root, "default", "zone-1");
        assert!(via_sub_ca(&inter).is_err(), "pathlen 0 stops a sub-CA");

        // A workload certificate cannot issue: refused here…
        let leaf = workload(&inter, "default", "zone-1", "web");
        assert!(matches!(
            issue_workload_cert(&leaf, "default", "zone-1", &tags(&[]), HOUR),
            Err(CertError::InvalidCa(_))
        ));
        // …and a certificate signed with a workload's key anyway is refused
        // by path validation.
        let leaf_issuer = Issuer::from_ca_cert_pem(
            &leaf.cert_pem,
            KeyPair::from_pem(&leaf.key_pem).expect("key"),
        )
        .expect("issuer");
        let mut p = CertificateParams::default();
        p.distinguished_name = distinguished_name("forged.default").expect("dn");
        p.subject_alt_names = vec![uri("spiffe://default/admin".into()).expect("uri")];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let k = new_key_pair().expect("key");
        let forged = format!(
            "{}{}",
            p.signed_by(&k, &leaf_issuer).expect("forged").pem(),
            leaf.cert_pem
        );
        assert!(verify_chain(&root.cert_pem, &forged).is_err());
        verify_chain(&root.cert_pem, &leaf.cert_pem).expect("the workload itself is fine");
    }

    #[test]
    fn workload_certificates_carry_services_tags_and_the_issuing_zone() {
        let root = generate_mesh_ca("default", YEAR).expect("root");
        let inter = zone_ca(&root, "default", "dmz");
        let t = tags(&[
            (SERVICE_TAG, "web"),
            (SERVICE_TAG, "api"),
            (ZONE_TAG, "other"),
            ("version", "v1"),
            ("team", "a"),
            ("team", "b"),
        ]);
        let cert = issue_workload_cert(&inter, "default", "dmz", &t, Duration::from_secs(600))
            .expect("workload");
        let sans = cert_uri_sans(&cert.cert_pem).expect("sans");
        assert_eq!(
            sans,
            [
                "spiffe://default/api",
                "spiffe://default/web",
                "kuma://kuma.io/service/api",
                "kuma://kuma.io/service/web",
                "kuma://kuma.io/zone/dmz",
                "kuma://team/a",
                "kuma://team/b",
                "kuma://version/v1",
            ]
        );
        assert_eq!(sans, workload_uris("default", "dmz", &t));

        // The zone is added even when the tags do not mention it.
        let plain = workload(&inter, "default", "dmz", "web");
        assert_eq!(
            cert_uri_sans(&plain.cert_pem).expect("sans"),
            [
                "spiffe://default/web",
                "kuma://kuma.io/service/web",
                "kuma://kuma.io/zone/dmz",
            ]
        );

        // Chain: leaf + intermediate, not the root.
        let chain = ders(&cert.cert_pem);
        assert_eq!(chain.len(), 2);
        assert_eq!(chain[1], ders(&inter.cert_pem)[0]);
        let c = x509(&chain[0]);
        assert_eq!(c.issuer().as_raw(), x509(&chain[1]).subject().as_raw());
        assert_eq!(cn(&c), "api.default");
        assert_eq!(path_len(&c), (false, None));
        let ku = c.key_usage().expect("ku").expect("ku present").value;
        assert!(ku.digital_signature() && ku.key_encipherment() && !ku.key_cert_sign());
        let eku = c.extended_key_usage().expect("eku").expect("eku").value;
        assert!(eku.server_auth && eku.client_auth);
        let key = KeyPair::from_pem(&cert.key_pem).expect("key");
        assert_eq!(key.algorithm(), &rcgen::PKCS_ECDSA_P256_SHA256);
        assert_eq!(
            c.public_key().subject_public_key.data.as_ref(),
            key.public_key_raw()
        );

        // Validity: backdated, and notAfter ≈ now + validity.
        let now = now();
        let exp = cert_not_after(&cert.cert_pem).expect("notAfter") as i64;
        assert!((exp - (now + 600)).abs() <= 10, "{exp} vs {now}");
        let nb = c.validity().not_before.timestamp();
        assert!((nb - (now - BACKDATE.as_secs() as i64)).abs() <= 10);

        verify_chain(&root.cert_pem, &cert.cert_pem).expect("chains to the mesh root");
    }

    #[test]
    fn workload_input_is_checked() {
        let root = generate_mesh_ca("default", YEAR).expect("root");
        let inter = zone_ca(&root, "default", "z");
        let ok = tags(&[(SERVICE_TAG, "web")]);
        let issue = |mesh: &str, zone: &str, t: &BTreeMap<String, BTreeSet<String>>| {
            issue_workload_cert(&inter, mesh, zone, t, HOUR)
        };
        assert!(matches!(
            issue("", "z", &ok),
            Err(CertError::InvalidName { .. })
        ));
        assert!(matches!(
            issue("default", "a/b", &ok),
            Err(CertError::InvalidName { .. })
        ));
        assert!(matches!(
            issue("default", "z z", &ok),
            Err(CertError::InvalidName { .. })
        ));
        for bad in [
            tags(&[(SERVICE_TAG, "has space")]),
            tags(&[(SERVICE_TAG, "")]),
            tags(&[(SERVICE_TAG, "ünï")]),
            tags(&[("", "x")]),
            tags(&[("ver sion", "x")]),
        ] {
            assert!(
                matches!(
                    issue("default", "z", &bad),
                    Err(CertError::InvalidSan { .. })
                ),
                "{bad:?}"
            );
        }
        // A bogus kuma.io/zone value does not matter: it is replaced.
        assert!(issue("default", "z", &tags(&[(ZONE_TAG, "bad value")])).is_ok());
        assert!(issue("default", "z", &ok).is_ok());
        assert!(matches!(
            issue_workload_cert(&inter, "default", "z", &ok, Duration::ZERO),
            Err(CertError::InvalidValidity(_))
        ));
    }

    #[test]
    fn workloads_of_one_mesh_talk_mtls_across_zones() {
        let root = generate_mesh_ca("default", YEAR).expect("root");
        let web = workload(
            &zone_ca(&root, "default", "zone-1"),
            "default",
            "zone-1",
            "web",
        );
        let backend = workload(
            &zone_ca(&root, "default", "zone-2"),
            "default",
            "zone-2",
            "backend",
        );
        let client = mesh_client(&root.cert_pem, "spiffe://default/backend", Some(&web));
        session(client, mesh_server(&root.cert_pem, &backend), "backend")
            .expect("mTLS between two workloads of the mesh");

        // The server requires a client certificate.
        let anonymous = mesh_client(&root.cert_pem, "spiffe://default/backend", None);
        match session(anonymous, mesh_server(&root.cert_pem, &backend), "backend") {
            Err(Failure::Server(TlsError::NoCertificatesPresented)) => {}
            other => panic!("expected NoCertificatesPresented, got {other:?}"),
        }

        // The client checks whom it talks to.
        let client = mesh_client(&root.cert_pem, "spiffe://default/db", Some(&web));
        match session(client, mesh_server(&root.cert_pem, &backend), "backend") {
            Err(Failure::Client(TlsError::InvalidCertificate(
                CertificateError::NotValidForName,
            ))) => {}
            other => panic!("expected NotValidForName, got {other:?}"),
        }
    }

    #[test]
    fn meshes_never_trust_each_other() {
        let root = generate_mesh_ca("default", YEAR).expect("root");
        let backend = workload(
            &zone_ca(&root, "default", "zone-1"),
            "default",
            "zone-1",
            "backend",
        );
        // Another mesh, and a mesh of the same name under another root (a
        // second global, or a root that was replaced).
        for (mesh, expected) in [
            ("other", CertificateError::UnknownIssuer),
            ("default", CertificateError::BadSignature),
        ] {
            let foreign_root = generate_mesh_ca(mesh, YEAR).expect("root");
            let foreign_ca = zone_ca(&foreign_root, mesh, "zone-1");
            // Even claiming the same identity as a legitimate client.
            let intruder = workload(&foreign_ca, mesh, "zone-1", "web");
            let client = mesh_client(&root.cert_pem, "spiffe://default/backend", Some(&intruder));
            match session(client, mesh_server(&root.cert_pem, &backend), "backend") {
                Err(Failure::Server(TlsError::InvalidCertificate(e))) if e == expected => {}
                other => {
                    panic!("{mesh}: expected the server to refuse with {expected:?}, got {other:?}")
                }
            }
            // The other way round: a server of the foreign mesh is refused
            // by a client of this one.
            let foreign_server = workload(&foreign_ca, mesh, "zone-1", "backend");
            let web = workload(
                &zone_ca(&root, "default", "zone-1"),
                "default",
                "zone-1",
                "web",
            );
            let client = mesh_client(
                &root.cert_pem,
                &format!("spiffe://{mesh}/backend"),
                Some(&web),
            );
            match session(
                client,
                mesh_server(&foreign_root.cert_pem, &foreign_server),
                "backend",
            ) {
                Err(Failure::Client(TlsError::InvalidCertificate(e))) if e == expected => {}
                other => {
                    panic!("{mesh}: expected the client to refuse with {expected:?}, got {other:?}")
                }
            }
            // And path validation alone agrees.
            assert!(verify_chain(&root.cert_pem, &intruder.cert_pem).is_err());
            verify_chain(&foreign_root.cert_pem, &intruder.cert_pem).expect("own root");
        }
    }
}
