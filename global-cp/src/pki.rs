//! The global's KDS key material on disk: a CA and a server certificate
//! (see `cp_http::tls_files`) and the zone-token signing key.

use std::path::Path;

use anyhow::Context;
use certs::{CertifiedKey, SigningKey};
use cp_http::tls_files::{read_optional, write_private};

/// What the KDS server presents and what zone tokens pin.
pub struct KdsPki {
    /// PEM chain and key the KDS server presents.
    pub server: CertifiedKey,
    /// The PEM every zone trusts for the KDS server; zone tokens carry it.
    pub ca_pem: String,
    pub signing_key: SigningKey,
}

/// Loads or creates the material in `dir`. With `given` (operator-supplied
/// cert, key and the CA to pin), the server certificate is not generated.
pub fn load_or_create(
    dir: &Path,
    sans: &[String],
    given: Option<(String, String, String)>,
) -> anyhow::Result<KdsPki> {
    let sign_p = dir.join("zone-token-signing.key");
    let signing_key = match read_optional(&sign_p)? {
        Some(pem) => SigningKey::from_pem(&pem)
            .with_context(|| format!("{} is not a signing key", sign_p.display()))?,
        None => {
            let k = SigningKey::generate()?;
            write_private(&sign_p, &k.to_pem())?;
            tracing::info!(path = %sign_p.display(), "created the token signing key");
            k
        }
    };
    if let Some((cert_pem, key_pem, ca_pem)) = given {
        return Ok(KdsPki {
            server: CertifiedKey { cert_pem, key_pem },
            ca_pem,
            signing_key,
        });
    }
    let (ca, server) = cp_http::tls_files::load_or_create(dir, "kds", "global-cp", sans)?;
    Ok(KdsPki {
        server,
        ca_pem: ca.cert_pem,
        signing_key,
    })
}
