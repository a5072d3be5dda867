//! Where an answer's body ends (RFC 9112 §6-7): after its stated length, after its last
//! chunk, or at the end of the connection. A decoder over the bytes read so far, with no I/O,
//! so that any way the bytes are split into reads can be tested.

use bytes::{Buf, Bytes, BytesMut};
use std::io;

/// A chunk-size line (with its extensions) or a trailer line may be this long.
const MAX_LINE: usize = 4096;
/// A chunked body may end with this many trailer lines (they are read and dropped: the
/// gateway passes no trailers on).
const MAX_TRAILERS: usize = 100;

/// The rest of a body.
#[derive(Debug, PartialEq)]
pub enum Framing {
    /// This many bytes.
    Length(u64),
    Chunked(Chunk),
    /// Everything until the pod closes the connection.
    UntilClose,
}

/// Where a chunked body is.
#[derive(Debug, PartialEq)]
pub enum Chunk {
    /// Before a chunk-size line.
    Size,
    /// Inside a chunk's data, with this many bytes to go.
    Data(u64),
    /// Before the CRLF that ends a chunk's data.
    DataEnd,
    /// After the last chunk, having read this many trailer lines.
    Trailers(usize),
    Done,
}

/// What the front of the buffer holds.
#[derive(Debug, PartialEq)]
pub enum Piece {
    Data(Bytes),
    End,
}

impl Framing {
    pub fn chunked() -> Self {
        Self::Chunked(Chunk::Size)
    }

    /// Whether the whole body has been taken: the end needs no more bytes.
    pub fn is_done(&self) -> bool {
        matches!(self, Self::Length(0) | Self::Chunked(Chunk::Done))
    }

    /// Takes the next piece of the body off the front of `buf`, or `None` until more bytes
    /// arrive. Bytes after the body's end stay in `buf`.
    pub fn next(&mut self, buf: &mut BytesMut) -> io::Result<Option<Piece>> {
        match self {
            Self::Length(0) => Ok(Some(Piece::End)),
            Self::Length(left) => Ok(take(left, buf)),
            Self::UntilClose if buf.is_empty() => Ok(None),
            Self::UntilClose => Ok(Some(Piece::Data(buf.split().freeze()))),
            Self::Chunked(chunk) => chunk.next(buf),
        }
    }
}

impl Chunk {
    fn next(&mut self, buf: &mut BytesMut) -> io::Result<Option<Piece>> {
        loop {
            match self {
                Self::Size => {
                    let Some(len) = line(buf)? else {
                        return Ok(None);
                    };
                    let size = chunk_size(&buf[..len])?;
                    buf.advance(len + 2);
                    *self = if size == 0 {
                        Self::Trailers(0)
                    } else {
                        Self::Data(size)
                    };
                }
                Self::Data(left) => {
                    let piece = take(left, buf);
                    if *left == 0 {
                        *self = Self::DataEnd;
                    }
                    return Ok(piece);
                }
                Self::DataEnd if buf.len() < 2 => return Ok(None),
                Self::DataEnd if &buf[..2] == b"\r\n" => {
                    buf.advance(2);
                    *self = Self::Size;
                }
                Self::DataEnd => return Err(invalid("a chunk's data does not end with CRLF")),
                Self::Trailers(lines) => {
                    let Some(len) = line(buf)? else {
                        return Ok(None);
                    };
                    buf.advance(len + 2);
                    if len == 0 {
                        *self = Self::Done;
                        return Ok(Some(Piece::End));
                    }
                    *lines += 1;
                    if *lines > MAX_TRAILERS {
                        return Err(invalid("a chunked body has over 100 trailer lines"));
                    }
                }
                Self::Done => return Ok(Some(Piece::End)),
            }
        }
    }
}

/// Up to `left` bytes off the front of `buf`, if it has any.
fn take(left: &mut u64, buf: &mut BytesMut) -> Option<Piece> {
    if buf.is_empty() {
        return None;
    }
    let n = (*left).min(buf.len() as u64);
    *left -= n;
    Some(Piece::Data(buf.split_to(n as usize).freeze()))
}

/// The length of the CRLF-ended line at the front of `buf` (without its CRLF), or `None`
/// until all of it has arrived.
fn line(buf: &[u8]) -> io::Result<Option<usize>> {
    let searched = &buf[..buf.len().min(MAX_LINE + 2)];
    match searched.iter().position(|&b| b == b'\n') {
        Some(end) if end > 0 && buf[end - 1] == b'\r' => Ok(Some(end - 1)),
        Some(_) => Err(invalid("a chunked body's line does not end with CRLF")),
        None if searched.len() > MAX_LINE + 1 => {
            Err(invalid("a chunked body's line is over 4096 bytes"))
        }
        None => Ok(None),
    }
}

/// A chunk-size line's size: 1 to 16 hex digits, then nothing or extensions (dropped).
fn chunk_size(line: &[u8]) -> io::Result<u64> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    let extension = matches!(line.get(digits), None | Some(b';' | b' ' | b'\t'));
    if digits == 0 || digits > 16 || !extension {
        return Err(invalid("a chunk's size is not 1 to 16 hex digits"));
    }
    // Hex digits are ASCII, and 16 of them fit in a u64.
    std::str::from_utf8(&line[..digits])
        .ok()
        .and_then(|hex| u64::from_str_radix(hex, 16).ok())
        .ok_or_else(|| invalid("a chunk's size is not 1 to 16 hex digits"))
}

