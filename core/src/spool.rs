//! Where uploads and nested archives wait on disk: anonymous temporary files in
//! `SpoolDir` (the system's temporary directory by default).
//!
//! A spool file has no name (Linux's `O_TMPFILE`; elsewhere created and unlinked at
//! once), so whatever becomes of the request (refused, failed, its client gone, the
//! process killed) its space goes back to the file system when the file is dropped, and
//! nothing is ever left behind to clean up. A full disk is a 507 `insufficient_storage`
//! ([`ApiError::spool_io`]).

use std::path::Path;
use std::sync::Arc;

use crate::error::{ApiError, ApiResult};

/// The directory spool files are made in; `None` is the system's temporary directory
/// (`TMPDIR`, else `/tmp`).
#[derive(Clone, Debug, Default)]
pub struct SpoolDir(Option<Arc<Path>>);

impl SpoolDir {
    pub fn new(dir: Option<&Path>) -> SpoolDir {
        SpoolDir(dir.map(Arc::from))
    }

    /// A new, empty, anonymous temporary file.
    pub fn file(&self) -> ApiResult<std::fs::File> {
        match &self.0 {
            Some(dir) => tempfile::tempfile_in(dir),
            None => tempfile::tempfile(),
        }
        .map_err(ApiError::spool_io)
    }
}
