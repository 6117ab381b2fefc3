//! Mesh identities: a mesh's root CA and the workload certificates it (or
//! an intermediate under it) issues, with SPIFFE and `kuma://` URI SANs.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose, SanType,
};

use crate::pem::first_cert;
use crate::pki::{distinguished_name, gen_err, load_ca, new_key_pair, random_serial, set_validity};
use crate::{CertError, CertifiedKey};

const ZONE_TAG: &str = "kuma.io/zone";
const SERVICE_TAG: &str = "kuma.io/service";

/// A mesh's root CA: ECDSA P-256, `CA:true`, CN `<mesh> root CA`.
pub fn generate_mesh_ca(mesh: &str, validity: Duration) -> Result<CertifiedKey, CertError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(&format!("{mesh} root CA"))?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
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

fn uri(s: String) -> Result<SanType, CertError> {
    let ia5 =
        rcgen::string::Ia5String::try_from(s.as_str()).map_err(|e| CertError::InvalidSan {
            name: s.clone(),
            reason: e.to_string(),
        })?;
    Ok(SanType::URI(ia5))
}

/// The URI SANs of a workload: `spiffe://<mesh>/<service>` per service and
/// `kuma://<tag>/<value>` per tag value, with `kuma.io/zone` forced to `zone`.
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

/// A workload certificate issued by `issuer` (the mesh CA or a zone's
/// intermediate): fresh P-256 key, URI SANs from [`workload_uris`], not a
/// CA, digitalSignature + keyEncipherment, serverAuth + clientAuth. The
/// returned chain is the leaf plus the issuer's chain without the root.
pub fn issue_workload_cert(
    issuer: &CertifiedKey,
    mesh: &str,
    zone: &str,
    tags: &BTreeMap<String, BTreeSet<String>>,
    validity: Duration,
) -> Result<CertifiedKey, CertError> {
    let loaded = load_ca(issuer)?;
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
    set_validity(&mut params, validity)?;
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

/// URI SANs of the first certificate in `cert_pem`.
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

/// notAfter of the first certificate in `cert_pem`, unix seconds.
pub fn cert_not_after(cert_pem: &str) -> Result<u64, CertError> {
    parsed(cert_pem, |c| {
        c.validity().not_after.timestamp().max(0) as u64
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, BTreeSet<String>> {
        let mut t: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (k, v) in pairs {
            t.entry((*k).into()).or_default().insert((*v).into());
        }
        t
    }

    #[test]
    fn workload_sans_carry_services_tags_and_the_issuing_zone() {
        let ca = generate_mesh_ca("default", Duration::from_secs(3600)).unwrap();
        let t = tags(&[
            ("kuma.io/service", "web"),
            ("kuma.io/service", "api"),
            ("kuma.io/zone", "other"),
            ("version", "v1"),
        ]);
        let cert =
            issue_workload_cert(&ca, "default", "dmz", &t, Duration::from_secs(600)).unwrap();
        let sans = cert_uri_sans(&cert.cert_pem).unwrap();
        assert_eq!(
            sans,
            [
                "spiffe://default/api",
                "spiffe://default/web",
                "kuma://kuma.io/service/api",
                "kuma://kuma.io/service/web",
                "kuma://kuma.io/zone/dmz",
                "kuma://version/v1",
            ]
        );
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let exp = cert_not_after(&cert.cert_pem).unwrap();
        assert!(exp >= now + 590 && exp <= now + 610, "{exp} vs {now}");
    }

    #[test]
    fn meshes_do_not_trust_each_other() {
        use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
        let a = generate_mesh_ca("a", Duration::from_secs(3600)).unwrap();
        let b = generate_mesh_ca("b", Duration::from_secs(3600)).unwrap();
        let leaf = issue_workload_cert(
            &b,
            "b",
            "z",
            &tags(&[("kuma.io/service", "x")]),
            Duration::from_secs(600),
        )
        .unwrap();
        let verify = |root: &CertifiedKey| {
            let mut roots = rustls::RootCertStore::empty();
            roots
                .add(crate::pem::first_cert(&root.cert_pem, "root").unwrap())
                .unwrap();
            let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .unwrap();
            let der: CertificateDer<'_> = crate::pem::first_cert(&leaf.cert_pem, "leaf").unwrap();
            verifier
                .verify_client_cert(&der, &[], UnixTime::now())
                .is_ok()
        };
        let _ = ServerName::try_from("x").unwrap();
        assert!(verify(&b), "a workload verifies under its own mesh CA");
        assert!(!verify(&a), "and not under another mesh's");
    }
}
