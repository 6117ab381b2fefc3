//! Key material for the control planes. For now: random bearer tokens and
//! their constant-time comparison. Mesh CAs, workload certificates and rustls
//! configurations join here as the mesh grows. This crate holds no state and
//! does no I/O; callers decide where material is kept.

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
