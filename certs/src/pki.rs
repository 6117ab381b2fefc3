//! Certificate authorities and certificates they issue (ECDSA P-256 via rcgen
//! on ring).

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber,
};
use rustls::pki_types::CertificateDer;
use time::OffsetDateTime;

use crate::pem::{first_cert, parse_certs};
use crate::CertError;

/// How far `notBefore` is set in the past, so that a peer whose clock is a
/// little behind still accepts a certificate issued a moment ago.
pub const BACKDATE: Duration = Duration::from_secs(5 * 60);

/// A certificate (PEM, leaf first if a chain) and its private key (PKCS#8
/// PEM, `PRIVATE KEY`).
///
/// `Debug` shows the certificate but never the key.
#[derive(Clone)]
pub struct CertifiedKey {
    pub cert_pem: String,
    pub key_pem: String,
}

impl fmt::Debug for CertifiedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertifiedKey")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

pub(crate) fn gen_err(e: rcgen::Error) -> CertError {
    CertError::Generate(e.to_string())
}

pub(crate) fn distinguished_name(common_name: &str) -> Result<DistinguishedName, CertError> {
    if common_name.trim().is_empty() {
        return Err(CertError::InvalidCommonName(common_name.to_owned()));
    }
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    Ok(dn)
}

pub(crate) fn set_validity(
    params: &mut CertificateParams,
    validity: Duration,
) -> Result<(), CertError> {
    if validity.is_zero() {
        return Err(CertError::InvalidValidity(
            "must be longer than zero".into(),
        ));
    }
    let validity = time::Duration::try_from(validity)
        .map_err(|_| CertError::InvalidValidity(format!("{validity:?} is too long")))?;
    let now = OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now
        .checked_add(validity)
        .filter(|t| t.year() <= 9999)
        .ok_or_else(|| CertError::InvalidValidity(format!("{validity} is too long")))?;
    Ok(())
}

/// [`set_validity`], with `notAfter` capped at `cap` (the issuer's own
/// `notAfter`: a certificate cannot usefully outlive its issuer). Fails when
/// the cap is already past.
pub(crate) fn set_validity_capped(
    params: &mut CertificateParams,
    validity: Duration,
    cap: OffsetDateTime,
) -> Result<(), CertError> {
    set_validity(params, validity)?;
    if params.not_after > cap {
        params.not_after = cap;
    }
    if params.not_after <= OffsetDateTime::now_utc() {
        return Err(CertError::InvalidCa(format!(
            "the issuing CA expired at {cap}"
        )));
    }
    Ok(())
}

/// A random positive 128-bit serial number.
pub(crate) fn random_serial() -> Result<SerialNumber, CertError> {
    let mut bytes = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| CertError::Rng)?;
    bytes[0] &= 0x7f; // DER INTEGER stays positive
    bytes[0] |= 0x40; // and keeps its full length
    Ok(SerialNumber::from_slice(&bytes))
}

pub(crate) fn new_key_pair() -> Result<KeyPair, CertError> {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(gen_err)
}

/// Generates a self-signed root CA: ECDSA P-256, `CA:true` (no path length
/// limit), key usages keyCertSign, cRLSign and digitalSignature, subject
/// `CN=<common_name>`, valid from [`BACKDATE`] ago until `validity` from now.
pub fn generate_ca(common_name: &str, validity: Duration) -> Result<CertifiedKey, CertError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(common_name)?;
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

/// A CA re-loaded from PEM so that rcgen can sign with it, plus the rest of
/// its chain to append to what it issues.
pub(crate) struct LoadedCa {
    pub(crate) issuer: Issuer<'static, KeyPair>,
    /// The CA's own certificate and any certificates after it in
    /// `cert_pem`, except a trailing self-signed root (peers have that one
    /// in their trust store; sending it is useless).
    pub(crate) chain: Vec<CertificateDer<'static>>,
    /// The CA certificate's `notAfter`.
    pub(crate) not_after: OffsetDateTime,
}

