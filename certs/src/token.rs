//! Signed tokens: Ed25519 keys and a generic JWT (EdDSA) layer that zone and
//! dataplane tokens are thin wrappers of.
//!
//! A token is a JWT whose header carries `alg: EdDSA`, `kid` (the
//! [`VerifyingKey::key_id`] of the signer) and `typ` (the token's *kind*,
//! e.g. [`ZONE_TOKEN_KIND`]). The header is covered by the signature, so a
//! token of one kind cannot be relabelled as another; verification checks the
//! kind, so a dataplane token is never accepted where a zone token is
//! expected. Claims must carry `exp` (unix seconds).

use std::fmt;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ring::signature::{Ed25519KeyPair, KeyPair as _};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::PrivatePkcs8KeyDer;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{CertError, TokenError};

/// Header `typ` of zone tokens.
pub const ZONE_TOKEN_KIND: &str = "zone+jwt";
/// Header `typ` of dataplane tokens.
pub const DATAPLANE_TOKEN_KIND: &str = "dataplane+jwt";

/// An Ed25519 private key that signs tokens, kept as PKCS#8 DER.
///
/// `Debug` shows only the key id.
#[derive(Clone)]
pub struct SigningKey {
    pkcs8: Vec<u8>,
    public: VerifyingKey,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("key_id", &self.key_id())
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A fresh random key.
    pub fn generate() -> Result<SigningKey, CertError> {
        let doc = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
            .map_err(|_| CertError::Rng)?;
        Self::from_pkcs8_der(doc.as_ref())
    }

    fn from_pkcs8_der(der: &[u8]) -> Result<SigningKey, CertError> {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map_err(|e| CertError::InvalidKey(format!("not an Ed25519 PKCS#8 key: {e}")))?;
        let public = VerifyingKey::from_bytes(pair.public_key().as_ref())?;
        Ok(SigningKey {
            pkcs8: der.to_vec(),
            public,
        })
    }

    /// Loads a key from PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`), as
    /// written by [`SigningKey::to_pem`] or `openssl genpkey -algorithm
    /// ed25519`.
    pub fn from_pem(pem: &str) -> Result<SigningKey, CertError> {
        let der = PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| {
            CertError::InvalidPem {
                what: "token signing key".into(),
                reason: e.to_string(),
            }
        })?;
        Self::from_pkcs8_der(der.secret_pkcs8_der())
    }

    /// PKCS#8 PEM (`PRIVATE KEY`).
    pub fn to_pem(&self) -> String {
        crate::pem::encode("PRIVATE KEY", &self.pkcs8)
    }

    /// The public half, to hand to verifiers.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.public.clone()
    }

    /// Same as `self.verifying_key().key_id()`.
    pub fn key_id(&self) -> String {
        self.public.key_id()
    }
}

/// An Ed25519 public key (raw 32 bytes) that verifies tokens.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifyingKey([u8; 32]);

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerifyingKey({})", self.to_base64())
    }
}

impl VerifyingKey {
    /// From the raw 32-byte public key.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CertError> {
        let raw: [u8; 32] = bytes.try_into().map_err(|_| {
            CertError::InvalidKey(format!(
                "an Ed25519 public key is 32 bytes, not {}",
                bytes.len()
            ))
        })?;
        Ok(VerifyingKey(raw))
    }

    /// The raw 32-byte public key.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Standard, padded base64 of the raw key (44 characters).
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// Parses [`VerifyingKey::to_base64`] output; surrounding whitespace and
    /// the URL-safe unpadded alphabet (JWK `x`) are accepted too.
    pub fn from_base64(s: &str) -> Result<Self, CertError> {
        let s = s.trim();
        let bytes = STANDARD
            .decode(s)
            .or_else(|_| URL_SAFE_NO_PAD.decode(s))
            .map_err(|e| CertError::InvalidKey(format!("verifying key is not base64: {e}")))?;
        Self::from_bytes(&bytes)
    }

    /// A short stable id: the first 16 hex characters of SHA-256 over the
    /// raw public key. Tokens name their signer with it in the header `kid`.
    pub fn key_id(&self) -> String {
        let digest = ring::digest::digest(&ring::digest::SHA256, &self.0);
        hex::encode(&digest.as_ref()[..8])
    }
}

