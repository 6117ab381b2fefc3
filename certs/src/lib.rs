//! Key material for the control planes, as pure functions: nothing here does
//! I/O or keeps state, so callers decide where PEM strings are stored and
//! when things rotate. It covers random bearer tokens and their constant-time
//! comparison; self-signed ECDSA P-256 CAs and the server certificates they
//! issue ([`generate_ca`], [`issue_server_cert`], [`fingerprint`]); rustls
//! server and client configurations with ALPN `h2` and optional mTLS
//! ([`server_config`], [`client_config`]); and Ed25519-signed JWTs
//! ([`SigningKey`], [`VerifyingKey`]): a generic layer ([`sign_token`],
//! [`verify_token`]) that tells token kinds apart by the header `typ`, and
//! zone tokens on top of it ([`issue_zone_token`], [`verify_zone_token`]).
//! Mesh identities: a root CA per mesh ([`generate_mesh_ca`]), per-zone
//! intermediates signed from the zones' CSRs ([`intermediate_request`],
//! [`sign_intermediate`]), workload certificates with SPIFFE and `kuma://`
//! URI SANs ([`issue_workload_cert`]), and dataplane tokens saying which mesh
//! and tags a dataplane may claim ([`issue_dataplane_token`],
//! [`DataplaneTokenClaims::allows`]).
//! All cryptography runs on `ring`, the provider tonic's TLS uses too.

mod dp_token;
mod error;
mod identity;
mod pem;
mod pki;
#[cfg(test)]
mod test_support;
mod tls;
mod token;
mod zone_token;

pub use dp_token::{issue_dataplane_token, verify_dataplane_token, DataplaneTokenClaims};
pub use error::{CertError, TokenError};
pub use identity::{
    cert_not_after, cert_uri_sans, generate_mesh_ca, intermediate_request, issue_workload_cert,
    sign_intermediate, workload_uris, IntermediateRequest,
};
pub use pem::encode as pem_encode;
pub use pki::{fingerprint, generate_ca, issue_server_cert, CertifiedKey, BACKDATE};
pub use tls::{client_config, server_config};
pub use token::{
    read_token_unverified, sign_token, verify_token, SigningKey, VerifyingKey,
    DATAPLANE_TOKEN_KIND, ZONE_TOKEN_KIND,
};
pub use zone_token::{
    issue_zone_token, read_zone_token_unverified, verify_zone_token, ZoneTokenClaims,
    ZoneTokenScope,
};

use rand::RngCore;
use subtle::ConstantTimeEq;

/// A fresh 256-bit random token, hex-encoded (64 characters).
pub fn generate_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Compares a presented token with the expected one without leaking, through
/// timing, how many leading bytes matched.
pub fn token_matches(presented: &str, expected: &str) -> bool {
    presented.as_bytes().ct_eq(expected.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_hex() {
        let a = generate_token();
        let b = generate_token();
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn only_the_same_token_matches() {
        let t = generate_token();
        assert!(token_matches(&t, &t.clone()));
        assert!(!token_matches(&t[..63], &t));
        assert!(!token_matches("", &t));
        assert!(!token_matches(&generate_token(), &t));
    }
}
