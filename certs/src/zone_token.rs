//! Zone tokens: what a zone control plane presents to the global one on KDS.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::token::{read_token_unverified, sign_token, verify_token, ZONE_TOKEN_KIND};
use crate::{CertError, SigningKey, TokenError, VerifyingKey};

/// What a zone token allows its holder to act as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ZoneTokenScope {
    Zone,
    Ingress,
}

/// Claims of a zone token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZoneTokenClaims {
    /// The zone the token is bound to; the global takes the zone name of
    /// everything the zone sends from here.
    pub zone: String,
    pub scope: ZoneTokenScope,
    /// Random id, for revocation.
    pub jti: String,
    /// Issued at, unix seconds.
    pub iat: u64,
    /// Expires at, unix seconds.
    pub exp: u64,
    /// PEM of the CA the zone must trust for the global's KDS server
    /// certificate: the token pins it.
    pub kds_ca: String,
}

pub(crate) fn random_jti() -> Result<String, CertError> {
    let mut bytes = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| CertError::Rng)?;
    Ok(hex::encode(bytes))
}

/// Issues a zone token for `zone`, valid from `now_unix` for `valid_for`
/// (whole seconds), pinning `kds_ca_pem` (must contain a certificate).
pub fn issue_zone_token(
    key: &SigningKey,
    zone: &str,
    scope: ZoneTokenScope,
    valid_for: Duration,
    kds_ca_pem: &str,
    now_unix: u64,
) -> Result<String, CertError> {
    if zone.trim().is_empty() {
        return Err(CertError::InvalidClaims("zone name is empty".into()));
    }
    crate::pem::parse_certs(kds_ca_pem, "KDS CA")?;
    let secs = valid_for.as_secs();
    if secs == 0 {
        return Err(CertError::InvalidValidity(
            "a token must be valid for at least one second".into(),
        ));
    }
    let exp = now_unix
        .checked_add(secs)
        .ok_or_else(|| CertError::InvalidValidity(format!("{valid_for:?} is too long")))?;
    let claims = ZoneTokenClaims {
        zone: zone.to_owned(),
        scope,
        jti: random_jti()?,
        iat: now_unix,
        exp,
        kds_ca: kds_ca_pem.to_owned(),
    };
    sign_token(key, ZONE_TOKEN_KIND, &claims)
}

/// Verifies a zone token: signed by one of `keys` (matched by `kid`), of kind
/// [`ZONE_TOKEN_KIND`], not expired at `now_unix` (no leeway). See
/// [`verify_token`].
pub fn verify_zone_token(
    keys: &[VerifyingKey],
    token: &str,
    now_unix: u64,
) -> Result<ZoneTokenClaims, TokenError> {
    verify_token(keys, ZONE_TOKEN_KIND, token, now_unix)
}

