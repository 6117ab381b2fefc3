//! PEM parsing and encoding helpers (no I/O: strings in, DER out).

use base64::Engine as _;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::CertError;

fn invalid(what: &str, reason: impl ToString) -> CertError {
    CertError::InvalidPem {
        what: what.to_owned(),
        reason: reason.to_string(),
    }
}

/// All `CERTIFICATE` blocks of `pem`, in order; at least one.
pub(crate) fn parse_certs(
    pem: &str,
    what: &str,
) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(what, e))?;
    if certs.is_empty() {
        return Err(invalid(what, "no CERTIFICATE block"));
    }
    Ok(certs)
}

/// The first certificate of `pem`.
pub(crate) fn first_cert(pem: &str, what: &str) -> Result<CertificateDer<'static>, CertError> {
    let mut certs = parse_certs(pem, what)?;
    Ok(certs.swap_remove(0))
}

/// The first private key of `pem` (PKCS#8, SEC1 or PKCS#1).
pub(crate) fn parse_private_key(
    pem: &str,
    what: &str,
) -> Result<PrivateKeyDer<'static>, CertError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| invalid(what, e))
}

/// PEM-encodes `der` under `label`, 64 base64 characters a line.
pub fn encode(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    // base64 output is ASCII, so byte chunks are valid UTF-8.
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}
