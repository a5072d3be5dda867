//! How the gateway tells a pod which tenant a request is for, so that nothing reaching a pod
//! directly can pose as a tenant: `X-Tenantscale-Tenant`, `X-Tenantscale-Timestamp` (Unix
//! seconds) and `X-Tenantscale-Signature`, the hex HMAC-SHA256 under a shared secret of
//! `tenant \n METHOD \n path \n timestamp`. A signature is valid for 30 s either way.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// Seconds a signed request stays valid, either side of the pod's clock.
pub const MAX_SKEW_SECONDS: i64 = 30;

/// Why a request's tenant claim was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing {0} header")]
    Missing(&'static str),
    #[error("timestamp is not a number of seconds")]
    BadTimestamp,
    #[error("timestamp is {0} s away from the pod's clock (at most {MAX_SKEW_SECONDS} s)")]
    Skewed(i64),
    #[error("signature does not match")]
    BadSignature,
}

fn keyed(secret: &[u8]) -> Hmac<Sha256> {
    Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length")
}

/// Feeds the signed message, `tenant \n METHOD \n path \n timestamp`, into `mac`.
fn message(
    mut mac: Hmac<Sha256>,
    tenant: &str,
    method: &str,
    path: &str,
    timestamp: i64,
) -> Hmac<Sha256> {
    for part in [tenant, "\n", method, "\n", path, "\n"] {
        mac.update(part.as_bytes());
    }
    mac.update(timestamp.to_string().as_bytes());
    mac
}

fn mac(secret: &[u8], tenant: &str, method: &str, path: &str, timestamp: i64) -> Hmac<Sha256> {
    message(keyed(secret), tenant, method, path, timestamp)
}

/// The signature the gateway sends for `tenant` on `METHOD path` at `timestamp`.
pub fn sign(secret: &[u8], tenant: &str, method: &str, path: &str, timestamp: i64) -> String {
    Signer::new(secret).sign(tenant, method, path, timestamp)
}

/// [`sign`] with the key's HMAC pads computed once (the gateway signs every request).
#[derive(Clone)]
pub struct Signer(Hmac<Sha256>);

impl Signer {
    pub fn new(secret: &[u8]) -> Self {
        Self(keyed(secret))
    }

    pub fn sign(&self, tenant: &str, method: &str, path: &str, timestamp: i64) -> String {
        let mac = message(self.0.clone(), tenant, method, path, timestamp);
        lower_hex(&mac.finalize().into_bytes())
    }
}

/// `bytes` as lowercase hex, by table: `hex::encode` goes through `char` iterators, and this
/// runs on every request the gateway forwards.
fn lower_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = Vec::with_capacity(2 * bytes.len());
    for b in bytes {
        text.extend_from_slice(&[DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 0xf)]]);
    }
    String::from_utf8(text).expect("hex digits are ASCII")
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(..)")
    }
}

/// Checks a signed tenant claim at `now` (Unix seconds); constant-time comparison.
pub fn verify(
    secret: &[u8],
    tenant: &str,
    method: &str,
    path: &str,
    timestamp: &str,
    signature: &str,
    now: i64,
) -> Result<(), AuthError> {
    let timestamp: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| AuthError::BadTimestamp)?;
    let skew = timestamp - now;
    if skew.abs() > MAX_SKEW_SECONDS {
        return Err(AuthError::Skewed(skew));
    }
    let given = hex::decode(signature.trim()).map_err(|_| AuthError::BadSignature)?;
    mac(secret, tenant, method, path, timestamp)
        .verify_slice(&given)
        .map_err(|_| AuthError::BadSignature)
}

/// SHA-256 of an API key, as the catalog stores it.
pub fn api_key_hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_claims_verify_only_as_signed() {
        let s = b"shared-secret";
        let sig = sign(s, "media-1", "POST", "/v1/query", 1000);
        assert_eq!(
            verify(s, "media-1", "POST", "/v1/query", "1000", &sig, 1010),
            Ok(())
        );
        assert_eq!(
            verify(s, "media-2", "POST", "/v1/query", "1000", &sig, 1010),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            verify(s, "media-1", "GET", "/v1/query", "1000", &sig, 1010),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            verify(b"other", "media-1", "POST", "/v1/query", "1000", &sig, 1010),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            verify(s, "media-1", "POST", "/v1/query", "1000", &sig, 1031),
            Err(AuthError::Skewed(-31))
        );
        assert_eq!(
            verify(s, "media-1", "POST", "/v1/query", "soon", &sig, 1000),
            Err(AuthError::BadTimestamp)
        );
        assert_eq!(
            verify(s, "media-1", "POST", "/v1/query", "1000", "zz", 1000),
            Err(AuthError::BadSignature)
        );
    }

    proptest::proptest! {
        /// The signature is hex HMAC-SHA256 of the message as the docs write it, for any
        /// timestamp and tenant (its hex is written by table, not by the `hex` crate).
        #[test]
        fn signatures_are_hex_hmac_of_the_documented_message(
            timestamp in proptest::num::i64::ANY,
            tenant in "[a-z0-9-]{1,20}",
        ) {
            let written = format!("{tenant}\nPOST\n/v1/query\n{timestamp}");
            let mut expected = keyed(b"secret");
            expected.update(written.as_bytes());
            proptest::prop_assert_eq!(
                sign(b"secret", &tenant, "POST", "/v1/query", timestamp),
                hex::encode(expected.finalize().into_bytes())
            );
        }
    }

    #[test]
    fn api_key_hash_matches_the_catalog_examples() {
        // examples/*.yaml store sha256("demo-key-<id>").
        assert_eq!(
            hex::encode(api_key_hash("demo-key-gold-1")),
            "b6d801621d544ae9bde5d44ffbd770eb68f7cb072e3a8be6edb7f6e94ec277ed"
        );
    }
}
