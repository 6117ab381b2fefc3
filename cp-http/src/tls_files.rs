//! A CA and a server certificate kept as files in a data directory: created
//! on first start, reused after, the server certificate reissued when the
//! requested names change. Private keys are written with mode 0600.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use certs::CertifiedKey;

const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 86_400);
const SERVER_VALIDITY: Duration = Duration::from_secs(365 * 86_400);

#[derive(Debug, thiserror::Error)]
pub enum TlsFilesError {
    #[error("cannot {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Cert(#[from] certs::CertError),
}

/// Reads a file, `None` when it does not exist.
pub fn read_optional(path: &Path) -> Result<Option<String>, TlsFilesError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(TlsFilesError::Io {
            what: "read",
            path: path.display().to_string(),
            source,
        }),
    }
}

/// Writes a file readable by its owner only, atomically (temp + rename).
pub fn write_private(path: &Path, content: &str) -> Result<(), TlsFilesError> {
    let io = |source| TlsFilesError::Io {
        what: "write",
        path: path.display().to_string(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(content.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// The CA and server certificate named `<prefix>-ca.pem/.key` and
/// `<prefix>-server.pem/.key` in `dir`. Returns (ca, server).
pub fn load_or_create(
    dir: &Path,
    prefix: &str,
    common_name: &str,
    sans: &[String],
) -> Result<(CertifiedKey, CertifiedKey), TlsFilesError> {
    let p = |suffix: &str| dir.join(format!("{prefix}-{suffix}"));
    let ca = match (read_optional(&p("ca.pem"))?, read_optional(&p("ca.key"))?) {
        (Some(cert_pem), Some(key_pem)) => CertifiedKey { cert_pem, key_pem },
        _ => {
            let ca = certs::generate_ca(&format!("{common_name} CA"), CA_VALIDITY)?;
            write_private(&p("ca.key"), &ca.key_pem)?;
            write_private(&p("ca.pem"), &ca.cert_pem)?;
            tracing::info!(path = %p("ca.pem").display(), "created a CA");
            ca
        }
    };
    let wanted = sans.join(",");
    let existing = (
        read_optional(&p("server.pem"))?,
        read_optional(&p("server.key"))?,
        read_optional(&p("server.sans"))?,
    );
    let server = match existing {
        (Some(cert_pem), Some(key_pem), Some(s)) if s.trim() == wanted => {
            CertifiedKey { cert_pem, key_pem }
        }
        _ => {
            let server = certs::issue_server_cert(&ca, common_name, sans, SERVER_VALIDITY)?;
            write_private(&p("server.key"), &server.key_pem)?;
            write_private(&p("server.pem"), &server.cert_pem)?;
            write_private(&p("server.sans"), &wanted)?;
            tracing::info!(sans = %wanted, "issued a server certificate");
            server
        }
    };
    Ok((ca, server))
}