/// Signs `claims` as a token of `kind` (see [`ZONE_TOKEN_KIND`],
/// [`DATAPLANE_TOKEN_KIND`]). `claims` must serialize to a JSON object with a
/// non-negative integer `exp` (unix seconds), which [`verify_token`] checks.
pub fn sign_token<C: Serialize>(
    key: &SigningKey,
    kind: &str,
    claims: &C,
) -> Result<String, CertError> {
    let value =
        serde_json::to_value(claims).map_err(|e| CertError::InvalidClaims(e.to_string()))?;
    if !value.get("exp").is_some_and(serde_json::Value::is_u64) {
        return Err(CertError::InvalidClaims(
            "claims must be an object with `exp` in unix seconds".into(),
        ));
    }
    let mut header = Header::new(Algorithm::EdDSA);
    header.typ = Some(kind.to_owned());
    header.kid = Some(key.key_id());
    jsonwebtoken::encode(&header, &value, &EncodingKey::from_ed_der(&key.pkcs8))
        .map_err(|e| CertError::InvalidKey(format!("cannot sign token: {e}")))
}

fn malformed(e: impl ToString) -> TokenError {
    TokenError::Malformed(e.to_string())
}

fn check_kind(typ: Option<&str>, kind: &str) -> Result<(), TokenError> {
    match typ {
        Some(t) if t == kind => Ok(()),
        Some(t) => Err(TokenError::WrongKind(t.to_owned())),
        None => Err(TokenError::WrongKind(String::new())),
    }
}

/// Verifies a token of `kind` and returns its claims.
///
/// In order: the header must be EdDSA with a `kid`; one of `keys` must have
/// that key id ([`TokenError::UnknownKey`] otherwise) and verify the signature
/// ([`TokenError::BadSignature`]); the header `typ` must be `kind`
/// ([`TokenError::WrongKind`]); `exp` must be after `now_unix`, with no
/// leeway ([`TokenError::Expired`]).
///
/// Expiry is checked here rather than by jsonwebtoken, whose own check reads
/// the system clock and adds 60 s of leeway by default: taking `now_unix` as
/// an argument keeps this function pure and lets tests (and callers with a
/// clock of their own) decide what "now" is.
pub fn verify_token<C: DeserializeOwned>(
    keys: &[VerifyingKey],
    kind: &str,
    token: &str,
    now_unix: u64,
) -> Result<C, TokenError> {
    let header = jsonwebtoken::decode_header(token).map_err(malformed)?;
    if header.alg != Algorithm::EdDSA {
        return Err(TokenError::Malformed(format!(
            "algorithm {:?} is not accepted, only EdDSA",
            header.alg
        )));
    }
    let kid = header
        .kid
        .as_deref()
        .ok_or_else(|| malformed("header has no kid"))?;

    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.validate_exp = false; // checked below against now_unix
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.leeway = 0;
    validation.required_spec_claims.clear();

    let mut outcome = Err(TokenError::UnknownKey);
    for key in keys.iter().filter(|k| k.key_id() == kid) {
        let decoding_key = DecodingKey::from_ed_der(key.as_bytes());
        outcome = jsonwebtoken::decode::<serde_json::Value>(token, &decoding_key, &validation)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature => TokenError::BadSignature,
                _ => malformed(e),
            });
        if outcome.is_ok() {
            break;
        }
    }
    let data = outcome?;
    check_kind(data.header.typ.as_deref(), kind)?;
    let exp = data
        .claims
        .get("exp")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| malformed("claims have no numeric exp"))?;
    if now_unix >= exp {
        return Err(TokenError::Expired { expired_at: exp });
    }
    serde_json::from_value(data.claims).map_err(|e| malformed(format!("claims: {e}")))
}