fn invalid(message: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Feeds `wire` to a decoder in the given pieces; returns the body, whether it ended, and
    /// what was left in the buffer after its end.
    fn decode(
        mut framing: Framing,
        wire: &[u8],
        cuts: &[usize],
    ) -> io::Result<(Vec<u8>, bool, Vec<u8>)> {
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
        cuts.push(wire.len());
        cuts.sort_unstable();
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        let mut fed = 0;
        for cut in cuts {
            buf.extend_from_slice(&wire[fed..cut]);
            fed = cut;
            while let Some(piece) = framing.next(&mut buf)? {
                match piece {
                    Piece::Data(data) => {
                        assert!(!data.is_empty(), "an empty data piece");
                        body.extend_from_slice(&data);
                    }
                    Piece::End => {
                        buf.extend_from_slice(&wire[fed..]);
                        return Ok((body, true, buf.to_vec()));
                    }
                }
            }
        }
        Ok((body, false, buf.to_vec()))
    }

    fn chunked(chunks: &[Vec<u8>], trailers: &[&str]) -> Vec<u8> {
        let mut wire = Vec::new();
        for chunk in chunks.iter().filter(|c| !c.is_empty()) {
            wire.extend_from_slice(format!("{:x};ext=1\r\n", chunk.len()).as_bytes());
            wire.extend_from_slice(chunk);
            wire.extend_from_slice(b"\r\n");
        }
        wire.extend_from_slice(b"0\r\n");
        for trailer in trailers {
            wire.extend_from_slice(trailer.as_bytes());
            wire.extend_from_slice(b"\r\n");
        }
        wire.extend_from_slice(b"\r\n");
        wire
    }

    const NEXT: &[u8] = b"HTTP/1.1 200 OK\r\n";

    proptest! {
        #[test]
        fn a_chunked_body_decodes_whole_however_it_is_read(
            chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 0..6),
            trailers in prop::sample::subsequence(vec!["x-a: 1", "x-b: two"], 0..=2),
            cuts in prop::collection::vec(any::<usize>(), 0..8),
        ) {
            let mut wire = chunked(&chunks, &trailers);
            wire.extend_from_slice(NEXT);
            let (body, ended, rest) = decode(Framing::chunked(), &wire, &cuts).unwrap();
            prop_assert_eq!(body, chunks.concat());
            prop_assert!(ended);
            prop_assert_eq!(rest, NEXT, "the bytes after the body are left");
        }

        #[test]
        fn a_body_of_stated_length_decodes_whole_however_it_is_read(
            data in prop::collection::vec(any::<u8>(), 0..200),
            cuts in prop::collection::vec(any::<usize>(), 0..8),
        ) {
            let mut wire = data.clone();
            wire.extend_from_slice(NEXT);
            let framing = Framing::Length(data.len() as u64);
            let (body, ended, rest) = decode(framing, &wire, &cuts).unwrap();
            prop_assert_eq!(body, data);
            prop_assert!(ended);
            prop_assert_eq!(rest, NEXT);
        }

        /// A pod's bytes, whatever they are: an error or a body, never a panic or a loop.
        #[test]
        fn any_bytes_decode_or_fail_cleanly(
            wire in prop::collection::vec(
                prop_oneof![
                    any::<u8>(),
                    prop::sample::select(b"0123456789abcdefABCDEF;\r\n \t".to_vec()),
                ],
                0..300,
            ),
            framing in 0..3u8,
            length in 0..400u64,
            cuts in prop::collection::vec(any::<usize>(), 0..8),
        ) {
            let framing = match framing {
                0 => Framing::chunked(),
                1 => Framing::Length(length),
                _ => Framing::UntilClose,
            };
            if let Ok((body, ended, rest)) = decode(framing, &wire, &cuts) {
                prop_assert!(body.len() + rest.len() <= wire.len(), "{} {} {}", body.len(), rest.len(), ended);
            }
        }

        #[test]
        fn a_truncated_chunked_body_never_ends(
            chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..40), 1..4),
            cut in any::<usize>(),
        ) {
            let wire = chunked(&chunks, &[]);
            let cut = cut % wire.len();
            let (body, ended, _) = decode(Framing::chunked(), &wire[..cut], &[]).unwrap();
            prop_assert!(!ended);
            prop_assert!(chunks.concat().starts_with(&body));
        }
    }

    #[test]
    fn malformed_chunked_bodies_are_errors() {
        for wire in [
            &b"x\r\n"[..],
            b"\r\n",
            b"5\n",
            b"12345678901234567\r\n",
            b"3\r\nabcXY",
            b"3.5\r\n",
            b"0\r\nx-a: 1\n",
        ] {
            let got = decode(Framing::chunked(), wire, &[]);
            assert!(
                got.is_err(),
                "{:?} gave {got:?}",
                String::from_utf8_lossy(wire)
            );
        }
        let long = [b'a'; MAX_LINE + 2];
        assert!(
            decode(Framing::chunked(), &long, &[]).is_err(),
            "an endless size line"
        );
        let mut trailers = b"0\r\n".to_vec();
        for _ in 0..=MAX_TRAILERS {
            trailers.extend_from_slice(b"x-a: 1\r\n");
        }
        assert!(
            decode(Framing::chunked(), &trailers, &[]).is_err(),
            "endless trailers"
        );
    }

    #[test]
    fn a_long_line_is_accepted_up_to_the_limit() {
        let mut wire = b"1;".to_vec();
        wire.resize(MAX_LINE, b'x');
        wire.extend_from_slice(b"\r\na\r\n0\r\n\r\n");
        let (body, ended, _) = decode(Framing::chunked(), &wire, &[]).unwrap();
        assert_eq!((body, ended), (b"a".to_vec(), true));
    }

    #[test]
    fn a_body_until_close_takes_everything_and_never_ends_by_itself() {
        let (body, ended, _) = decode(Framing::UntilClose, b"abc", &[1]).unwrap();
        assert_eq!((body, ended), (b"abc".to_vec(), false));
    }
}