fn is_self_signed(der: &CertificateDer<'_>) -> bool {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, c)| c.subject().as_raw() == c.issuer().as_raw())
        .unwrap_or(false)
}

/// Loads `ca` for signing: checks that its first certificate is a CA and
/// that `ca.key_pem` is that certificate's key.
pub(crate) fn load_ca(ca: &CertifiedKey) -> Result<LoadedCa, CertError> {
    let certs = parse_certs(&ca.cert_pem, "CA certificate")?;
    let key = KeyPair::from_pem(&ca.key_pem)
        .map_err(|e| CertError::InvalidKey(format!("CA key: {e}")))?;
    let ca_der = &certs[0];
    let (_, parsed) = x509_parser::parse_x509_certificate(ca_der)
        .map_err(|e| CertError::InvalidCa(format!("cannot parse certificate: {e}")))?;
    if !parsed.is_ca() {
        return Err(CertError::InvalidCa(
            "certificate does not have basicConstraints CA:true".into(),
        ));
    }
    if parsed.public_key().subject_public_key.data.as_ref() != key.der_bytes() {
        return Err(CertError::InvalidCa(
            "private key does not belong to the certificate".into(),
        ));
    }
    let not_after = parsed.validity().not_after.to_datetime();
    let issuer = Issuer::from_ca_cert_der(ca_der, key)
        .map_err(|e| CertError::InvalidCa(format!("cannot use certificate as issuer: {e}")))?;
    let mut chain = certs;
    if chain.last().is_some_and(is_self_signed) {
        chain.pop();
    }
    Ok(LoadedCa {
        issuer,
        chain,
        not_after,
    })
}

/// Parses one SAN: an IP address (IPv6 may be bracketed) or a DNS name
/// (a leading `*.` wildcard label is allowed).
fn parse_san(name: &str) -> Result<SanType, CertError> {
    let invalid = |reason: &str| CertError::InvalidSan {
        name: name.to_owned(),
        reason: reason.to_owned(),
    };
    let unbracketed = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name);
    if let Ok(ip) = unbracketed.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let checked = name.strip_prefix("*.").unwrap_or(name);
    rustls::pki_types::DnsName::try_from(checked)
        .map_err(|_| invalid("neither an IP address nor a valid DNS name"))?;
    let ia5 = rcgen::string::Ia5String::try_from(name).map_err(|e| invalid(&e.to_string()))?;
    Ok(SanType::DnsName(ia5))
}

