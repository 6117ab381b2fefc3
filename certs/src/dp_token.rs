//! Dataplane tokens: which mesh and which tags a dataplane may claim.
//!
//! Signed by the global's token key like zone tokens (header `typ`
//! [`DATAPLANE_TOKEN_KIND`], so neither kind passes for the other); zones
//! verify them with the public keys they get over KDS and only issue a
//! workload certificate to a dataplane its token [allows](DataplaneTokenClaims::allows).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::token::{sign_token, verify_token, DATAPLANE_TOKEN_KIND};
use crate::zone_token::random_jti;
use crate::{CertError, SigningKey, TokenError, VerifyingKey};

/// Claims of a dataplane token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataplaneTokenClaims {
    /// The only mesh the holder may join.
    pub mesh: String,
    /// Tags the holder may claim, each with the values allowed for it; keys
    /// not listed are unconstrained.
    pub tags: BTreeMap<String, BTreeSet<String>>,
    /// Random id, for revocation.
    pub jti: String,
    /// Issued at, unix seconds.
    pub iat: u64,
    /// Expires at, unix seconds.
    pub exp: u64,
}

/// Issues a dataplane token for `mesh` restricted to `tags` (e.g.
/// `kuma.io/service` → {`web`}; empty: any tags), valid from `now_unix` for
/// `valid_for` (whole seconds). Refuses an empty mesh, an empty tag key, a
/// tag with no allowed value, and a zero validity.
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
    for (key, values) in tags {
        if key.is_empty() {
            return Err(CertError::InvalidClaims("a tag key is empty".into()));
        }
        if values.is_empty() {
            return Err(CertError::InvalidClaims(format!(
                "tag {key} has no allowed value"
            )));
        }
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

/// Verifies a dataplane token: signed by one of `keys` (matched by `kid`),
/// of kind [`DATAPLANE_TOKEN_KIND`], not expired at `now_unix` (no leeway).
pub fn verify_dataplane_token(
    keys: &[VerifyingKey],
    token: &str,
    now_unix: u64,
) -> Result<DataplaneTokenClaims, TokenError> {
    verify_token(keys, DATAPLANE_TOKEN_KIND, token, now_unix)
}

impl DataplaneTokenClaims {
    /// Whether a dataplane of `mesh` whose inbounds carry `inbound_tags` (one
    /// map per inbound) may use this token: same mesh, and for every tag key
    /// the token lists, every inbound has that tag with one of the values the
    /// token allows. Tag keys the token does not list are free. A token
    /// without tags allows any dataplane of its mesh.
    ///
    /// The error says what is not covered, e.g. `the token does not allow
    /// kuma.io/service=backend (allowed: web)`.
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
        let allowed_list =
            |allowed: &BTreeSet<String>| allowed.iter().cloned().collect::<Vec<_>>().join(", ");
        for (i, tags) in inbound_tags.iter().enumerate() {
            for (key, allowed) in &self.tags {
                match tags.get(key) {
                    Some(v) if allowed.contains(v) => {}
                    Some(v) => {
                        return Err(format!(
                            "the token does not allow {key}={v} (allowed: {})",
                            allowed_list(allowed)
                        ))
                    }
                    None => {
                        return Err(format!(
                            "the token requires tag {key} (one of: {}) on every inbound; \
                             inbound {i} has none",
                            allowed_list(allowed)
                        ))
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000;
    const MINUTE: Duration = Duration::from_secs(60);

    fn set(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn inbound(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn claims(tags: &[(&str, &[&str])]) -> DataplaneTokenClaims {
        DataplaneTokenClaims {
            mesh: "default".into(),
            tags: tags.iter().map(|(k, v)| (k.to_string(), set(v))).collect(),
            jti: "j".into(),
            iat: 0,
            exp: 1,
        }
    }

    #[test]
    fn round_trip() {
        let key = SigningKey::generate().unwrap();
        let tags = BTreeMap::from([
            ("kuma.io/service".to_string(), set(&["web", "api"])),
            ("version".to_string(), set(&["v1"])),
        ]);
        let t = issue_dataplane_token(&key, "default", &tags, MINUTE, NOW).unwrap();
        let claims = verify_dataplane_token(&[key.verifying_key()], &t, NOW + 1).unwrap();
        assert_eq!(claims.mesh, "default");
        assert_eq!(claims.tags, tags);
        assert_eq!(claims.iat, NOW);
        assert_eq!(claims.exp, NOW + 60);
        assert_eq!(claims.jti.len(), 32);
        let again = issue_dataplane_token(&key, "default", &tags, MINUTE, NOW).unwrap();
        let other = verify_dataplane_token(&[key.verifying_key()], &again, NOW).unwrap();
        assert_ne!(claims.jti, other.jti);
        // Verified with the right key among several; refused by strangers.
        let stranger = SigningKey::generate().unwrap();
        assert!(
            verify_dataplane_token(&[stranger.verifying_key(), key.verifying_key()], &t, NOW)
                .is_ok()
        );
        assert_eq!(
            verify_dataplane_token(&[stranger.verifying_key()], &t, NOW),
            Err(TokenError::UnknownKey)
        );
    }

    #[test]
    fn expired_tokens_are_refused() {
        let key = SigningKey::generate().unwrap();
        let t = issue_dataplane_token(&key, "default", &BTreeMap::new(), MINUTE, NOW).unwrap();
        let keys = [key.verifying_key()];
        assert!(verify_dataplane_token(&keys, &t, NOW + 59).is_ok());
        assert_eq!(
            verify_dataplane_token(&keys, &t, NOW + 60),
            Err(TokenError::Expired {
                expired_at: NOW + 60
            })
        );
    }

    #[test]
    fn a_zone_token_is_not_a_dataplane_token() {
        let key = SigningKey::generate().unwrap();
        let zone = crate::issue_zone_token(
            &key,
            "z",
            crate::ZoneTokenScope::Zone,
            MINUTE,
            &crate::generate_ca("x", MINUTE).unwrap().cert_pem,
            NOW,
        )
        .unwrap();
        assert_eq!(
            verify_dataplane_token(&[key.verifying_key()], &zone, NOW + 1),
            Err(TokenError::WrongKind(crate::ZONE_TOKEN_KIND.into()))
        );
        // Nor the other way round.
        let dp = issue_dataplane_token(&key, "default", &BTreeMap::new(), MINUTE, NOW).unwrap();
        assert_eq!(
            crate::verify_zone_token(&[key.verifying_key()], &dp, NOW + 1),
            Err(TokenError::WrongKind(DATAPLANE_TOKEN_KIND.into()))
        );
    }

    #[test]
    fn issuing_refuses_bad_input() {
        let key = SigningKey::generate().unwrap();
        let none = BTreeMap::new();
        assert!(matches!(
            issue_dataplane_token(&key, " ", &none, MINUTE, NOW),
            Err(CertError::InvalidClaims(_))
        ));
        assert!(matches!(
            issue_dataplane_token(&key, "default", &none, Duration::ZERO, NOW),
            Err(CertError::InvalidValidity(_))
        ));
        assert!(matches!(
            issue_dataplane_token(&key, "default", &none, MINUTE, u64::MAX),
            Err(CertError::InvalidValidity(_))
        ));
        let no_value = BTreeMap::from([("kuma.io/service".to_string(), set(&[]))]);
        assert!(matches!(
            issue_dataplane_token(&key, "default", &no_value, MINUTE, NOW),
            Err(CertError::InvalidClaims(_))
        ));
        let empty_key = BTreeMap::from([(String::new(), set(&["x"]))]);
        assert!(matches!(
            issue_dataplane_token(&key, "default", &empty_key, MINUTE, NOW),
            Err(CertError::InvalidClaims(_))
        ));
    }

    #[test]
    fn another_mesh_is_refused() {
        let c = claims(&[("kuma.io/service", &["web"])]);
        let web = inbound(&[("kuma.io/service", "web")]);
        assert_eq!(c.allows("default", &[&web]), Ok(()));
        let err = c.allows("other", &[&web]).unwrap_err();
        assert!(
            err.contains("\"default\"") && err.contains("\"other\""),
            "{err}"
        );
        // Also for a token without tags.
        assert!(claims(&[]).allows("other", &[&web]).is_err());
    }

    #[test]
    fn only_the_services_of_the_token_are_allowed() {
        let c = claims(&[("kuma.io/service", &["web"])]);
        let web = inbound(&[("kuma.io/service", "web")]);
        let backend = inbound(&[("kuma.io/service", "backend")]);
        let err = c.allows("default", &[&backend]).unwrap_err();
        assert!(err.contains("kuma.io/service=backend"), "{err}");
        // Every inbound must be covered, not just one.
        let err = c.allows("default", &[&web, &backend]).unwrap_err();
        assert!(err.contains("kuma.io/service=backend"), "{err}");
        // An inbound without the tag the token restricts is not covered.
        let untagged = inbound(&[("version", "v1")]);
        let err = c.allows("default", &[&web, &untagged]).unwrap_err();
        assert!(
            err.contains("kuma.io/service") && err.contains("inbound 1"),
            "{err}"
        );
    }

    #[test]
    fn tag_keys_not_in_the_token_are_free() {
        let c = claims(&[("kuma.io/service", &["web"])]);
        let web = inbound(&[
            ("kuma.io/service", "web"),
            ("version", "v2"),
            ("kuma.io/protocol", "http"),
        ]);
        assert_eq!(c.allows("default", &[&web]), Ok(()));
        // A token without tags allows any dataplane of its mesh.
        let backend = inbound(&[("kuma.io/service", "backend")]);
        assert_eq!(claims(&[]).allows("default", &[&web, &backend]), Ok(()));
        // No inbounds: nothing to restrict.
        assert_eq!(c.allows("default", &[]), Ok(()));
    }

    #[test]
    fn multi_valued_tokens_allow_any_of_their_values() {
        let c = claims(&[
            ("kuma.io/service", &["web", "api"]),
            ("version", &["v1", "v2"]),
        ]);
        let web_v1 = inbound(&[("kuma.io/service", "web"), ("version", "v1")]);
        let api_v2 = inbound(&[("kuma.io/service", "api"), ("version", "v2")]);
        assert_eq!(c.allows("default", &[&web_v1, &api_v2]), Ok(()));
        let api_v3 = inbound(&[("kuma.io/service", "api"), ("version", "v3")]);
        let err = c.allows("default", &[&web_v1, &api_v3]).unwrap_err();
        assert!(err.contains("version=v3"), "{err}");
        assert!(err.contains("v1, v2"), "{err}");
        let db_v1 = inbound(&[("kuma.io/service", "db"), ("version", "v1")]);
        let err = c.allows("default", &[&db_v1]).unwrap_err();
        assert!(err.contains("kuma.io/service=db"), "{err}");
    }
}
