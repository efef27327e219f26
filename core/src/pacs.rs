//! The DICOM store behind one trait: Orthanc's REST API for the sidecar, in-process SDK
//! calls for the plugin.

use async_trait::async_trait;

use crate::error::ApiError;

/// What can go wrong talking to the DICOM store.
#[derive(Debug, thiserror::Error)]
pub enum PacsError {
    /// Orthanc cannot be reached or answered 5xx: a 503 for the client.
    #[error("Orthanc is unavailable: {0}")]
    Unavailable(String),
    #[error("not found in Orthanc")]
    NotFound,
    /// Orthanc refused the request (4xx), e.g. a file that is not DICOM.
    #[error("Orthanc refused the request ({status}): {message}")]
    Rejected { status: u16, message: String },
    #[error("unexpected answer from Orthanc: {0}")]
    Protocol(String),
}

impl From<PacsError> for ApiError {
    fn from(e: PacsError) -> Self {
        match e {
            PacsError::Unavailable(cause) => ApiError::unavailable("orthanc_unavailable", cause),
            PacsError::NotFound => ApiError::not_found("DICOM resource"),
            PacsError::Rejected { message, .. } => ApiError::unprocessable("orthanc_rejected", message),
            PacsError::Protocol(cause) => ApiError::unavailable("orthanc_unavailable", cause),
        }
    }
}

#[async_trait]
pub trait Pacs: Send + Sync + 'static {
    /// Checks that Orthanc answers.
    async fn ping(&self) -> Result<(), PacsError>;
}
