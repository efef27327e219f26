//! The sidecar's own accept loop: hyper with the limits `axum::serve` does not expose
//! (DESIGN.md §6, issue 8). The plugin needs none of this: Orthanc owns its sockets.
//!
//! - Request heads are bounded ([`MAX_HEAD_BYTES`]): beyond, 431 `headers_too_large`
//!   (hyper's own bare 431 when its buffer overflows first, or past 100 headers).
//! - A head must arrive within `RequestTimeoutSeconds`, or the connection is closed.
//! - A body must keep coming: nothing for a third of `RequestTimeoutSeconds` (at most
//!   [`MAX_BODY_IDLE`]), or less than [`MIN_BODY_BYTES_PER_SECOND`] on average over the
//!   time spent waiting for it, and the request is answered 408 `request_timeout`.
//! - A request must have its answer within `RequestTimeoutSeconds` (408), except
//!   imports, whose length is bounded by `MaxUploadBytes` and the minimum rate instead.
//!   Streamed answers (exports, images) only need to *start* within it.
//!
//! Stopping ([`serve`]'s `shutdown`): the listener is closed at once (new connections are
//! refused), every connection is asked to finish its request in flight and close, and
//! they get `ShutdownDrainSeconds` to do so. Then the `abort` callback runs (the core
//! cuts its imports, recording how far they got) and the connections get
//! [`ABORT_GRACE`] more before the process ends whatever is left.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use cohort_core::api::Api;
use cohort_core::error::ApiError;
use cohort_core::ClientAddr;
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioIo, TokioTimer};

/// The largest request head (request line and headers) hyper buffers.
pub const MAX_HEAD_BYTES: usize = 32 << 10;
/// A body that stays silent this long (while the server waits for it) is cut.
pub const MAX_BODY_IDLE: Duration = Duration::from_secs(10);
/// The slowest a body may arrive on average, counted over the time spent waiting for
/// it, once that time passes [`MAX_BODY_IDLE`].
pub const MIN_BODY_BYTES_PER_SECOND: u64 = 1024;

/// After the drain deadline, how long the requests still in flight get to wind down
/// once told to stop (an import records how far it got) before they are dropped.
pub const ABORT_GRACE: Duration = Duration::from_secs(5);

/// The limits of one server.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub request_timeout: Duration,
    pub body_idle: Duration,
}

impl Limits {
    pub fn new(request_timeout: Duration) -> Limits {
        Limits { request_timeout, body_idle: (request_timeout / 3).min(MAX_BODY_IDLE) }
    }
}

/// Accepts connections until `shutdown` resolves, serving each with `api`; then
/// drains them (see the module's documentation): at most `drain`, then `abort()`, then
/// at most [`ABORT_GRACE`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    api: Api,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
    abort: impl FnOnce(),
) {
    let mut shutdown = std::pin::pin!(shutdown);
    // Each connection holds a receiver: `stop` tells them to finish, and `stop.closed()`
    // resolves when the last one is gone.
    let (stop, stopping) = tokio::sync::watch::channel(false);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    tracing::warn!(error = %e, "could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Answers go out in several writes (headers, streamed bodies): without
        // TCP_NODELAY, Nagle's algorithm and delayed ACKs add ~40 ms to small answers.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!(error = %e, "could not set TCP_NODELAY");
        }
        tokio::spawn(serve_connection(tcp, peer, api.clone(), limits, stopping.clone()));
    }
    drop(listener);
    drop(stopping);
    let in_flight = stop.receiver_count();
    tracing::info!(connections = in_flight, drain_deadline_s = drain.as_secs(), "stopping: no new connections; draining");
    stop.send_replace(true);
    if tokio::time::timeout(drain, stop.closed()).await.is_ok() {
        tracing::info!("drained: every connection finished");
        return;
    }
    tracing::warn!(
        connections = stop.receiver_count(),
        "the drain deadline passed with requests in flight; cutting them (imports record how far they got)"
    );
    abort();
    if tokio::time::timeout(ABORT_GRACE, stop.closed()).await.is_err() {
        tracing::warn!(connections = stop.receiver_count(), "connections still open after the grace period are dropped");
    }
}

/// Resolves once the server is stopping (or gone).
async fn stopped(stopping: &mut tokio::sync::watch::Receiver<bool>) {
    // The guard `wait_for` returns must not live across an await: drop it here.
    let _ = stopping.wait_for(|stop| *stop).await.map(|_| ());
}

