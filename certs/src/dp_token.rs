//! Dataplane tokens: which mesh and which tags a dataplane may claim.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::token::{sign_token, verify_token, DATAPLANE_TOKEN_KIND};
use crate::zone_token::random_jti;
use crate::{CertError, SigningKey, TokenError, VerifyingKey};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataplaneTokenClaims {
    pub mesh: String,
    /// Tags the holder may claim; keys not listed are unconstrained.
    pub tags: BTreeMap<String, BTreeSet<String>>,
    pub jti: String,
    pub iat: u64,
    pub exp: u64,
}

pub fn issue_dataplane_token(
    key: &SigningKey,
    mesh: &str,
    tags: &BTreeMap<String, BTreeSet<String>>,
    valid_for: Duration,
    now_unix: u64,
) -> Result<String, CertError> {
    if mesh.trim().is_empty() {
        return Err(CertError::InvalidClaims("mesh is empty".into()));
    }
    let secs = valid_for.as_secs();
    if secs == 0 {
        return Err(CertError::InvalidValidity(
            "a token must be valid for at least one second".into(),
        ));
    }
    let claims = DataplaneTokenClaims {
        mesh: mesh.to_owned(),
        tags: tags.clone(),
        jti: random_jti()?,
        iat: now_unix,
        exp: now_unix
            .checked_add(secs)
            .ok_or_else(|| CertError::InvalidValidity(format!("{valid_for:?} is too long")))?,
    };
    sign_token(key, DATAPLANE_TOKEN_KIND, &claims)
}

pub fn verify_dataplane_token(
    keys: &[VerifyingKey],
    token: &str,
    now_unix: u64,
) -> Result<DataplaneTokenClaims, TokenError> {
    verify_token(keys, DATAPLANE_TOKEN_KIND, token, now_unix)
}

impl DataplaneTokenClaims {
    /// Whether a dataplane of `mesh` whose inbounds carry `inbound_tags` may
    /// use this token: same mesh, and for every tag key the token lists,
    /// every inbound's value is one the token allows.
    pub fn allows(
        &self,
        mesh: &str,
        inbound_tags: &[&BTreeMap<String, String>],
    ) -> Result<(), String> {
        if mesh != self.mesh {
            return Err(format!(
                "the token is for mesh {:?}, not {mesh:?}",
                self.mesh
            ));
        }
        for tags in inbound_tags {
            for (key, allowed) in &self.tags {
                match tags.get(key) {
                    Some(v) if allowed.contains(v) => {}
                    Some(v) => return Err(format!("the token does not allow {key}={v}")),
                    None => return Err(format!("the token requires tag {key} on every inbound")),
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn round_trip_expiry_and_kind() {
        let key = SigningKey::generate().unwrap();
        let tags = BTreeMap::from([("kuma.io/service".to_string(), set(&["web"]))]);
        let t =
            issue_dataplane_token(&key, "default", &tags, Duration::from_secs(60), 1000).unwrap();
        let claims = verify_dataplane_token(&[key.verifying_key()], &t, 1001).unwrap();
        assert_eq!(claims.mesh, "default");
        assert_eq!(claims.tags, tags);
        assert!(matches!(
            verify_dataplane_token(&[key.verifying_key()], &t, 1060),
            Err(TokenError::Expired { .. })
        ));
        let zone = crate::issue_zone_token(
            &key,
            "z",
            crate::ZoneTokenScope::Zone,
            Duration::from_secs(60),
            &crate::generate_ca("x", Duration::from_secs(60))
                .unwrap()
                .cert_pem,
            1000,
        )
        .unwrap();
        assert!(matches!(
            verify_dataplane_token(&[key.verifying_key()], &zone, 1001),
            Err(TokenError::WrongKind(_))
        ));
    }

    #[test]
    fn allows_only_covered_tags() {
        let claims = DataplaneTokenClaims {
            mesh: "default".into(),
            tags: BTreeMap::from([("kuma.io/service".to_string(), set(&["web", "api"]))]),
            jti: "j".into(),
            iat: 0,
            exp: 1,
        };
        let web = BTreeMap::from([
            ("kuma.io/service".to_string(), "web".to_string()),
            ("version".to_string(), "v1".to_string()),
        ]);
        let backend = BTreeMap::from([("kuma.io/service".to_string(), "backend".to_string())]);
        assert!(claims.allows("default", &[&web]).is_ok());
        assert!(claims
            .allows("other", &[&web])
            .unwrap_err()
            .contains("mesh"));
        assert!(claims
            .allows("default", &[&web, &backend])
            .unwrap_err()
            .contains("kuma.io/service=backend"));
    }
}
