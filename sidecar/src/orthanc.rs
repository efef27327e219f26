//! The sidecar's way to Orthanc: its REST API over HTTP. The REST knowledge itself is in
//! `cohort_core::pacs::OrthancPacs`; this is only the transport.
//!
//! Connections to Orthanc are bounded. Orthanc serves HTTP from a fixed pool of threads
//! (`HttpThreadsCount`, 50 by default), each kept by one connection for as long as that
//! connection lives; a sidecar that opened one connection per request in flight (as it
//! did) filled Orthanc's accept backlog under 200 clients, and its requests then failed at
//! connect. `OrthancConnections` (default 32) bounds the sidecar's connections to Orthanc,
//! busy or idle: a quarter may stay open idle, and every request first takes a place
//! among the rest (24 by default); a streamed read (a file sent on at the reader's pace)
//! also takes one of three quarters of those first, so slow readers of exports and images
//! can never hold every place and stall the calls that need Orthanc briefly (imports,
//! metadata, previews).
//!
//! With `OrthancStorageDirectory` set, an instance file Orthanc stored uncompressed is read
//! in that directory instead ([`StoredFiles`]): the HTTP hop to Orthanc was most of the
//! sidecar's cost per image. What the file is (its attachment's uuid and size) is asked of
//! Orthanc once per instance; anything unexpected (a compressed attachment, a missing or
//! resized file, a directory the sidecar cannot read) falls back to HTTP.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use cohort_core::app::TtlCache;
use cohort_core::pacs::{ByteStream, DicomFile, PacsError, PacsResult, Transport};
use cohort_core::Config;
use futures_util::{Stream, TryStreamExt};
use serde::Deserialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Orthanc's REST API at a base URL, with optional Basic credentials.
#[derive(Clone, Debug)]
pub struct OrthancHttp {
    base: String,
    client: reqwest::Client,
    credentials: Option<(String, String)>,
    /// Places for requests in flight to Orthanc (`OrthancConnections` less the idle ones).
    calls: Arc<Semaphore>,
    /// Places for streamed reads, three quarters of `calls`, taken before one of those.
    streams: Arc<Semaphore>,
    connections: usize,
    /// Orthanc's storage directory, when configured.
    stored: Option<Arc<StoredFiles>>,
}

/// Instance files read in Orthanc's storage directory (`OrthancStorageDirectory`).
/// Orthanc's file storage keeps an attachment at `xx/yy/uuid` (the uuid's first two pairs
/// of characters); an instance's DICOM attachment never changes uuid while it exists.
#[derive(Debug)]
struct StoredFiles {
    root: std::path::PathBuf,
    /// Per Orthanc instance id: its DICOM attachment's uuid and size when stored
    /// uncompressed, `None` when not (then it is always read over HTTP).
    attachments: TtlCache<String, Option<(String, u64)>>,
}

/// How long an instance's attachment is remembered (a file gone is noticed at once).
const ATTACHMENT_TTL: Duration = Duration::from_secs(600);
/// Files up to this size are read in one call on the request's thread (from the page
/// cache, microseconds); larger ones are streamed from tokio's blocking pool.
const READ_IN_PLACE_MAX: u64 = 64 * 1024;
/// Chunks of a larger file.
const STORED_CHUNK: usize = 256 * 1024;

/// `GET /instances/{id}/attachments/dicom/info`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AttachmentInfo {
    uuid: String,
    compressed_size: u64,
    uncompressed_size: u64,
}

/// An attachment uuid as Orthanc makes them (8-4-4-4-12 lowercase hex): nothing else
/// may become a path.
fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
        })
}

impl StoredFiles {
    fn path(&self, uuid: &str) -> std::path::PathBuf {
        self.root.join(&uuid[0..2]).join(&uuid[2..4]).join(uuid)
    }

    /// The file of `uuid` if it is there with the expected size; `None` otherwise (the
    /// caller forgets the attachment and asks Orthanc).
    async fn read(&self, uuid: &str, size: u64) -> Option<DicomFile> {
        let path = self.path(uuid);
        if size <= READ_IN_PLACE_MAX {
            let bytes = match std::fs::read(&path) {
                Ok(b) => b,
                Err(e) => return unreadable(&path, &e),
            };
            if bytes.len() as u64 != size {
                return resized(&path, size, Some(bytes.len() as u64));
            }
            return Some(DicomFile::from_bytes(Bytes::from(bytes)));
        }
        let file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) => return unreadable(&path, &e),
        };
        match file.metadata().await.map(|m| m.len()) {
            Ok(found) if found == size => {}
            found => return resized(&path, size, found.ok()),
        }
        let body = tokio_util::io::ReaderStream::with_capacity(file, STORED_CHUNK)
            .map_err(|e| PacsError::Unavailable(format!("reading a file in Orthanc's storage: {e}")));
        Some(DicomFile { size: Some(size), body: Box::pin(body) })
    }
}

