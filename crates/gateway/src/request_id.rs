//! A request's id: the client's `X-Request-Id` when it is a sane token, else one made here.
//! It goes to the pod with the request, and back to the client on every error answer (the
//! gateway's own and a pod's), where the log line of a failure names it beside what the
//! client is not told (a pod's address).
//!
//! A made id is this gateway's random prefix and a per-thread counter, in hex: no system call
//! and no shared atomic per request.

use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use std::cell::Cell;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A client's id may be this long.
const MAX_LEN: usize = 128;
/// A made id: 16 hex digits of prefix, `-`, 16 of counter.
const MADE_LEN: usize = 33;

pub enum RequestId {
    /// The client's own (visible ASCII, at most [`MAX_LEN`] bytes).
    Client(HeaderValue),
    Made([u8; MADE_LEN]),
}

impl RequestId {
    /// The client's id if it sent a sane one, else a new one.
    pub fn of(headers: &HeaderMap) -> Self {
        match headers.get(&X_REQUEST_ID) {
            Some(v) if sane(v.as_bytes()) => Self::Client(v.clone()),
            _ => Self::made(),
        }
    }

    fn made() -> Self {
        static PREFIX: OnceLock<u64> = OnceLock::new();
        let prefix = *PREFIX.get_or_init(|| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            // Distinct per process even for two started in one clock tick.
            nanos ^ (u64::from(std::process::id()) << 32)
        });
        let mut id = [b'-'; MADE_LEN];
        hex(prefix, &mut id[..16]);
        hex(next(), &mut id[17..]);
        Self::Made(id)
    }

    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Client(v) => v.as_bytes(),
            Self::Made(id) => id,
        }
    }

    /// As text (both kinds are visible ASCII).
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }

    /// As a header value, for an answer (the rare path: it copies a made id).
    pub fn header_value(&self) -> HeaderValue {
        match self {
            Self::Client(v) => v.clone(),
            Self::Made(id) => HeaderValue::from_bytes(id).expect("hex and '-'"),
        }
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a client's id can be passed on and logged as it is: 1 to [`MAX_LEN`] visible ASCII
/// bytes (no spaces, no control bytes that could forge a log line).
fn sane(id: &[u8]) -> bool {
    (1..=MAX_LEN).contains(&id.len()) && id.iter().all(u8::is_ascii_graphic)
}

/// The next counter value of this thread: blocks of 2^32 values taken from one shared
/// counter, so that threads never hand out the same value.
fn next() -> u64 {
    static BLOCKS: AtomicU64 = AtomicU64::new(0);
    thread_local! {
        static NEXT: Cell<u64> = const { Cell::new(0) };
    }
    NEXT.with(|next| {
        let mut n = next.get();
        if n & 0xffff_ffff == 0 {
            n = (BLOCKS.fetch_add(1, Ordering::Relaxed) << 32) | 1;
        }
        next.set(n + 1);
        n
    })
}

/// `value` as lowercase hex filling `out` (16 bytes).
fn hex(value: u64, out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in out.iter_mut().enumerate() {
        *b = DIGITS[(value >> (60 - 4 * i)) as usize & 0xf];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(id: &[u8]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(X_REQUEST_ID, HeaderValue::from_bytes(id).unwrap());
        headers
    }

    #[test]
    fn a_sane_client_id_is_kept_and_anything_else_replaced() {
        assert_eq!(RequestId::of(&with(b"abc-123_X.y")).as_str(), "abc-123_X.y");
        let long = vec![b'a'; MAX_LEN];
        assert_eq!(RequestId::of(&with(&long)).as_bytes(), &long[..]);
        for bad in [
            &b"has space"[..],
            b"tab\there",
            &[b'a'; MAX_LEN + 1],
            b"caf\xc3\xa9",
        ] {
            let id = RequestId::of(&with(bad));
            assert!(matches!(id, RequestId::Made(_)), "{bad:?} kept");
        }
    }

    #[test]
    fn made_ids_are_distinct_visible_and_share_the_gateways_prefix() {
        let ids: Vec<String> = (0..1000)
            .map(|_| RequestId::of(&HeaderMap::new()).to_string())
            .chain(
                std::thread::spawn(|| RequestId::of(&HeaderMap::new()).to_string())
                    .join()
                    .ok(),
            )
            .collect();
        let distinct: std::collections::HashSet<&String> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
        for id in &ids {
            assert_eq!(id.len(), MADE_LEN);
            assert!(sane(id.as_bytes()), "{id}");
            assert_eq!(id[..17], ids[0][..17], "one prefix");
            RequestId::of(&HeaderMap::new()).header_value();
        }
    }
}
