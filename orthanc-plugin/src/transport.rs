//! The plugin's way to Orthanc: its REST API and DICOM files in-process, through the
//! SDK, with no HTTP round trip. The REST knowledge is in `cohort_core::pacs`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use cohort_core::pacs::stored::StoredFiles;
use cohort_core::pacs::{DicomFile, PacsError, PacsResult, Transport};
use http::Method;

use crate::sdk::{self, SdkError};

/// Orthanc's built-in REST API, called in-process. The SDK calls block, so they run on
/// tokio's blocking pool, never on an async worker.
#[derive(Debug, Default)]
pub struct InProcess {
    /// Orthanc's `StorageDirectory`, where instance files stored uncompressed are read
    /// (see [`StoredFiles`]); `None`: every file through `GetDicomForInstance`.
    stored: Option<Arc<StoredFiles>>,
}

impl InProcess {
    /// `stored`: Orthanc's storage directory (see [`storage_directory`]), when its files
    /// are read there.
    pub fn new(stored: Option<Arc<StoredFiles>>) -> Self {
        InProcess { stored }
    }
}

/// Orthanc's default `MaximumStorageCacheSize`, in MB.
const ORTHANC_STORAGE_CACHE_MB: u64 = 128;

/// The bytes of instance files the plugin keeps in memory ([`StoredFiles::keeping`]):
/// as many as Orthanc's own storage cache may hold (`MaximumStorageCacheSize`, in MB,
/// 128 by default; 0, or a value Orthanc would refuse, keeps none).
pub fn kept_bytes(orthanc_config: &serde_json::Value) -> u64 {
    let mb = match orthanc_config.get("MaximumStorageCacheSize") {
        None => ORTHANC_STORAGE_CACHE_MB,
        Some(v) => v.as_u64().unwrap_or(0),
    };
    mb.saturating_mul(1024 * 1024)
}

/// Orthanc's `StorageDirectory` as Orthanc reads it: its configuration's value
/// (`OrthancStorage` by default), relative to the directory of the configuration file
/// Orthanc was given (or to that directory itself). `None` when Orthanc's storage is
/// not its own files: `StorageDirectory` not a string, or the storage of the PostgreSQL,
/// MySQL or ODBC plugin (`EnableStorage`). Files another storage plugin keeps elsewhere
/// are not found at the first read of each instance, which is then read through Orthanc.
pub fn storage_directory(orthanc_config: &serde_json::Value, configuration_path: &std::path::Path) -> Option<std::path::PathBuf> {
    let plugin_storage = ["PostgreSQL", "MySQL", "Odbc"].iter().any(|section| orthanc_config[section]["EnableStorage"] == true);
    if plugin_storage {
        return None;
    }
    let dir = match orthanc_config.get("StorageDirectory") {
        None => "OrthancStorage",
        Some(v) => v.as_str()?,
    };
    let dir = std::path::Path::new(dir);
    if dir.is_absolute() {
        return Some(dir.to_path_buf());
    }
    let base =
        if configuration_path.is_dir() { configuration_path } else { configuration_path.parent().unwrap_or(std::path::Path::new("")) };
    Some(base.join(dir))
}

fn sdk_error(e: SdkError, method: &Method) -> PacsError {
    match e {
        SdkError::NotFound { .. } => PacsError::NotFound,
        SdkError::NoContext => PacsError::Unavailable("Orthanc is shutting down".into()),
        // Orthanc refusing what we sent it (e.g. a file that is not DICOM).
        SdkError::Orthanc { description, .. } if *method != Method::GET => PacsError::Rejected { status: 400, message: description },
        other => PacsError::Protocol(other.to_string()),
    }
}

/// Set when Orthanc signals `OrthancStopped`, well before it detaches its database: from
/// then on no call reaches Orthanc (one made after the detach fails in Orthanc's own
/// log with "Plugin trying to call the database during its initialization").
static STOPPING: AtomicBool = AtomicBool::new(false);

/// Orthanc is stopping: refuse every further call.
pub fn orthanc_stopping() {
    STOPPING.store(true, Ordering::Release);
}

/// Whether Orthanc signalled that it is stopping: no call may reach it any more.
pub fn is_stopping() -> bool {
    STOPPING.load(Ordering::Acquire)
}

fn stopping() -> PacsResult<()> {
    if is_stopping() {
        Err(PacsError::Unavailable("Orthanc is stopping".into()))
    } else {
        Ok(())
    }
}

