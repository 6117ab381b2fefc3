//! The admin token file: created once with mode 0600, read on every start.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

pub const ADMIN_TOKEN_FILE: &str = "admin-token";

/// Returns the token, its path, and whether it was just created.
pub fn load_or_create(data_dir: &Path) -> std::io::Result<(String, PathBuf, bool)> {
    let path = data_dir.join(ADMIN_TOKEN_FILE);
    let named = |e: std::io::Error, what: &str| {
        std::io::Error::new(e.kind(), format!("cannot {what} {}: {e}", path.display()))
    };
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => return Ok((t.trim().to_owned(), path, false)),
        Ok(_) => {
            return Err(std::io::Error::other(format!(
                "the admin token file {} is empty; delete it to have a new one written",
                path.display()
            )))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(named(e, "read")),
    }
    let token = certs::generate_token();
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| named(e, "create"))?;
    f.write_all(format!("{token}\n").as_bytes())?;
    f.sync_all()?;
    Ok((token, path, true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn creates_once_with_owner_only_mode_then_reuses() {
        let dir = tempfile::tempdir().unwrap();
        let (t1, path, created) = load_or_create(dir.path()).unwrap();
        assert!(created);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (t2, _, created) = load_or_create(dir.path()).unwrap();
        assert!(!created);
        assert_eq!(t1, t2);
    }
}
