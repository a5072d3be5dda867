//! The headers that prove to a pod that a request came through the gateway.
//!
//! A signature covers the tenant, method, path and the second it was made in, so every request
//! of one tenant to one endpoint within a second carries the same two header values. They are
//! computed once and shared: the values are exactly what signing each request would produce,
//! and a busy tenant's requests skip the HMAC, the hex, the timestamp's digits and their four
//! allocations.

use hyper::Method;
use hyper::body::Bytes;
use hyper::header::HeaderValue;
use std::sync::Mutex;
use tenantscale_core::auth::Signer;

/// `X-Tenantscale-Timestamp` and `X-Tenantscale-Signature` for one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SigningHeaders {
    pub timestamp: HeaderValue,
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
    path: Box<str>,
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

    /// The signing headers for tenant number `tenant` on `METHOD path` at `second` (Unix time).
    pub fn headers(
        &self,
        tenant: usize,
        method: &Method,
        path: &str,
        second: i64,
    ) -> SigningHeaders {
        let mut last = self.last[tenant].lock().expect("signature lock");
        if let Some(s) = &*last
            && s.second == second
            && s.method == *method
            && *s.path == *path
        {
            return s.headers.clone();
        }
        let signature = self
            .signer
            .sign(&self.ids[tenant], method.as_str(), path, second);
        let headers = SigningHeaders {
            timestamp: HeaderValue::from(second),
            signature: HeaderValue::from_maybe_shared(Bytes::from(signature))
                .expect("hex is a header value"),
        };
        *last = Some(Signed {
            second,
            method: method.clone(),
            path: path.into(),
            headers: headers.clone(),
        });
        headers
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SECRET: &[u8] = b"test-secret-0123456789abcdef";

    fn fresh(id: &str, method: &Method, path: &str, second: i64) -> SigningHeaders {
        SigningHeaders {
            timestamp: HeaderValue::from(second),
            signature: HeaderValue::try_from(tenantscale_core::auth::sign(
                SECRET,
                id,
                method.as_str(),
                path,
                second,
            ))
            .unwrap(),
        }
    }

    proptest! {
        /// Whatever came before (same or other tenants, methods, paths, seconds), the headers
        /// are the ones signing this request alone would give.
        #[test]
        fn every_answer_is_the_fresh_signature(
            requests in prop::collection::vec(
                (0usize..3, prop::bool::ANY, prop::sample::select(vec!["/v1/query", "/v1/documents", "/query"]), 1_700_000_000i64..1_700_000_003),
                1..60,
            )
        ) {
            let ids = ["media-1", "finance-2", "retail-3"];
            let signatures =
                Signatures::new(Signer::new(SECRET), ids.iter().map(|id| id.to_string()).collect());
            for (tenant, post, path, second) in requests {
                let method = if post { Method::POST } else { Method::GET };
                prop_assert_eq!(
                    signatures.headers(tenant, &method, path, second),
                    fresh(ids[tenant], &method, path, second)
                );
            }
        }
    }
}
