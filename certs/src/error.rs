//! Error types of the crate.

/// Failures while creating, loading or combining key material (certificates,
/// private keys, rustls configurations, token signing).
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// The input is not PEM of the expected kind, or contains no usable item.
    #[error("invalid PEM ({what}): {reason}")]
    InvalidPem { what: String, reason: String },
    /// A private or public key could not be used (wrong algorithm, corrupt, …).
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// The certificate given as a CA cannot sign: it is not a CA, or its key
    /// does not belong to it.
    #[error("invalid CA: {0}")]
    InvalidCa(String),
    /// A subject alternative name is neither an IP address nor a DNS name.
    #[error("invalid subject alternative name {name:?}: {reason}")]
    InvalidSan { name: String, reason: String },
    /// A common name is empty or cannot be encoded.
    #[error("invalid common name {0:?}")]
    InvalidCommonName(String),
    /// A mesh or zone name is empty or has characters that cannot go into a
    /// certificate's names (whitespace, control or non-ASCII characters, `/`).
    #[error("invalid {what} name {name:?}: {reason}")]
    InvalidName {
        what: String,
        name: String,
        reason: String,
    },
    /// A certificate signing request is not PEM, does not parse, is not
    /// signed by its own key, or is for a key of another type than ECDSA
    /// P-256.
    #[error("invalid certificate signing request: {0}")]
    InvalidCsr(String),
    /// A validity period is zero or too large to represent.
    #[error("invalid validity period: {0}")]
    InvalidValidity(String),
    /// Certificate generation or signing failed inside rcgen.
    #[error("certificate generation failed: {0}")]
    Generate(String),
    /// rustls refused the configuration (e.g. the key does not match the
    /// certificate).
    #[error("TLS configuration: {0}")]
    Tls(String),
    /// Token claims cannot be signed (not an object, no numeric `exp`, empty
    /// zone name, …).
    #[error("invalid token claims: {0}")]
    InvalidClaims(String),
    /// The operating system's random number generator failed.
    #[error("random number generator failed")]
    Rng,
}

/// Why a signed token was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a well-formed token of ours: bad encoding, unsupported algorithm,
    /// missing `kid` or `exp`, claims of the wrong shape.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// A key with the token's `kid` is known, but the signature does not
    /// verify with it (tampered token, or a key-id collision).
    #[error("token signature is invalid")]
    BadSignature,
    /// None of the trusted keys has the token's `kid` (signed by a key that was
    /// rotated out, or by somebody else).
    #[error("token is signed by an unknown key")]
    UnknownKey,
    /// The token is authentic but its `exp` is not after the given time.
    #[error("token expired at {expired_at} (unix seconds)")]
    Expired { expired_at: u64 },
    /// The token is of another kind (its header `typ`, given here) than the one
    /// expected, e.g. a dataplane token presented as a zone token.
    #[error("token is of kind {0:?}, not the expected one")]
    WrongKind(String),
}