/// Reads the claims of a token of `kind` WITHOUT verifying its signature or
/// expiry. Only for deciding what to do before the real check happens
/// elsewhere (e.g. a zone reading its own token); never for authorization.
pub fn read_token_unverified<C: DeserializeOwned>(
    kind: &str,
    token: &str,
) -> Result<C, TokenError> {
    let header = jsonwebtoken::decode_header(token).map_err(malformed)?;
    check_kind(header.typ.as_deref(), kind)?;
    let mut parts = token.split('.');
    let (Some(_), Some(payload), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed("a token has three dot-separated parts"));
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|e| malformed(format!("payload: {e}")))?;
    serde_json::from_slice(&bytes).map_err(|e| malformed(format!("claims: {e}")))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    use super::*;

    /// Shape of the dataplane tokens to come: the generic layer must carry it.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct DataplaneClaims {
        mesh: String,
        tags: BTreeMap<String, Vec<String>>,
        jti: String,
        iat: u64,
        exp: u64,
    }

    fn dp_claims(iat: u64, exp: u64) -> DataplaneClaims {
        let mut tags = BTreeMap::new();
        tags.insert("kuma.io/service".to_string(), vec!["backend".to_string()]);
        DataplaneClaims {
            mesh: "default".into(),
            tags,
            jti: "j1".into(),
            iat,
            exp,
        }
    }

    /// `openssl genpkey -algorithm ed25519`: PKCS#8 v1, without the public key.
    const OPENSSL_ED25519: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIFFHSGsWN1yd9OQg6PXzjcQZW/s0p8MwRjoChjX7901q
