//! How the gateway tells a pod which tenant a request is for, so that nothing reaching a pod
//! directly can pose as a tenant, or replay what it saw with another body or query.
//!
//! The gateway sends `X-Tenantscale-Tenant`, `X-Tenantscale-Timestamp` (decimal Unix seconds),
//! `X-Tenantscale-Body-SHA256` (the body's lowercase hex SHA-256; the empty body's for a
//! bodiless request) and `X-Tenantscale-Signature`: the lowercase hex HMAC-SHA256, under the
//! shared secret, of the message
//!
//! ```text
//! tenant 0x0A METHOD 0x0A path-and-query 0x0A timestamp 0x0A body-sha256
//! ```
//!
//! each part as the header or request line carries it (path-and-query is the request target as
//! sent: `/v1/query`, or `/v1/query?x=1`, no `?` without a query), with no trailing newline.
//! No part can hold a 0x0A byte (HTTP forbids it in header values and request lines), so the
//! message names one request only. A signature is valid for 30 s either way.
//!
//! The format before the body digest ([`Claim::body_sha256`] `None`) was
//! `tenant \n METHOD \n path \n timestamp`: pods accept it only when told to, while gateways
//! are upgraded.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// Seconds a signed request stays valid, either side of the pod's clock.
pub const MAX_SKEW_SECONDS: i64 = 30;

/// [`BodySha256`] of the empty body.
pub const EMPTY_BODY_SHA256: &str =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

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

/// What a signature covers, besides the second it was made in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim<'a> {
    pub tenant: &'a str,
    pub method: &'a str,
    /// Path and query as sent (the path alone in the legacy format).
    pub target: &'a str,
    /// `X-Tenantscale-Body-SHA256` as sent; `None`: the legacy format, which has no digest.
    pub body_sha256: Option<&'a str>,
}

/// A body's lowercase hex SHA-256, kept on the stack.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct BodySha256([u8; 64]);

impl BodySha256 {
    pub fn of(body: &[u8]) -> Self {
        let mut hex = [0; 64];
        if body.is_empty() {
            // Most requests the gateway forwards have no body: no hashing for them.
            hex.copy_from_slice(EMPTY_BODY_SHA256.as_bytes());
        } else {
            lower_hex(&Sha256::digest(body), &mut hex);
        }
        Self(hex)
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("hex digits are ASCII")
    }
}

impl std::fmt::Debug for BodySha256 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A shared secret with its HMAC pads computed once (the gateway signs and the pod verifies
/// every request).
#[derive(Clone)]
pub struct Signer(Hmac<Sha256>);

impl Signer {
    pub fn new(secret: &[u8]) -> Self {
        Self(Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length"))
    }

    /// The signature of `claim` at `timestamp` (Unix seconds), lowercase hex.
    pub fn sign(&self, claim: &Claim, timestamp: i64) -> String {
        let mut hex = [0; 64];
        lower_hex(
            &self.mac(claim, timestamp).finalize().into_bytes(),
            &mut hex,
        );
        String::from_utf8(hex.to_vec()).expect("hex digits are ASCII")
    }

    /// The HMAC of the message of `claim` at `timestamp` (see the module's documentation).
    fn mac(&self, claim: &Claim, timestamp: i64) -> Hmac<Sha256> {
        let mut mac = self.0.clone();
        for part in [claim.tenant, "\n", claim.method, "\n", claim.target, "\n"] {
            mac.update(part.as_bytes());
        }
        let mut digits = [0; 20];
        mac.update(decimal(timestamp, &mut digits));
        if let Some(digest) = claim.body_sha256 {
            mac.update(b"\n");
            mac.update(digest.as_bytes());
        }
        mac
    }
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(..)")
    }
}

/// The signature the gateway sends for `claim` at `timestamp`.
pub fn sign(secret: &[u8], claim: &Claim, timestamp: i64) -> String {
    Signer::new(secret).sign(claim, timestamp)
}

/// Checks a signed claim at `now` (Unix seconds) under any of `keys` (a pod accepts the
/// current and the next secret while the secret rotates). Comparisons are constant-time, and
/// every key is tried, so the time taken does not tell which one matched.
pub fn verify(
    keys: &[Signer],
    claim: &Claim,
    timestamp: &str,
    signature: &str,
    now: i64,
) -> Result<(), AuthError> {
    let timestamp: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| AuthError::BadTimestamp)?;
    // Saturating: the timestamp is the sender's, any i64; a skew past i64's range is out of
    // bounds all the same.
    let skew = timestamp.saturating_sub(now);
    if skew.unsigned_abs() > MAX_SKEW_SECONDS.unsigned_abs() {
        return Err(AuthError::Skewed(skew));
    }
    let mut given = [0; 32];
    hex::decode_to_slice(signature.trim(), &mut given).map_err(|_| AuthError::BadSignature)?;
    let matched = keys.iter().fold(false, |matched, key| {
        key.mac(claim, timestamp).verify_slice(&given).is_ok() | matched
    });
    if matched {
        Ok(())
    } else {
        Err(AuthError::BadSignature)
    }
}

/// `bytes` as lowercase hex into `out` (twice as long), by table: `hex::encode` goes through
/// `char` iterators and a `String`, and this runs on every request the gateway forwards.
fn lower_hex(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (b, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0xf)];
    }
}

