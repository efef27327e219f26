//! The sidecar's way to Orthanc: its REST API over HTTP. The REST knowledge itself is in
//! `cohort_core::pacs::OrthancPacs`; this is only the transport.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use cohort_core::pacs::{DicomFile, PacsError, PacsResult, Transport};
use cohort_core::Config;
use futures_util::TryStreamExt;

/// Orthanc's REST API at a base URL, with optional Basic credentials.
#[derive(Clone, Debug)]
pub struct OrthancHttp {
    base: String,
    client: reqwest::Client,
    credentials: Option<(String, String)>,
}

/// Requests other than file transfers must answer within this delay.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

impl OrthancHttp {
    pub fn new(config: &Config) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            // Orthanc closes a kept-alive connection after 1 s of silence (1.10.1's
            // KeepAliveTimeout default): a request sent on a connection idle that long can
            // meet the close and fail with "connection closed before message completed",
            // which is not retried for a POST. Idle connections are dropped first.
            .pool_idle_timeout(Duration::from_millis(500))
            .tcp_nodelay(true)
            .build()?;
        let credentials = config.orthanc_username.clone().zip(config.orthanc_password.clone());
        Ok(OrthancHttp { base: config.orthanc_url.trim_end_matches('/').to_string(), client, credentials })
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
        Self::body(self.send(self.request(reqwest::Method::GET, path).timeout(REQUEST_TIMEOUT)).await?).await
    }

    async fn post(&self, path: &str, body: Bytes) -> PacsResult<Bytes> {
        let req = self.request(reqwest::Method::POST, path).header("content-type", "application/dicom").body(body);
        Self::body(self.send(req).await?).await
    }

    /// Streams the file to Orthanc: a large upload spooled to disk never sits in memory.
    async fn post_file(&self, path: &str, file: std::fs::File) -> PacsResult<Bytes> {
        let len = file.metadata().map_err(|e| PacsError::Unavailable(format!("cannot read the spooled upload: {e}")))?.len();
        let stream = tokio_util::io::ReaderStream::new(tokio::fs::File::from_std(file));
        let req = self
            .request(reqwest::Method::POST, path)
            .header("content-type", "application/dicom")
            .header("content-length", len)
            .body(reqwest::Body::wrap_stream(stream));
        Self::body(self.send(req).await?).await
    }

    async fn delete(&self, path: &str) -> PacsResult<()> {
        self.send(self.request(reqwest::Method::DELETE, path).timeout(REQUEST_TIMEOUT)).await.map(|_| ())
    }

    async fn get_stream(&self, path: &str) -> PacsResult<DicomFile> {
        let resp = self.send(self.request(reqwest::Method::GET, path)).await?;
        let size = resp.content_length();
        let body = resp.bytes_stream().map_err(|e| PacsError::Unavailable(e.to_string()));
        Ok(DicomFile { size, body: Box::pin(body) })
    }
}