/// A stored file that cannot be read: read over HTTP (a missing one silently: deleted).
fn unreadable(path: &std::path::Path, e: &std::io::Error) -> Option<DicomFile> {
    if e.kind() != std::io::ErrorKind::NotFound {
        tracing::warn!(path = %path.display(), error = %e, "cannot read Orthanc's storage directory (OrthancStorageDirectory); read over HTTP");
    }
    None
}

/// A stored file of another size than Orthanc says (or of no size to be had): read over HTTP.
fn resized(path: &std::path::Path, expected: u64, found: Option<u64>) -> Option<DicomFile> {
    tracing::warn!(path = %path.display(), expected, found, "a stored file has another size than Orthanc says; read over HTTP");
    None
}

/// Requests other than file transfers must answer within this delay.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a request waits for a place before it is answered 503
/// `orthanc_unavailable` (Orthanc holds every place: hung, or far slower than the load).
const PLACE_WAIT: Duration = Duration::from_secs(10);

/// Of `OrthancConnections`, how many may stay open idle between requests (a quarter); the
/// rest are the places of requests in flight. A request may open a connection while one
/// just finished is being handed back, so in-flight and idle are bounded separately.
fn idle_connections(connections: usize) -> usize {
    (connections / 4).max(1)
}

/// The places a request holds while it talks to Orthanc.
#[derive(Debug)]
struct Places {
    _stream: Option<OwnedSemaphorePermit>,
    _call: OwnedSemaphorePermit,
}

impl OrthancHttp {
    pub fn new(config: &Config) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            // Orthanc closes a kept-alive connection after 1 s of silence (1.10.1's
            // KeepAliveTimeout default): a request sent on a connection idle that long can
            // meet the close and fail with "connection closed before message completed",
            // which is not retried for a POST. Idle connections are dropped first.
            .pool_idle_timeout(Duration::from_millis(500))
            // Idle connections hold Orthanc threads too: they count in `OrthancConnections`.
            .pool_max_idle_per_host(idle_connections(config.orthanc_connections as usize))
            .tcp_nodelay(true)
            .build()?;
        let credentials = config.orthanc_username.clone().zip(config.orthanc_password.clone());
        let connections = config.orthanc_connections as usize;
        let places = connections - idle_connections(connections);
        Ok(OrthancHttp {
            base: config.orthanc_url.trim_end_matches('/').to_string(),
            client,
            credentials,
            calls: Arc::new(Semaphore::new(places)),
            streams: Arc::new(Semaphore::new((places * 3 / 4).max(1))),
            connections,
            stored: config
                .orthanc_storage_directory
                .clone()
                .map(|root| Arc::new(StoredFiles { root, attachments: TtlCache::new(ATTACHMENT_TTL) })),
        })
    }

    /// An instance's file read in Orthanc's storage directory, or `None` to read it over
    /// HTTP (not configured, compressed, or not found there as Orthanc describes it).
    async fn stored_file(&self, instance_id: &str) -> PacsResult<Option<DicomFile>> {
        let Some(stored) = &self.stored else { return Ok(None) };
        let attachment = match stored.attachments.get(instance_id) {
            Some(a) => a,
            None => {
                let body = self.get(&format!("/instances/{instance_id}/attachments/dicom/info")).await?;
                let info: AttachmentInfo =
                    serde_json::from_slice(&body).map_err(|e| PacsError::Protocol(format!("attachment info of {instance_id}: {e}")))?;
                let plain = info.compressed_size == info.uncompressed_size && is_uuid(&info.uuid);
                let a = plain.then_some((info.uuid, info.uncompressed_size));
                stored.attachments.put(instance_id.to_string(), a.clone());
                a
            }
        };
        let Some((uuid, size)) = attachment else { return Ok(None) };
        match stored.read(&uuid, size).await {
            Some(file) => {
                cohort_core::metrics::global().orthanc_storage_reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Ok(Some(file))
            }
            None => {
                // Gone (deleted, or stored again under a new uuid) or not as described.
                stored.attachments.forget(instance_id);
                Ok(None)
            }
        }
    }

    /// Waits (at most [`PLACE_WAIT`]) for a place among the requests in flight to Orthanc;
    /// a streamed read takes a place among the streams first.
    async fn places(&self, stream: bool) -> PacsResult<Places> {
        let take = async {
            let stream = match stream {
                true => Some(self.streams.clone().acquire_owned().await),
                false => None,
            };
            let call = self.calls.clone().acquire_owned().await;
            (stream, call)
        };
        match tokio::time::timeout(PLACE_WAIT, take).await {
            Ok((Some(Ok(stream)), Ok(call))) => Ok(Places { _stream: Some(stream), _call: call }),
            Ok((None, Ok(call))) => Ok(Places { _stream: None, _call: call }),
            // The semaphores are never closed.
            Ok(_) => Err(PacsError::Unavailable("the sidecar's connections to Orthanc are closed".into())),
            Err(_) => Err(PacsError::Unavailable(format!(
                "all {} connections to Orthanc stayed busy for {} s (OrthancConnections)",
                self.connections,
                PLACE_WAIT.as_secs()
            ))),
        }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let req = self.client.request(method, format!("{}{}", self.base, path));
        match &self.credentials {
            Some((user, password)) => req.basic_auth(user, Some(password)),
            None => req,
        }
    }

    /// Sends a request and sorts failures into the [`PacsError`] kinds.
    async fn send(&self, req: reqwest::RequestBuilder) -> PacsResult<reqwest::Response> {
        let resp = req.send().await.map_err(|e| PacsError::Unavailable(e.to_string()))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let message = resp.text().await.unwrap_or_default();
        Err(match status.as_u16() {
            404 => PacsError::NotFound,
            401 | 403 => PacsError::Unavailable(format!("Orthanc refused the sidecar's credentials ({status})")),
            s if s >= 500 => PacsError::Unavailable(format!("Orthanc answered {status}: {message}")),
            s => PacsError::Rejected { status: s, message },
        })
    }

    async fn body(resp: reqwest::Response) -> PacsResult<Bytes> {
        resp.bytes().await.map_err(|e| PacsError::Unavailable(e.to_string()))
    }
}

