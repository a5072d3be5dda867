//! The headers that prove to a pod that a request came through the gateway, for this body and
//! this target only (see `tenantscale_core::auth` for the signed message).
//!
//! A signature covers the tenant, method, target, body digest and the second it was made in,
//! so every request of one tenant with the same method, target and body within a second
//! carries the same header values: most often bodiless GETs, whose digest is a constant. The
//! values are computed once and shared: they are exactly what signing each request would
//! produce, and such a busy tenant's requests skip the HMAC, the hex, the timestamp's digits
//! and their allocations. Requests with a body pay the body's SHA-256 in any case.

use hyper::Method;
use hyper::body::Bytes;
use hyper::header::HeaderValue;
use std::sync::Mutex;
use tenantscale_core::auth::{BodySha256, Claim, EMPTY_BODY_SHA256, Signer};

/// `X-Tenantscale-Timestamp`, `X-Tenantscale-Body-SHA256` and `X-Tenantscale-Signature` for
/// one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SigningHeaders {
    pub timestamp: HeaderValue,
    pub body_sha256: HeaderValue,
    pub signature: HeaderValue,
}

/// Each tenant's most recent signature (a lock per tenant: tenants never wait for each other).
pub struct Signatures {
    signer: Signer,
    /// Tenant ids, by tenant number.
    ids: Vec<String>,
    last: Vec<Mutex<Option<Signed>>>,
}

struct Signed {
    second: i64,
    method: Method,
    target: String,
    body: BodySha256,
    headers: SigningHeaders,
}

impl Signatures {
    /// Signatures for the tenants with these ids (tenant number `i` is `ids[i]`).
    pub fn new(signer: Signer, ids: Vec<String>) -> Self {
        Self {
            signer,
            last: ids.iter().map(|_| Mutex::new(None)).collect(),
            ids,
        }
    }

    /// The signing headers for tenant number `tenant` on `METHOD target` (path and query, as
    /// sent to the pod) with `body` at `second` (Unix time).
    pub fn headers(
        &self,
        tenant: usize,
        method: &Method,
        target: &str,
        body: &[u8],
        second: i64,
    ) -> SigningHeaders {
        let digest = BodySha256::of(body);
        let mut last = self.last[tenant].lock().expect("signature lock");
        if let Some(s) = &*last
            && s.second == second
            && s.body == digest
            && s.method == *method
            && s.target == target
        {
            return s.headers.clone();
        }
        let claim = Claim {
            tenant: &self.ids[tenant],
            method: method.as_str(),
            target,
            body_sha256: Some(digest.as_str()),
        };
        let signature = self.signer.sign(&claim, second);
        let headers = SigningHeaders {
            timestamp: match &*last {
                Some(s) if s.second == second => s.headers.timestamp.clone(),
                _ => HeaderValue::from(second),
            },
            body_sha256: if body.is_empty() {
                HeaderValue::from_static(EMPTY_BODY_SHA256)
            } else {
                HeaderValue::from_str(digest.as_str()).expect("hex is a header value")
            },
            signature: HeaderValue::from_maybe_shared(Bytes::from(signature))
                .expect("hex is a header value"),
        };
        match &mut *last {
            // The target's buffer is reused: no allocation for it once it is long enough.
            Some(s) => {
                s.target.clear();
                s.target.push_str(target);
                s.second = second;
                s.method = method.clone();
                s.body = digest;
                s.headers = headers.clone();
            }
            None => {
                *last = Some(Signed {
                    second,
                    method: method.clone(),
                    target: target.into(),
                    body: digest,
                    headers: headers.clone(),
                });
            }
        }
        headers
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tenantscale_core::auth::{self, verify};

    const SECRET: &[u8] = b"test-secret-0123456789abcdef";

    fn fresh(id: &str, method: &Method, target: &str, body: &[u8], second: i64) -> SigningHeaders {
        let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(body));
        let claim = Claim {
            tenant: id,
            method: method.as_str(),
            target,
            body_sha256: Some(&digest),
        };
        SigningHeaders {
            timestamp: HeaderValue::from(second),
            body_sha256: HeaderValue::try_from(digest.as_str()).unwrap(),
            signature: HeaderValue::try_from(auth::sign(SECRET, &claim, second)).unwrap(),
        }
    }

    proptest! {
        /// Whatever came before (same or other tenants, methods, targets, bodies, seconds), the
        /// headers are the ones signing this request alone would give.
        #[test]
        fn every_answer_is_the_fresh_signature(
            requests in prop::collection::vec(
                (
                    0usize..3,
                    prop::bool::ANY,
                    prop::sample::select(vec!["/v1/query", "/v1/documents", "/v1/query?x=1"]),
                    prop::sample::select(vec![&b""[..], b"{}", b"{\"query\":\"x\"}"]),
                    1_700_000_000i64..1_700_000_003,
                ),
                1..60,
            )
        ) {
            let ids = ["media-1", "finance-2", "retail-3"];
            let signatures =
                Signatures::new(Signer::new(SECRET), ids.iter().map(|id| id.to_string()).collect());
            for (tenant, post, target, body, second) in requests {
                let method = if post { Method::POST } else { Method::GET };
                prop_assert_eq!(
                    signatures.headers(tenant, &method, target, body, second),
                    fresh(ids[tenant], &method, target, body, second)
                );
            }
        }

        /// What the gateway sends verifies on the pod's side for the request it was made
        /// for, and for no other body or target.
        #[test]
        fn the_pod_accepts_the_headers_for_this_request_only(
            tenant in "[a-z0-9-]{1,20}",
            path in "/[a-zA-Z0-9/._-]{0,30}",
            query in prop::option::of("[ -~&&[^#]]{0,30}"),
            body in prop::collection::vec(any::<u8>(), 0..300),
            changed_at in any::<prop::sample::Index>(),
            flip in 1u8..=255,
        ) {
            let target = match &query {
                Some(q) => format!("{path}?{q}"),
                None => path.clone(),
            };
            let signatures = Signatures::new(Signer::new(SECRET), vec![tenant.clone()]);
            let now = 1_700_000_000;
            let headers = signatures.headers(0, &Method::POST, &target, &body, now);
            let keys = [Signer::new(SECRET)];
            // The pod's side: the digest of the body it read must be the signed one.
            let check = |target: &str, body: &[u8]| {
                let sent = headers.body_sha256.to_str().unwrap();
                let signed = Claim {
                    tenant: &tenant,
                    method: "POST",
                    target,
                    body_sha256: Some(sent),
                };
                verify(
                    &keys,
                    &signed,
                    headers.timestamp.to_str().unwrap(),
                    headers.signature.to_str().unwrap(),
                    now,
                )
                .is_ok()
                    && BodySha256::of(body).as_str() == sent
            };
            prop_assert!(check(&target, &body));
            if !body.is_empty() {
                let mut other = body.clone();
                other[changed_at.index(body.len())] ^= flip;
                prop_assert!(!check(&target, &other));
            }
            let mut longer = body.clone();
            longer.push(0);
            prop_assert!(!check(&target, &longer));
            let other_query = match &query {
                Some(q) => format!("{path}?{q}&x=1"),
                None => format!("{path}?x=1"),
            };
            prop_assert!(!check(&other_query, &body));
            if query.is_some() {
                prop_assert!(!check(&path, &body));
            }
        }
    }
}
