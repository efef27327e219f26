//! Bounds on `multipart/form-data` imports (sidecar): the parser buffers a part's
//! headers until their blank line, and drains fields nobody reads, so both are bounded
//! here, in the body stream it reads from: the parser gets at most [`BURST`] bytes at a
//! time, and while it looks for the next part at most [`MAX_BETWEEN_PARTS`] may pass.
//! Part data is bounded by the upload budget and the part count by the caller.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use crate::error::ApiError;

/// Bytes the parser may read while it looks for the next part: the boundary, the part's
/// headers, and whatever is left of a field that is skipped.
pub const MAX_BETWEEN_PARTS: u64 = 256 * 1024;
/// The stream is cut into pieces this small, so the count is exact within one piece.
const PIECE: usize = 8 * 1024;

/// Watches a body stream on behalf of the code that drives the multipart parser.
#[derive(Clone, Debug, Default)]
pub struct PartWatch(Arc<State>);

#[derive(Debug, Default)]
struct State {
    between_parts: AtomicBool,
    read: AtomicU64,
    tripped: AtomicBool,
}

impl PartWatch {
    /// The parser is about to look for the next part.
    pub fn between_parts(&self) {
        self.0.read.store(0, Ordering::Release);
        self.0.between_parts.store(true, Ordering::Release);
    }

    /// The parser found a part (or the end): its data is read under the upload budget.
    pub fn in_part(&self) {
        self.0.between_parts.store(false, Ordering::Release);
    }

    /// The refusal to give for a parser error: 413 when the stream was cut because part
    /// headers ran over the limit, else `parse_error`.
    pub fn refusal(&self, parse_error: impl std::fmt::Display) -> ApiError {
        if self.0.tripped.load(Ordering::Acquire) {
            ApiError::too_large(format!("multipart part headers (and skipped fields) are limited to {MAX_BETWEEN_PARTS} bytes"))
        } else {
            ApiError::bad_request("invalid_multipart", parse_error.to_string())
        }
    }

    /// `body`, cut into small pieces and handed over at most [`BURST`] bytes per poll
    /// (the parser reads whatever is ready into its buffer, so readiness is what bounds
    /// it), failing once more than [`MAX_BETWEEN_PARTS`] bytes are read between two parts.
    pub fn watch<S, E>(&self, body: S) -> Watched
    where
        S: Stream<Item = Result<Bytes, E>> + Send + 'static,
        E: std::fmt::Display,
    {
        let pieces = body.flat_map(|chunk| {
            let pieces: Vec<Result<Bytes, std::io::Error>> = match chunk {
                Ok(mut bytes) => {
                    let mut pieces = Vec::with_capacity(bytes.len() / PIECE + 1);
                    while bytes.len() > PIECE {
                        pieces.push(Ok(bytes.split_to(PIECE)));
                    }
                    if !bytes.is_empty() {
                        pieces.push(Ok(bytes));
                    }
                    pieces
                }
                Err(e) => vec![Err(std::io::Error::other(e.to_string()))],
            };
            futures_util::stream::iter(pieces)
        });
        Watched { inner: Box::pin(pieces), state: self.0.clone(), burst: 0 }
    }
}

/// At most this many bytes are handed to the parser in one go.
pub const BURST: usize = 32 * 1024;

/// A body stream under a [`PartWatch`].
pub struct Watched {
    inner: Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send>>,
    state: Arc<State>,
    /// Bytes handed over since the stream last answered `Pending`.
    burst: usize,
}

impl std::fmt::Debug for Watched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watched").field("burst", &self.burst).finish_non_exhaustive()
    }
}

impl Stream for Watched {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.burst >= BURST {
            // Let the parser work through what it has before it reads more.
            self.burst = 0;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let piece = match self.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(piece))) => piece,
            other => {
                self.burst = 0;
                return other;
            }
        };
        self.burst += piece.len();
        if self.state.between_parts.load(Ordering::Acquire) {
            let read = self.state.read.fetch_add(piece.len() as u64, Ordering::AcqRel) + piece.len() as u64;
            if read > MAX_BETWEEN_PARTS {
                self.state.tripped.store(true, Ordering::Release);
                return Poll::Ready(Some(Err(std::io::Error::other("multipart part headers too large"))));
            }
        }
        Poll::Ready(Some(Ok(piece)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parts(body: Vec<u8>, max_parts: usize) -> Result<Vec<(Option<String>, usize)>, ApiError> {
        let watch = PartWatch::default();
        let stream = futures_util::stream::iter(
            body.chunks(100_000).map(|c| Ok::<_, std::io::Error>(Bytes::copy_from_slice(c))).collect::<Vec<_>>(),
        );
        let mut form = multer::Multipart::new(watch.watch(stream), "B");
        let mut out = Vec::new();
        loop {
            watch.between_parts();
            let next = form.next_field().await;
            watch.in_part();
            let Some(mut field) = next.map_err(|e| watch.refusal(e))? else { break };
            if out.len() == max_parts {
                return Err(ApiError::too_large("parts"));
            }
            let name = field.file_name().map(str::to_string);
            let mut n = 0;
            if name.is_some() {
                while let Some(c) = field.chunk().await.map_err(|e| watch.refusal(e))? {
                    n += c.len();
                }
            }
            out.push((name, n));
        }
        Ok(out)
    }

    fn part(headers: &str, data: &[u8]) -> Vec<u8> {
        let mut v = format!("--B\r\nContent-Disposition: form-data; name=\"files\"; filename=\"a.dcm\"\r\n{headers}\r\n").into_bytes();
        v.extend_from_slice(data);
        v.extend_from_slice(b"\r\n");
        v
    }

    #[tokio::test]
    async fn large_parts_pass_and_large_headers_do_not() {
        let mut body = part("", &vec![7u8; 3 << 20]);
        body.extend(part("X-Small: yes\r\n", b"abc"));
        body.extend_from_slice(b"--B--\r\n");
        assert_eq!(parts(body, 10).await.expect("valid form"), vec![(Some("a.dcm".into()), 3 << 20), (Some("a.dcm".into()), 3)]);

        let mut body = part(&format!("X-Junk: {}\r\n", "j".repeat(300_000)), b"abc");
        body.extend_from_slice(b"--B--\r\n");
        let e = parts(body, 10).await.expect_err("huge headers");
        assert_eq!((e.status.as_u16(), e.code), (413, "too_large"));

        // A skipped (non-file) field is drained under the same bound.
        let mut body = b"--B\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\n".to_vec();
        body.extend(vec![b'n'; 600_000]);
        body.extend_from_slice(b"\r\n--B--\r\n");
        let e = parts(body, 10).await.expect_err("huge skipped field");
        assert_eq!((e.status.as_u16(), e.code), (413, "too_large"));
    }
}