#[async_trait]
impl Transport for OrthancHttp {
    async fn get(&self, path: &str) -> PacsResult<Bytes> {
        let _places = self.places(false).await?;
        Self::body(self.send(self.request(reqwest::Method::GET, path).timeout(REQUEST_TIMEOUT)).await?).await
    }

    async fn post(&self, path: &str, body: Bytes) -> PacsResult<Bytes> {
        let _places = self.places(false).await?;
        let req = self.request(reqwest::Method::POST, path).header("content-type", "application/dicom").body(body);
        Self::body(self.send(req).await?).await
    }

    /// Streams the file to Orthanc: a large upload spooled to disk never sits in memory.
    async fn post_file(&self, path: &str, file: std::fs::File) -> PacsResult<Bytes> {
        let len = file.metadata().map_err(|e| PacsError::Unavailable(format!("cannot read the spooled upload: {e}")))?.len();
        let _places = self.places(false).await?;
        let stream = tokio_util::io::ReaderStream::new(tokio::fs::File::from_std(file));
        let req = self
            .request(reqwest::Method::POST, path)
            .header("content-type", "application/dicom")
            .header("content-length", len)
            .body(reqwest::Body::wrap_stream(stream));
        Self::body(self.send(req).await?).await
    }

    async fn delete(&self, path: &str) -> PacsResult<()> {
        let _places = self.places(false).await?;
        self.send(self.request(reqwest::Method::DELETE, path).timeout(REQUEST_TIMEOUT)).await.map(|_| ())
    }

    /// The places are held until the body has been read to its end, or dropped.
    async fn get_stream(&self, path: &str) -> PacsResult<DicomFile> {
        if let Some(id) = path.strip_prefix("/instances/").and_then(|rest| rest.strip_suffix("/file")) {
            if let Some(file) = self.stored_file(id).await? {
                return Ok(file);
            }
        }
        let places = self.places(true).await?;
        let resp = self.send(self.request(reqwest::Method::GET, path)).await?;
        let size = resp.content_length();
        let body: ByteStream = Box::pin(resp.bytes_stream().map_err(|e| PacsError::Unavailable(e.to_string())));
        Ok(DicomFile { size, body: Box::pin(Holding { body, places: Some(places) }) })
    }
}

/// A body that keeps its request's places until its last chunk (or an error) is read.
struct Holding {
    body: ByteStream,
    places: Option<Places>,
}

impl Stream for Holding {
    type Item = PacsResult<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let next = self.body.as_mut().poll_next(cx);
        if matches!(next, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            self.places = None;
        }
        next
    }
}