async fn serve_connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    api: Api,
    limits: Limits,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) {
    let service = hyper::service::service_fn(move |req: axum::http::Request<Incoming>| {
        let api = api.clone();
        async move { Ok::<_, Infallible>(handle(api, req, peer, limits).await) }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.request_timeout)
        // Twice the head limit: heads up to it are measured exactly in `handle`; beyond,
        // hyper refuses them itself before buffering more.
        .max_buf_size(2 * MAX_HEAD_BYTES)
        .serve_connection(TokioIo::new(tcp), service);
    let mut connection = std::pin::pin!(connection);
    let ended = tokio::select! {
        ended = connection.as_mut() => ended,
        () = stopped(&mut stopping) => {
            // Finish the request in flight (if any), then close.
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = ended {
        tracing::debug!(error = %e, %peer, "connection ended with an error");
    }
}

/// The size of a request head as sent (request line and headers, roughly).
fn head_bytes(req: &axum::http::Request<Incoming>) -> usize {
    let line = req.method().as_str().len() + req.uri().path_and_query().map_or(1, |p| p.as_str().len()) + 12;
    line + req.headers().iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum::<usize>()
}

async fn handle(api: Api, req: axum::http::Request<Incoming>, peer: SocketAddr, limits: Limits) -> Response {
    // hyper's buffer limit bounds memory but not exactly the head (one read may bring
    // more): the head's size is checked here, before any work.
    if head_bytes(&req) > MAX_HEAD_BYTES {
        let mut resp = ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!("request heads are limited to {MAX_HEAD_BYTES} bytes"),
        )
        .into_response();
        resp.headers_mut().insert(axum::http::header::CONNECTION, axum::http::HeaderValue::from_static("close"));
        return resp;
    }
    let stalled = Arc::new(AtomicBool::new(false));
    let bounded = req.method() != Method::POST || req.uri().path() != "/api/patients/import";
    let mut req = req.map(|body| Body::new(MinRate::new(body, limits.body_idle, stalled.clone())));
    req.extensions_mut().insert(ClientAddr(peer.ip()));
    let answer = api.call(req);
    let resp = if bounded {
        match tokio::time::timeout(limits.request_timeout, answer).await {
            Ok(resp) => resp,
            Err(_) => return timeout(format!("the request took longer than {} s", limits.request_timeout.as_secs())),
        }
    } else {
        answer.await
    };
    if stalled.load(Ordering::Acquire) {
        return timeout("the request body arrived too slowly".to_string());
    }
    resp
}

fn timeout(message: String) -> Response {
    let mut resp = ApiError::new(StatusCode::REQUEST_TIMEOUT, "request_timeout", message).into_response();
    // The rest of the request will not be read.
    resp.headers_mut().insert(axum::http::header::CONNECTION, axum::http::HeaderValue::from_static("close"));
    resp
}

/// Why a body was cut.
#[derive(Debug)]
pub struct BodyTooSlow;

impl std::fmt::Display for BodyTooSlow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the request body arrived too slowly")
    }
}

impl std::error::Error for BodyTooSlow {}

/// A request body that must keep a minimum rate while the server waits for it. Time the
/// handler spends elsewhere (not polling) does not count against the client.
struct MinRate {
    inner: Incoming,
    idle: Duration,
    stalled: Arc<AtomicBool>,
    bytes: u64,
    waited: Duration,
    waiting_since: Option<Instant>,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl MinRate {
    fn new(inner: Incoming, idle: Duration, stalled: Arc<AtomicBool>) -> MinRate {
        MinRate { inner, idle, stalled, bytes: 0, waited: Duration::ZERO, waiting_since: None, deadline: None }
    }

    fn too_slow(&mut self) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.stalled.store(true, Ordering::Release);
        self.deadline = None;
        Poll::Ready(Some(Err(Box::new(BodyTooSlow))))
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl hyper::body::Body for MinRate {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.stalled.load(Ordering::Acquire) {
            return Poll::Ready(Some(Err(Box::new(BodyTooSlow))));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                if let Some(since) = this.waiting_since.take() {
                    this.waited += since.elapsed();
                }
                this.deadline = None;
                if let Some(Ok(f)) = &frame {
                    if let Some(data) = f.data_ref() {
                        this.bytes += data.len() as u64;
                    }
                }
                let expected = MIN_BODY_BYTES_PER_SECOND.saturating_mul(this.waited.as_secs());
                if this.waited > this.idle && this.bytes < expected && frame.as_ref().is_some_and(|f| f.is_ok()) {
                    return this.too_slow();
                }
                Poll::Ready(frame.map(|f| f.map_err(|e| Box::new(e) as BoxError)))
            }
            Poll::Pending => {
                if this.waiting_since.is_none() {
                    this.waiting_since = Some(Instant::now());
                    this.deadline = Some(Box::pin(tokio::time::sleep(this.idle)));
                }
                if let Some(deadline) = this.deadline.as_mut() {
                    if deadline.as_mut().poll(cx).is_ready() {
                        return this.too_slow();
                    }
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}