-----END PRIVATE KEY-----
";

    #[test]
    fn signing_key_pem_round_trip() {
        let key = SigningKey::generate().expect("key");
        let pem = key.to_pem();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        assert!(pem.ends_with("-----END PRIVATE KEY-----\n"));
        let again = SigningKey::from_pem(&pem).expect("reload");
        assert_eq!(again.to_pem(), pem);
        assert_eq!(again.verifying_key(), key.verifying_key());
        assert_eq!(again.key_id(), key.key_id());
        // The reloaded key signs tokens the original's public key accepts.
        let token = sign_token(&again, DATAPLANE_TOKEN_KIND, &dp_claims(0, 10)).expect("sign");
        let claims: DataplaneClaims =
            verify_token(&[key.verifying_key()], DATAPLANE_TOKEN_KIND, &token, 5).expect("verify");
        assert_eq!(claims, dp_claims(0, 10));
    }

    #[test]
    fn openssl_keys_load_and_foreign_keys_are_refused() {
        let key = SigningKey::from_pem(OPENSSL_ED25519).expect("openssl key");
        let token = sign_token(&key, DATAPLANE_TOKEN_KIND, &dp_claims(0, 10)).expect("sign");
        let _: DataplaneClaims =
            verify_token(&[key.verifying_key()], DATAPLANE_TOKEN_KIND, &token, 1).expect("verify");

        let ecdsa = crate::generate_ca("x", std::time::Duration::from_secs(60)).expect("CA");
        assert!(matches!(
            SigningKey::from_pem(&ecdsa.key_pem),
            Err(CertError::InvalidKey(_))
        ));
        assert!(matches!(
            SigningKey::from_pem("nope"),
            Err(CertError::InvalidPem { .. })
        ));
        assert!(!format!("{key:?}").contains("MC4C"));
    }

    #[test]
    fn verifying_key_base64_and_key_id() {
        let a = SigningKey::generate().expect("key");
        let b = SigningKey::generate().expect("key");
        let va = a.verifying_key();
        let text = va.to_base64();
        assert_eq!(text.len(), 44);
        assert_eq!(VerifyingKey::from_base64(&text).expect("parse"), va);
        assert_eq!(
            VerifyingKey::from_base64(&format!(" {} \n", URL_SAFE_NO_PAD.encode(va.as_bytes())))
                .expect("url-safe"),
            va
        );
        assert!(matches!(
            VerifyingKey::from_base64("AAAA"),
            Err(CertError::InvalidKey(_))
        ));
        assert!(matches!(
            VerifyingKey::from_base64("not base64 !"),
            Err(CertError::InvalidKey(_))
        ));
        let id = va.key_id();
        assert_eq!(id.len(), 16);
        assert!(id.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(id, a.key_id());
        assert_ne!(id, b.key_id());
    }

    #[test]
    fn generic_round_trip_and_header() {
        let key = SigningKey::generate().expect("key");
        let token = sign_token(&key, DATAPLANE_TOKEN_KIND, &dp_claims(100, 200)).expect("sign");
        let header = jsonwebtoken::decode_header(&token).expect("header");
        assert_eq!(header.alg, Algorithm::EdDSA);
        assert_eq!(header.typ.as_deref(), Some(DATAPLANE_TOKEN_KIND));
        assert_eq!(header.kid, Some(key.key_id()));
        let claims: DataplaneClaims =
            verify_token(&[key.verifying_key()], DATAPLANE_TOKEN_KIND, &token, 150).expect("ok");
        assert_eq!(claims, dp_claims(100, 200));
        let unverified: DataplaneClaims =
            read_token_unverified(DATAPLANE_TOKEN_KIND, &token).expect("read");
        assert_eq!(unverified, claims);
    }

    #[test]
    fn claims_without_exp_are_not_signed() {
        let key = SigningKey::generate().expect("key");
        #[derive(Serialize)]
        struct NoExp {
            mesh: String,
        }
        #[derive(Serialize)]
        struct TextExp {
            exp: String,
        }
        assert!(matches!(
            sign_token(&key, "x", &NoExp { mesh: "m".into() }),
            Err(CertError::InvalidClaims(_))
        ));
        assert!(matches!(
            sign_token(&key, "x", &TextExp { exp: "soon".into() }),
            Err(CertError::InvalidClaims(_))
        ));
        assert!(matches!(
            sign_token(&key, "x", &5u64),
            Err(CertError::InvalidClaims(_))
        ));
    }

    #[test]
    fn a_matching_kid_with_a_foreign_signature_is_a_bad_signature() {
        let real = SigningKey::generate().expect("key");
        let forger = SigningKey::generate().expect("key");
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some(DATAPLANE_TOKEN_KIND.into());
        header.kid = Some(real.key_id());
        let forged = jsonwebtoken::encode(
            &header,
            &dp_claims(0, 100),
            &EncodingKey::from_ed_der(&forger.pkcs8),
        )
        .expect("encode");
        assert_eq!(
            verify_token::<DataplaneClaims>(
                &[real.verifying_key()],
                DATAPLANE_TOKEN_KIND,
                &forged,
                1
            ),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn other_algorithms_and_garbage_are_malformed() {
        let key = SigningKey::generate().expect("key");
        let mut header = Header::new(Algorithm::HS256);
        header.typ = Some(DATAPLANE_TOKEN_KIND.into());
        header.kid = Some(key.key_id());
        // HMAC "signed" with the public key: the classic algorithm confusion.
        let hs = jsonwebtoken::encode(
            &header,
            &dp_claims(0, 100),
            &EncodingKey::from_secret(key.verifying_key().as_bytes()),
        )
        .expect("encode");
        let keys = [key.verifying_key()];
        assert!(matches!(
            verify_token::<DataplaneClaims>(&keys, DATAPLANE_TOKEN_KIND, &hs, 1),
            Err(TokenError::Malformed(_))
        ));
        for garbage in ["", "a.b", "a.b.c", "x.y.z.w", "%%%.%%%.%%%"] {
            assert!(
                matches!(
                    verify_token::<DataplaneClaims>(&keys, DATAPLANE_TOKEN_KIND, garbage, 1),
                    Err(TokenError::Malformed(_))
                ),
                "{garbage:?}"
            );
            assert!(
                matches!(
                    read_token_unverified::<DataplaneClaims>(DATAPLANE_TOKEN_KIND, garbage),
                    Err(TokenError::Malformed(_))
                ),
                "{garbage:?}"
            );
        }
        // No kid at all.
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some(DATAPLANE_TOKEN_KIND.into());
        let no_kid = jsonwebtoken::encode(
            &header,
            &dp_claims(0, 100),
            &EncodingKey::from_ed_der(&key.pkcs8),
        )
        .expect("encode");
        assert!(matches!(
            verify_token::<DataplaneClaims>(&keys, DATAPLANE_TOKEN_KIND, &no_kid, 1),
            Err(TokenError::Malformed(_))
        ));
    }

    #[test]
    fn claims_of_the_wrong_shape_are_malformed() {
        let key = SigningKey::generate().expect("key");
        #[derive(Serialize)]
        struct Other {
            exp: u64,
        }
        let token = sign_token(&key, DATAPLANE_TOKEN_KIND, &Other { exp: 10 }).expect("sign");
        assert!(matches!(
            verify_token::<DataplaneClaims>(
                &[key.verifying_key()],
                DATAPLANE_TOKEN_KIND,
                &token,
                1
            ),
            Err(TokenError::Malformed(_))
        ));
    }
}