/// Reads a zone token's claims WITHOUT verifying it: the zone uses this to
/// learn its zone name and the pinned KDS CA before it connects. The kind is
/// still checked.
pub fn read_zone_token_unverified(token: &str) -> Result<ZoneTokenClaims, TokenError> {
    read_token_unverified(ZONE_TOKEN_KIND, token)
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;

    use super::*;
    use crate::token::DATAPLANE_TOKEN_KIND;

    const NOW: u64 = 1_700_000_000;
    const HOUR: Duration = Duration::from_secs(3600);

    fn kds_ca() -> String {
        crate::generate_ca("global kds", Duration::from_secs(86400))
            .expect("CA")
            .cert_pem
    }

    fn token(key: &SigningKey, zone: &str, ca: &str) -> String {
        issue_zone_token(key, zone, ZoneTokenScope::Zone, HOUR, ca, NOW).expect("token")
    }

    /// Re-encodes the payload after `edit`, keeping header and signature.
    fn tamper(token: &str, edit: impl FnOnce(&mut serde_json::Value)) -> String {
        let parts: Vec<&str> = token.split('.').collect();
        let mut claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("b64")).expect("json");
        edit(&mut claims);
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).expect("json"));
        format!("{}.{}.{}", parts[0], payload, parts[2])
    }

    #[test]
    fn round_trip() {
        let key = SigningKey::generate().expect("key");
        let ca = kds_ca();
        let t = issue_zone_token(&key, "zone-1", ZoneTokenScope::Ingress, HOUR, &ca, NOW)
            .expect("token");
        let claims = verify_zone_token(&[key.verifying_key()], &t, NOW + 1).expect("valid");
        assert_eq!(claims.zone, "zone-1");
        assert_eq!(claims.scope, ZoneTokenScope::Ingress);
        assert_eq!(claims.iat, NOW);
        assert_eq!(claims.exp, NOW + 3600);
        assert_eq!(claims.kds_ca, ca);
        assert_eq!(claims.jti.len(), 32);
        let again = token(&key, "zone-1", &ca);
        let other = verify_zone_token(&[key.verifying_key()], &again, NOW).expect("valid");
        assert_ne!(claims.jti, other.jti, "every token gets its own jti");
        // The scope is spelled in lowercase on the wire.
        let raw: serde_json::Value = read_token_unverified(ZONE_TOKEN_KIND, &t).expect("read");
        assert_eq!(raw["scope"], "ingress");
    }

    #[test]
    fn expiry_uses_the_injected_clock_without_leeway() {
        let key = SigningKey::generate().expect("key");
        let t = token(&key, "z", &kds_ca());
        let keys = [key.verifying_key()];
        assert!(verify_zone_token(&keys, &t, NOW + 3599).is_ok());
        assert_eq!(
            verify_zone_token(&keys, &t, NOW + 3600),
            Err(TokenError::Expired {
                expired_at: NOW + 3600
            })
        );
        assert_eq!(
            verify_zone_token(&keys, &t, NOW + 10 * 3600),
            Err(TokenError::Expired {
                expired_at: NOW + 3600
            })
        );
    }

    #[test]
    fn tampering_breaks_the_signature() {
        let key = SigningKey::generate().expect("key");
        let t = token(&key, "zone-1", &kds_ca());
        let keys = [key.verifying_key()];
        let other_zone = tamper(&t, |c| c["zone"] = "zone-2".into());
        assert_eq!(
            verify_zone_token(&keys, &other_zone, NOW),
            Err(TokenError::BadSignature)
        );
        let longer = tamper(&t, |c| c["exp"] = (NOW + 1_000_000).into());
        assert_eq!(
            verify_zone_token(&keys, &longer, NOW + 7200),
            Err(TokenError::BadSignature)
        );
        let other_ca = tamper(&t, |c| c["kds_ca"] = kds_ca().into());
        assert_eq!(
            verify_zone_token(&keys, &other_ca, NOW),
            Err(TokenError::BadSignature)
        );
        // Flipping a character in the middle of the signature (the last one
        // carries padding bits and would only make it malformed base64).
        let sig_start = t.rfind('.').expect("three parts") + 1;
        let mut chars: Vec<char> = t.chars().collect();
        let at = sig_start + 10;
        chars[at] = if chars[at] == 'A' { 'B' } else { 'A' };
        let sig_flipped: String = chars.into_iter().collect();
        assert_eq!(
            verify_zone_token(&keys, &sig_flipped, NOW),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn a_token_from_another_key_is_refused() {
        let key = SigningKey::generate().expect("key");
        let stranger = SigningKey::generate().expect("key");
        let t = token(&stranger, "z", &kds_ca());
        assert_eq!(
            verify_zone_token(&[key.verifying_key()], &t, NOW),
            Err(TokenError::UnknownKey)
        );
        assert_eq!(verify_zone_token(&[], &t, NOW), Err(TokenError::UnknownKey));
    }

    #[test]
    fn other_kinds_are_refused() {
        #[derive(Serialize)]
        struct Dp {
            mesh: String,
            jti: String,
            iat: u64,
            exp: u64,
        }
        let key = SigningKey::generate().expect("key");
        let keys = [key.verifying_key()];
        let dp = sign_token(
            &key,
            DATAPLANE_TOKEN_KIND,
            &Dp {
                mesh: "default".into(),
                jti: "j".into(),
                iat: NOW,
                exp: NOW + 60,
            },
        )
        .expect("sign");
        assert_eq!(
            verify_zone_token(&keys, &dp, NOW),
            Err(TokenError::WrongKind(DATAPLANE_TOKEN_KIND.into()))
        );
        assert_eq!(
            read_zone_token_unverified(&dp),
            Err(TokenError::WrongKind(DATAPLANE_TOKEN_KIND.into()))
        );
        // Even claims shaped exactly like a zone token's do not pass as one
        // when signed as another kind.
        let zone_shaped = read_zone_token_unverified(&token(&key, "z", &kds_ca())).expect("read");
        let relabelled = sign_token(&key, DATAPLANE_TOKEN_KIND, &zone_shaped).expect("sign");
        assert_eq!(
            verify_zone_token(&keys, &relabelled, NOW),
            Err(TokenError::WrongKind(DATAPLANE_TOKEN_KIND.into()))
        );
        // And a zone token is not a dataplane token.
        let zt = token(&key, "z", &kds_ca());
        assert_eq!(
            verify_token::<serde_json::Value>(&keys, DATAPLANE_TOKEN_KIND, &zt, NOW),
            Err(TokenError::WrongKind(ZONE_TOKEN_KIND.into()))
        );
    }

    #[test]
    fn read_unverified_returns_the_claims_without_checking() {
        let key = SigningKey::generate().expect("key");
        let ca = kds_ca();
        let t = token(&key, "zone-7", &ca);
        let claims = read_zone_token_unverified(&t).expect("read");
        assert_eq!(claims.zone, "zone-7");
        assert_eq!(claims.kds_ca, ca);
        assert_eq!(
            claims,
            verify_zone_token(&[key.verifying_key()], &t, NOW).expect("valid")
        );
        // Not verified: a tampered token still reads (and then fails to verify).
        let tampered = tamper(&t, |c| c["zone"] = "zone-8".into());
        assert_eq!(
            read_zone_token_unverified(&tampered).expect("read").zone,
            "zone-8"
        );
        assert!(matches!(
            read_zone_token_unverified("garbage"),
            Err(TokenError::Malformed(_))
        ));
    }

    #[test]
    fn rotation_old_and_new_keys() {
        let old = SigningKey::generate().expect("key");
        let new = SigningKey::generate().expect("key");
        let ca = kds_ca();
        let old_token = token(&old, "z", &ca);
        let new_token = token(&new, "z", &ca);
        assert_eq!(
            verify_zone_token(&[new.verifying_key()], &old_token, NOW),
            Err(TokenError::UnknownKey)
        );
        let both = [old.verifying_key(), new.verifying_key()];
        assert!(verify_zone_token(&both, &old_token, NOW).is_ok());
        assert!(verify_zone_token(&both, &new_token, NOW).is_ok());
        let reversed = [new.verifying_key(), old.verifying_key()];
        assert!(verify_zone_token(&reversed, &old_token, NOW).is_ok());
    }

    #[test]
    fn issuing_refuses_bad_input() {
        let key = SigningKey::generate().expect("key");
        let ca = kds_ca();
        assert!(matches!(
            issue_zone_token(&key, "", ZoneTokenScope::Zone, HOUR, &ca, NOW),
            Err(CertError::InvalidClaims(_))
        ));
        assert!(matches!(
            issue_zone_token(&key, "z", ZoneTokenScope::Zone, HOUR, "not a cert", NOW),
            Err(CertError::InvalidPem { .. })
        ));
        assert!(matches!(
            issue_zone_token(&key, "z", ZoneTokenScope::Zone, Duration::ZERO, &ca, NOW),
            Err(CertError::InvalidValidity(_))
        ));
        assert!(matches!(
            issue_zone_token(
                &key,
                "z",
                ZoneTokenScope::Zone,
                Duration::from_secs(u64::MAX),
                &ca,
                NOW
            ),
            Err(CertError::InvalidValidity(_))
        ));
    }
}
