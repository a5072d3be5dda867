//! A body for tests: the given frames, one per poll, and no declared length (so hyper sends it
//! chunked).

use hyper::body::{Body, Bytes, Frame};
use hyper::header::HeaderMap;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

pub struct Frames(VecDeque<Frame<Bytes>>);

impl Frames {
    /// A data frame per part, then a trailers frame if `trailers`.
    pub fn new(parts: &[&'static str], trailers: bool) -> Self {
        let mut frames: VecDeque<_> = parts
            .iter()
            .map(|p| Frame::data(Bytes::from_static(p.as_bytes())))
            .collect();
        if trailers {
            frames.push_back(Frame::trailers(HeaderMap::new()));
        }
        Self(frames)
    }
}

impl Body for Frames {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.get_mut().0.pop_front().map(Ok))
    }
}
