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
use cohort_core::pacs::stored::StoredFiles;
use cohort_core::pacs::{ByteStream, DicomFile, PacsError, PacsResult, Transport};
use cohort_core::Config;
use futures_util::{Stream, TryStreamExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Orthanc's REST API at a base URL, with optional Basic credentials.
#[derive(Clone, Debug)]
pub struct OrthancHttp {
    /// `OrthancUrl`, parsed once at start (an unparsable one is refused then, not at each
    /// request): a request's URL is this one with its path and query set.
    base: reqwest::Url,
    /// The base URL's path without its trailing `/` (empty for Orthanc at the root).
    base_path: String,
    client: reqwest::Client,
    /// The `Authorization` header of the Basic credentials, encoded once.
    authorization: Option<reqwest::header::HeaderValue>,
    /// Places for requests in flight to Orthanc (`OrthancConnections` less the idle ones).
    calls: Arc<Semaphore>,
    /// Places for streamed reads, three quarters of `calls`, taken before one of those.
    streams: Arc<Semaphore>,
    connections: usize,
    /// Orthanc's storage directory, when configured.
    stored: Option<Arc<StoredFiles>>,
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
    pub fn new(config: &Config) -> anyhow::Result<Self> {
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
            // Orthanc's REST API does not redirect; an answer that does is an error, and no
            // request (nor its credentials) goes anywhere but `OrthancUrl`.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let base = reqwest::Url::parse(&config.orthanc_url).map_err(|e| anyhow::anyhow!("OrthancUrl {:?}: {e}", config.orthanc_url))?;
        let base_path = base.path().trim_end_matches('/').to_string();
        let authorization = match (&config.orthanc_username, &config.orthanc_password) {
            (Some(user), Some(password)) => Some(basic_authorization(user, password)?),
            _ => None,
        };
        let connections = config.orthanc_connections as usize;
        let places = connections - idle_connections(connections);
        Ok(OrthancHttp {
            base,
            base_path,
            client,
            authorization,
            calls: Arc::new(Semaphore::new(places)),
            streams: Arc::new(Semaphore::new((places * 3 / 4).max(1))),
            connections,
            stored: config.orthanc_storage_directory.clone().map(|root| Arc::new(StoredFiles::new(root))),
        })
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

    /// `OrthancUrl` with `path` (and its query, if any) appended to its path.
    fn url(&self, path: &str) -> reqwest::Url {
        let (path, query) = match path.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (path, None),
        };
        let mut url = self.base.clone();
        if self.base_path.is_empty() {
            url.set_path(path);
        } else {
            url.set_path(&format!("{}{path}", self.base_path));
        }
        url.set_query(query);
        url
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let req = self.client.request(method, self.url(path));
        match &self.authorization {
            Some(value) => req.header(reqwest::header::AUTHORIZATION, value.clone()),
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
    async fn instance_file(&self, id: &str) -> PacsResult<DicomFile> {
        if let Some(stored) = &self.stored {
            if let Some(file) = stored.file(self, id).await? {
                return Ok(file);
            }
        }
        let places = self.places(true).await?;
        // Orthanc 1.10.1 reads this route's `Accept` to answer DICOMweb JSON or XML when
        // asked; reqwest's default `*/*` is no MIME type it knows, and each request then
        // cost Orthanc a C++ exception thrown and caught (unwinding showed in its profile).
        let req = self.request(reqwest::Method::GET, &format!("/instances/{id}/file")).header(reqwest::header::ACCEPT, "application/dicom");
        let resp = self.send(req).await?;
        let size = resp.content_length();
        let body: ByteStream = Box::pin(resp.bytes_stream().map_err(|e| PacsError::Unavailable(e.to_string())));
        Ok(DicomFile { size, body: Box::pin(Holding { body, places: Some(places) }) })
    }
}

/// The `Authorization` value of Basic credentials (marked sensitive: never in a debug print).
fn basic_authorization(user: &str, password: &str) -> anyhow::Result<reqwest::header::HeaderValue> {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let mut value = reqwest::header::HeaderValue::try_from(format!("Basic {encoded}"))?;
    value.set_sensitive(true);
    Ok(value)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn http(url: &str, credentials: Option<(&str, &str)>) -> OrthancHttp {
        let config = Config {
            orthanc_url: url.into(),
            orthanc_username: credentials.map(|c| c.0.to_string()),
            orthanc_password: credentials.map(|c| c.1.to_string()),
            ..Config::default()
        };
        OrthancHttp::new(&config).expect("a valid OrthancUrl")
    }

    #[test]
    fn request_urls_are_the_base_with_the_path_appended() {
        let root = http("http://127.0.0.1:8042", None);
        assert_eq!(root.url("/instances/ab-cd/file").as_str(), "http://127.0.0.1:8042/instances/ab-cd/file");
        assert_eq!(root.url("/changes?since=12&limit=100").as_str(), "http://127.0.0.1:8042/changes?since=12&limit=100");
        let slash = http("http://127.0.0.1:8042/", None);
        assert_eq!(slash.url("/system").as_str(), "http://127.0.0.1:8042/system");
        // Orthanc behind a reverse proxy, under a path of its own.
        let prefixed = http("https://pacs.example.org/orthanc/", None);
        assert_eq!(prefixed.url("/instances/x/file").as_str(), "https://pacs.example.org/orthanc/instances/x/file");
        assert_eq!(prefixed.url("/tools/find?expand").as_str(), "https://pacs.example.org/orthanc/tools/find?expand");
        // A request without a query does not keep one from an earlier URL.
        assert_eq!(prefixed.url("/system").query(), None);
    }

    #[test]
    fn basic_credentials_are_encoded_once_and_kept_out_of_debug_prints() {
        let with = http("http://127.0.0.1:8042", Some(("orthanc", "pä:ss")));
        let value = with.authorization.clone().expect("credentials");
        // RFC 7617: base64 of "user:password" in UTF-8.
        assert_eq!(value.to_str().expect("ASCII"), "Basic b3J0aGFuYzpww6Q6c3M=");
        assert!(value.is_sensitive());
        assert!(!format!("{with:?}").contains("b3J0aGFuYzpww6Q6c3M="));
        assert!(http("http://127.0.0.1:8042", None).authorization.is_none());
    }

    #[test]
    fn an_orthanc_url_that_does_not_parse_is_refused_at_start() {
        let config = Config { orthanc_url: "http://[::1".into(), ..Config::default() };
        assert!(OrthancHttp::new(&config).is_err());
    }
}
