//! Which protocol a client connection speaks, from its first bytes: HTTP/2 with prior
//! knowledge (h2c) opens with a fixed preface, HTTP/1.1 with a request line.
//!
//! The bytes are peeked, not read, so the chosen protocol's connection reads them itself.
//! hyper-util's `auto` builder instead reads them and replays them through a `Rewind` wrapper
//! that stays in every later read of the connection; it is kept for the rare connection whose
//! first segment is too short to tell.

use tokio::net::TcpStream;

/// RFC 9113 §3.4.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

#[derive(Debug, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    Http2,
    /// The bytes so far begin the HTTP/2 preface but do not complete it.
    Unsure,
}

/// The protocol of `stream`'s first bytes, once some have arrived; `None` if the client closed
/// without sending any.
pub async fn sniff(stream: &TcpStream) -> std::io::Result<Option<Protocol>> {
    let mut first = [0; PREFACE.len()];
    let n = stream.peek(&mut first).await?;
    Ok(match n {
        0 => None,
        n if first[..n] != PREFACE[..n] => Some(Protocol::Http1),
        n if n == PREFACE.len() => Some(Protocol::Http2),
        _ => Some(Protocol::Unsure),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// What `sniff` says of a connection whose client sent `bytes` and closed.
    async fn sniffed(bytes: &[u8]) -> Option<Protocol> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        client.write_all(bytes).await.unwrap();
        client.shutdown().await.unwrap();
        let protocol = sniff(&server).await.unwrap();
        // Peeked, not read: all of it is still there for the protocol chosen.
        let mut again = vec![0; bytes.len() + 1];
        assert_eq!(server.peek(&mut again).await.unwrap(), bytes.len());
        protocol
    }

    #[tokio::test]
    async fn the_first_bytes_tell_the_protocol() {
        let h2 = [PREFACE, b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"].concat();
        assert_eq!(sniffed(&h2).await, Some(Protocol::Http2));
        assert_eq!(sniffed(PREFACE).await, Some(Protocol::Http2));
        assert_eq!(
            sniffed(b"POST /v1/query HTTP/1.1\r\n").await,
            Some(Protocol::Http1)
        );
        assert_eq!(sniffed(b"PRI * HTTP/1.1\r\n").await, Some(Protocol::Http1));
        assert_eq!(sniffed(b"P").await, Some(Protocol::Unsure));
        assert_eq!(sniffed(&PREFACE[..23]).await, Some(Protocol::Unsure));
        assert_eq!(sniffed(b"").await, None);
    }
}