/// `n` in decimal, written at the end of `buf` (20 bytes fit `i64::MIN`).
fn decimal(n: i64, buf: &mut [u8; 20]) -> &[u8] {
    let mut rest = n.unsigned_abs();
    let mut start = buf.len();
    loop {
        start -= 1;
        buf[start] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    if n < 0 {
        start -= 1;
        buf[start] = b'-';
    }
    &buf[start..]
}

/// SHA-256 of an API key, as the catalog stores it.
pub fn api_key_hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SECRET: &[u8] = b"shared-secret-0123456789";

    fn claim<'a>(tenant: &'a str, target: &'a str, body_sha256: &'a str) -> Claim<'a> {
        Claim {
            tenant,
            method: "POST",
            target,
            body_sha256: Some(body_sha256),
        }
    }

    /// The README's example, computed with Python's `hmac` and `hashlib`: a change of the
    /// message's bytes breaks every gateway and pod that has not been upgraded with it.
    #[test]
    fn the_documented_message_gives_the_golden_signature() {
        let body = BodySha256::of(br#"{"query":"hello"}"#);
        assert_eq!(
            body.as_str(),
            "96780c036a8123d5389f2883041c9c4fa71b034b2ae4e9990a60cf5e2535c5cc"
        );
        // media-1 0A POST 0A /v1/query?x=1 0A 1700000000 0A 96780c…c5cc
        let signature = sign(
            b"0123456789abcdef",
            &claim("media-1", "/v1/query?x=1", body.as_str()),
            1_700_000_000,
        );
        assert_eq!(
            signature,
            "384982cca7975158e8b9d42ab06a8ef27990af3e330e839622884ea9520c2c20"
        );
        assert_eq!(BodySha256::of(b"").as_str(), EMPTY_BODY_SHA256);
        assert_eq!(
            BodySha256::of(b"").as_str(),
            hex::encode(Sha256::digest(b""))
        );
    }

    #[test]
    fn signed_claims_verify_only_as_signed() {
        let keys = [Signer::new(SECRET)];
        let digest = BodySha256::of(b"{}");
        let signed = claim("media-1", "/v1/query", digest.as_str());
        let sig = sign(SECRET, &signed, 1000);
        assert_eq!(verify(&keys, &signed, "1000", &sig, 1010), Ok(()));
        let other_body = BodySha256::of(b"{ }");
        for changed in [
            Claim {
                tenant: "media-2",
                ..signed
            },
            Claim {
                method: "GET",
                ..signed
            },
            Claim {
                target: "/v1/query?x=1",
                ..signed
            },
            Claim {
                body_sha256: Some(other_body.as_str()),
                ..signed
            },
            Claim {
                body_sha256: None,
                ..signed
            },
        ] {
            assert_eq!(
                verify(&keys, &changed, "1000", &sig, 1010),
                Err(AuthError::BadSignature),
                "{changed:?}"
            );
        }
        assert_eq!(
            verify(&[Signer::new(b"other")], &signed, "1000", &sig, 1010),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            verify(&keys, &signed, "1000", &sig, 1031),
            Err(AuthError::Skewed(-31))
        );
        assert_eq!(
            verify(&keys, &signed, "soon", &sig, 1000),
            Err(AuthError::BadTimestamp)
        );
        assert_eq!(
            verify(&keys, &signed, "1000", "zz", 1000),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            verify(&keys, &signed, "1000", &sig[..62], 1000),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn extreme_timestamps_are_skewed_not_an_overflow() {
        let keys = [Signer::new(SECRET)];
        let signed = claim("media-1", "/v1/query", EMPTY_BODY_SHA256);
        for (timestamp, now) in [
            (i64::MIN, i64::MAX),
            (i64::MAX, i64::MIN),
            (i64::MIN, 1_700_000_000),
            (i64::MAX, 1_700_000_000),
            (i64::MIN, 0),
        ] {
            let sig = sign(SECRET, &signed, timestamp);
            let skew = timestamp.saturating_sub(now);
            assert_eq!(
                verify(&keys, &signed, &timestamp.to_string(), &sig, now),
                Err(AuthError::Skewed(skew)),
                "{timestamp} at {now}"
            );
        }
    }

    #[test]
    fn any_of_the_keys_verifies() {
        let (current, next) = (b"current-secret-0123", b"next-secret-0123456");
        let keys = [Signer::new(current), Signer::new(next)];
        let signed = claim("media-1", "/v1/query", EMPTY_BODY_SHA256);
        for secret in [&current[..], &next[..]] {
            let sig = sign(secret, &signed, 1000);
            assert_eq!(verify(&keys, &signed, "1000", &sig, 1000), Ok(()));
        }
        let third = sign(b"third-secret-012345", &signed, 1000);
        assert_eq!(
            verify(&keys, &signed, "1000", &third, 1000),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn the_legacy_message_has_no_digest_line() {
        let legacy = Claim {
            tenant: "media-1",
            method: "POST",
            target: "/v1/query",
            body_sha256: None,
        };
        let mut expected = Signer::new(SECRET).0;
        expected.update(b"media-1\nPOST\n/v1/query\n1000");
        assert_eq!(
            sign(SECRET, &legacy, 1000),
            hex::encode(expected.finalize().into_bytes())
        );
    }

    proptest! {
        /// The signature is hex HMAC-SHA256 of the message as the docs write it, for any
        /// timestamp, tenant, target and body (its hex and digits are written by hand, not by
        /// the `hex` crate and `to_string`).
        #[test]
        fn signatures_are_hex_hmac_of_the_documented_message(
            timestamp in proptest::num::i64::ANY,
            tenant in "[a-z0-9-]{1,20}",
            target in "/[ -~]{0,40}",
            body in prop::collection::vec(any::<u8>(), 0..200),
        ) {
            let digest = hex::encode(Sha256::digest(&body));
            let ours = BodySha256::of(&body);
            prop_assert_eq!(ours.as_str(), digest.as_str());
            let written = format!("{tenant}\nPOST\n{target}\n{timestamp}\n{digest}");
            let mut expected = Signer::new(b"secret").0;
            expected.update(written.as_bytes());
            prop_assert_eq!(
                sign(b"secret", &claim(&tenant, &target, &digest), timestamp),
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