/// Issues a TLS server certificate signed by `ca`: a fresh ECDSA P-256 key,
/// subject `CN=<common_name>`, one SAN per entry of `sans` (each an IP
/// address or a DNS name), `CA:false`, digitalSignature, extended key usages
/// serverAuth and clientAuth (so the same identity can also be presented as a
/// client certificate), valid from [`BACKDATE`] ago until `validity` from now.
///
/// `ca.cert_pem` may be a chain (the issuing CA first); the returned
/// `cert_pem` is the new leaf followed by that chain minus a trailing
/// self-signed root, ready for [`crate::server_config`].
pub fn issue_server_cert(
    ca: &CertifiedKey,
    common_name: &str,
    sans: &[String],
    validity: Duration,
) -> Result<CertifiedKey, CertError> {
    if sans.is_empty() {
        return Err(CertError::InvalidSan {
            name: String::new(),
            reason: "a server certificate needs at least one SAN".into(),
        });
    }
    let loaded = load_ca(ca)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(common_name)?;
    params.subject_alt_names = sans
        .iter()
        .map(|s| parse_san(s))
        .collect::<Result<_, _>>()?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
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

/// SHA-256 of the DER of the first certificate in `cert_pem`, as 64
/// lowercase hex characters without separators.
pub fn fingerprint(cert_pem: &str) -> Result<String, CertError> {
    let der = first_cert(cert_pem, "certificate")?;
    Ok(hex::encode(ring::digest::digest(
        &ring::digest::SHA256,
        der.as_ref(),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::extensions::GeneralName;
    use x509_parser::parse_x509_certificate;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn sans(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn ders(pem: &str) -> Vec<CertificateDer<'static>> {
        parse_certs(pem, "test").expect("PEM parses")
    }

    #[test]
    fn ca_is_a_self_signed_p256_ca_with_the_given_name_and_validity() {
        let ca = generate_ca("mesh default root", DAY).expect("CA");
        assert!(ca.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let certs = ders(&ca.cert_pem);
        assert_eq!(certs.len(), 1);
        let (_, c) = parse_x509_certificate(&certs[0]).expect("X.509");
        assert!(c.is_ca());
        assert_eq!(c.subject().as_raw(), c.issuer().as_raw());
        let cn = c.subject().iter_common_name().next().expect("CN");
        assert_eq!(cn.as_str().expect("utf8"), "mesh default root");
        let ku = c.key_usage().expect("ku").expect("ku present").value;
        assert!(ku.key_cert_sign() && ku.crl_sign());
        assert_eq!(
            c.signature_algorithm.algorithm,
            x509_parser::oid_registry::OID_SIG_ECDSA_WITH_SHA256
        );
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let not_after = c.validity().not_after.timestamp();
        let not_before = c.validity().not_before.timestamp();
        assert!((not_after - (now + DAY.as_secs() as i64)).abs() < 60);
        assert!(not_before <= now - BACKDATE.as_secs() as i64 + 60);
        assert!(not_before < now);
    }

    #[test]
    fn two_cas_differ() {
        let a = generate_ca("a", DAY).expect("CA");
        let b = generate_ca("a", DAY).expect("CA");
        assert_ne!(a.cert_pem, b.cert_pem);
        assert_ne!(a.key_pem, b.key_pem);
    }

    #[test]
    fn server_cert_carries_sans_and_server_usage_and_chains_to_the_ca() {
        let ca = generate_ca("root", DAY).expect("CA");
        let leaf = issue_server_cert(
            &ca,
            "kds",
            &sans(&["localhost", "127.0.0.1", "::1", "*.global.mesh"]),
            DAY,
        )
        .expect("leaf");
        let certs = ders(&leaf.cert_pem);
        assert_eq!(certs.len(), 1, "a root is not appended to the chain");
        let (_, c) = parse_x509_certificate(&certs[0]).expect("X.509");
        let ca_ders = ders(&ca.cert_pem);
        let (_, ca_cert) = parse_x509_certificate(&ca_ders[0]).expect("X.509");
        assert!(!c.is_ca());
        assert_eq!(c.issuer().as_raw(), ca_cert.subject().as_raw());
        let eku = c
            .extended_key_usage()
            .expect("eku")
            .expect("eku present")
            .value;
        assert!(eku.server_auth && eku.client_auth);
        let san = c
            .subject_alternative_name()
            .expect("san")
            .expect("san present")
            .value;
        let names: Vec<String> = san
            .general_names
            .iter()
            .map(|n| match n {
                GeneralName::DNSName(d) => format!("dns:{d}"),
                GeneralName::IPAddress(ip) => format!("ip:{}", hex::encode(ip)),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(
            names,
            vec![
                "dns:localhost".to_string(),
                "ip:7f000001".into(),
                format!("ip:{}", hex::encode(std::net::Ipv6Addr::LOCALHOST.octets())),
                "dns:*.global.mesh".into(),
            ]
        );
        // The signature really is the CA's.
        c.verify_signature(Some(ca_cert.public_key()))
            .expect("signed by the CA");
        let other = generate_ca("root", DAY).expect("CA");
        let other_ders = ders(&other.cert_pem);
        let (_, other_cert) = parse_x509_certificate(&other_ders[0]).expect("X.509");
        assert!(c.verify_signature(Some(other_cert.public_key())).is_err());
    }

    #[test]
    fn bad_sans_and_names_are_refused() {
        let ca = generate_ca("root", DAY).expect("CA");
        for bad in [
            "",
            "has space",
            "under_score!",
            "-leading.hyphen",
            "a..b",
            "ünï.code",
        ] {
            let err = issue_server_cert(&ca, "x", &sans(&[bad]), DAY).expect_err(bad);
            assert!(matches!(err, CertError::InvalidSan { .. }), "{bad}: {err}");
        }
        assert!(matches!(
            issue_server_cert(&ca, "x", &[], DAY),
            Err(CertError::InvalidSan { .. })
        ));
        assert!(matches!(
            issue_server_cert(&ca, " ", &sans(&["a"]), DAY),
            Err(CertError::InvalidCommonName(_))
        ));
        assert!(matches!(
            generate_ca("", DAY),
            Err(CertError::InvalidCommonName(_))
        ));
        assert!(matches!(
            generate_ca("x", Duration::ZERO),
            Err(CertError::InvalidValidity(_))
        ));
        assert!(matches!(
            generate_ca("x", Duration::from_secs(u64::MAX)),
            Err(CertError::InvalidValidity(_))
        ));
        assert!(issue_server_cert(&ca, "x", &sans(&["[::1]", "my-svc.ns"]), DAY).is_ok());
    }

    #[test]
    fn a_mismatched_key_or_a_non_ca_cannot_sign() {
        let a = generate_ca("a", DAY).expect("CA");
        let b = generate_ca("b", DAY).expect("CA");
        let mixed = CertifiedKey {
            cert_pem: a.cert_pem.clone(),
            key_pem: b.key_pem.clone(),
        };
        assert!(matches!(
            issue_server_cert(&mixed, "x", &sans(&["x"]), DAY),
            Err(CertError::InvalidCa(_))
        ));
        let leaf = issue_server_cert(&a, "x", &sans(&["x"]), DAY).expect("leaf");
        assert!(matches!(
            issue_server_cert(&leaf, "y", &sans(&["y"]), DAY),
            Err(CertError::InvalidCa(_))
        ));
        let garbage = CertifiedKey {
            cert_pem: "not a pem".into(),
            key_pem: a.key_pem.clone(),
        };
        assert!(matches!(
            issue_server_cert(&garbage, "x", &sans(&["x"]), DAY),
            Err(CertError::InvalidPem { .. })
        ));
    }

    #[test]
    fn fingerprint_is_stable_per_cert_and_differs_across_certs() {
        let a = generate_ca("a", DAY).expect("CA");
        let b = generate_ca("a", DAY).expect("CA");
        let fa = fingerprint(&a.cert_pem).expect("fp");
        assert_eq!(fa.len(), 64);
        assert!(fa
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)));
        assert_eq!(fa, fingerprint(&a.cert_pem).expect("fp"));
        assert_eq!(fa, fingerprint(&format!("\n{}", a.cert_pem)).expect("fp"));
        assert_ne!(fa, fingerprint(&b.cert_pem).expect("fp"));
        // Independent computation over the DER.
        let der = &ders(&a.cert_pem)[0];
        let expected = hex::encode(ring::digest::digest(&ring::digest::SHA256, der));
        assert_eq!(fa, expected);
        // First certificate of a chain.
        let chain = format!("{}{}", a.cert_pem, b.cert_pem);
        assert_eq!(fingerprint(&chain).expect("fp"), fa);
        assert!(matches!(
            fingerprint("garbage"),
            Err(CertError::InvalidPem { .. })
        ));
        assert!(matches!(
            fingerprint(&a.key_pem),
            Err(CertError::InvalidPem { .. })
        ));
    }

    #[test]
    fn debug_hides_the_private_key() {
        let a = generate_ca("a", DAY).expect("CA");
        let shown = format!("{a:?}");
        assert!(shown.contains("BEGIN CERTIFICATE"));
        assert!(!shown.contains("PRIVATE KEY"));
    }
}
