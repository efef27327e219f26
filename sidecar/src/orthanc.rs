//! The sidecar's [`Pacs`]: a stock Orthanc reached over its REST API.

use std::time::Duration;

use async_trait::async_trait;
use cohort_core::pacs::{Pacs, PacsError};
use cohort_core::Config;

/// Orthanc's REST API at a base URL, with optional Basic credentials.
#[derive(Clone, Debug)]
pub struct OrthancHttp {
    base: String,
    client: reqwest::Client,
    credentials: Option<(String, String)>,
}

impl OrthancHttp {
    pub fn new(config: &Config) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .pool_idle_timeout(Duration::from_secs(30))
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
    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, PacsError> {
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
}

#[async_trait]
impl Pacs for OrthancHttp {
    async fn ping(&self) -> Result<(), PacsError> {
        let resp = self.send(self.request(reqwest::Method::GET, "/system").timeout(Duration::from_secs(3))).await?;
        let system: serde_json::Value = resp.json().await.map_err(|e| PacsError::Protocol(e.to_string()))?;
        if system.get("Version").is_some() {
            Ok(())
        } else {
            Err(PacsError::Protocol("/system has no Version".into()))
        }
    }
}
