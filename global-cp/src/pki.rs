//! The global's KDS key material on disk: a CA, a server certificate signed
//! by it, and the zone-token signing key. Created on first start, reused
//! after; the server certificate is reissued when the requested SANs change.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use certs::{CertifiedKey, SigningKey};

const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 86_400);
const SERVER_VALIDITY: Duration = Duration::from_secs(365 * 86_400);

/// What the KDS server presents and what zone tokens pin.
pub struct KdsPki {
    /// PEM chain and key the KDS server presents.
    pub server: CertifiedKey,
    /// The PEM every zone trusts for the KDS server; zone tokens carry it.
    pub ca_pem: String,
    pub signing_key: SigningKey,
}

fn read(path: &Path) -> anyhow::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Writes a file readable by its owner only, atomically (temp file + rename).
pub fn write_private(path: &Path, content: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(content.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

fn paths(dir: &Path) -> [PathBuf; 6] {
    [
        dir.join("kds-ca.pem"),
        dir.join("kds-ca.key"),
        dir.join("kds-server.pem"),
        dir.join("kds-server.key"),
        dir.join("kds-server.sans"),
        dir.join("zone-token-signing.key"),
    ]
}

/// Loads or creates the material in `dir`. With `given` (operator-supplied
/// cert, key and the CA to pin), the server certificate is not generated.
pub fn load_or_create(
    dir: &Path,
    sans: &[String],
    given: Option<(String, String, String)>,
) -> anyhow::Result<KdsPki> {
    let [ca_pem_p, ca_key_p, srv_pem_p, srv_key_p, sans_p, sign_p] = paths(dir);
    let signing_key = match read(&sign_p)? {
        Some(pem) => SigningKey::from_pem(&pem)
            .with_context(|| format!("{} is not a signing key", sign_p.display()))?,
        None => {
            let k = SigningKey::generate()?;
            write_private(&sign_p, &k.to_pem())?;
            tracing::info!(path = %sign_p.display(), "created the zone token signing key");
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
    let ca = match (read(&ca_pem_p)?, read(&ca_key_p)?) {
        (Some(cert_pem), Some(key_pem)) => CertifiedKey { cert_pem, key_pem },
        _ => {
            let ca = certs::generate_ca("global-cp KDS CA", CA_VALIDITY)?;
            write_private(&ca_key_p, &ca.key_pem)?;
            write_private(&ca_pem_p, &ca.cert_pem)?;
            tracing::info!(path = %ca_pem_p.display(), "created the KDS CA");
            ca
        }
    };
    let wanted_sans = sans.join(",");
    let server = match (read(&srv_pem_p)?, read(&srv_key_p)?, read(&sans_p)?) {
        (Some(cert_pem), Some(key_pem), Some(s)) if s.trim() == wanted_sans => {
            CertifiedKey { cert_pem, key_pem }
        }
        _ => {
            let server = certs::issue_server_cert(&ca, "global-cp", sans, SERVER_VALIDITY)?;
            write_private(&srv_key_p, &server.key_pem)?;
            write_private(&srv_pem_p, &server.cert_pem)?;
            write_private(&sans_p, &wanted_sans)?;
            tracing::info!(sans = %wanted_sans, "issued the KDS server certificate");
            server
        }
    };
    Ok(KdsPki {
        server,
        ca_pem: ca.cert_pem,
        signing_key,
    })
}