async fn call(method: Method, uri: String, body: Bytes) -> PacsResult<Bytes> {
    stopping()?;
    tokio::task::spawn_blocking(move || {
        stopping()?;
        let answer = sdk::call_rest_api(method.clone(), &uri, &body, &[]).map_err(|e| sdk_error(e, &method))?;
        match answer.status {
            200..=299 => Ok(Bytes::from(answer.body)),
            404 => Err(PacsError::NotFound),
            s @ 400..=499 => Err(PacsError::Rejected { status: s, message: String::from_utf8_lossy(&answer.body).into_owned() }),
            s => Err(PacsError::Unavailable(format!("Orthanc answered {s} to {method} {uri}"))),
        }
    })
    .await
    .map_err(|e| PacsError::Unavailable(e.to_string()))?
}

#[async_trait]
impl Transport for InProcess {
    async fn get(&self, path: &str) -> PacsResult<Bytes> {
        call(Method::GET, path.to_string(), Bytes::new()).await
    }

    async fn post(&self, path: &str, body: Bytes) -> PacsResult<Bytes> {
        call(Method::POST, path.to_string(), body).await
    }

    async fn delete(&self, path: &str) -> PacsResult<()> {
        call(Method::DELETE, path.to_string(), Bytes::new()).await.map(|_| ())
    }

    /// Instance files are read in Orthanc's storage directory when stored there
    /// uncompressed (the attachment asked of Orthanc once per instance), otherwise with
    /// `GetDicomForInstance`, whose buffer is handed on without a copy. The read is lazy:
    /// it happens when the body is polled, which for an `/api` answer is on the Orthanc
    /// HTTP thread that serves the request (as Orthanc's own file route does), not on a
    /// runtime thread.
    async fn instance_file(&self, id: &str) -> PacsResult<DicomFile> {
        stopping()?;
        let stored = match &self.stored {
            Some(stored) => stored.attachment(self, id).await?.map(|a| (stored.clone(), a)),
            None => None,
        };
        let id = id.to_string();
        let read = async move {
            // Inline on a thread that only waits (the Orthanc thread); on a runtime worker,
            // the worker's other tasks move elsewhere while the file is read.
            tokio::task::block_in_place(|| {
                if let Some((stored, attachment)) = stored {
                    if let Some(bytes) = stored.read_whole(&attachment) {
                        return Ok(bytes);
                    }
                    // Gone (deleted, or stored again under a new uuid) or not as described.
                    stored.not_found(&id);
                }
                sdk::get_dicom_for_instance(&id).map(Bytes::from).map_err(|e| sdk_error(e, &Method::GET))
            })
        };
        Ok(DicomFile { size: None, body: Box::pin(futures_util::stream::once(read)) })
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use serde_json::json;

    use super::{kept_bytes, storage_directory};

    #[test]
    fn files_are_kept_within_orthancs_storage_cache_size() {
        assert_eq!(kept_bytes(&json!({})), 128 << 20);
        assert_eq!(kept_bytes(&json!({"MaximumStorageCacheSize": 16})), 16 << 20);
        assert_eq!(kept_bytes(&json!({"MaximumStorageCacheSize": 0})), 0);
        assert_eq!(kept_bytes(&json!({"MaximumStorageCacheSize": "16"})), 0);
        assert_eq!(kept_bytes(&json!({"MaximumStorageCacheSize": -1})), 0);
    }

    #[test]
    fn the_storage_directory_is_read_as_orthanc_reads_it() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let file = dir.path().join("orthanc.json");
        std::fs::write(&file, "{}").expect("configuration file");
        // Absolute: as is.
        assert_eq!(
            storage_directory(&json!({"StorageDirectory": "/var/lib/orthanc/db"}), &file),
            Some(PathBuf::from("/var/lib/orthanc/db"))
        );
        // Relative: to the configuration file's directory, or to the directory Orthanc was given.
        assert_eq!(storage_directory(&json!({"StorageDirectory": "db"}), &file), Some(dir.path().join("db")));
        assert_eq!(storage_directory(&json!({"StorageDirectory": "db"}), dir.path()), Some(dir.path().join("db")));
        // Orthanc's default.
        assert_eq!(storage_directory(&json!({}), &file), Some(dir.path().join("OrthancStorage")));
        assert_eq!(storage_directory(&json!({}), Path::new("orthanc.json")), Some(PathBuf::from("OrthancStorage")));
        // Files kept by a storage plugin, or a value Orthanc would refuse: never read here.
        assert_eq!(storage_directory(&json!({"StorageDirectory": "/db", "PostgreSQL": {"EnableStorage": true}}), &file), None);
        assert_eq!(storage_directory(&json!({"StorageDirectory": "/db", "MySQL": {"EnableStorage": true}}), &file), None);
        assert_eq!(
            storage_directory(&json!({"StorageDirectory": "/db", "PostgreSQL": {"EnableStorage": false}}), &file),
            Some(PathBuf::from("/db"))
        );
        assert_eq!(storage_directory(&json!({"StorageDirectory": 3}), &file), None);
    }
}
