//! Instance files read in Orthanc's storage directory instead of asked of Orthanc: the
//! sidecar's `OrthancStorageDirectory` (the HTTP hop to Orthanc was most of its cost per
//! image) and, in the plugin, Orthanc's own `StorageDirectory` (`GetDicomForInstance`, a
//! lookup in Orthanc's index, the file read and copied, was 25–38 % of Orthanc's CPU per
//! 39 KB image).
//!
//! Orthanc's file storage keeps an attachment at `xx/yy/uuid` (the uuid's first two pairs
//! of characters); an instance's DICOM attachment never changes uuid while it exists (an
//! instance stored again gets a new attachment). What the file is (its attachment's uuid
//! and size) is asked of Orthanc once per instance and remembered 10 minutes; anything
//! unexpected (a compressed attachment, a missing or resized file, a directory that
//! cannot be read, a storage plugin keeping files elsewhere) is read the usual way
//! instead, and so is that instance until the remembered answer expires: where no file
//! is ever found, an instance costs one question to Orthanc per 10 minutes, not one per
//! read. Only what Orthanc describes is opened: a uuid as Orthanc makes them, under the
//! root.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use futures_util::TryStreamExt;
use serde::Deserialize;

use super::{DicomFile, PacsError, PacsResult, Transport};
use crate::app::TtlCache;

/// How long an instance's attachment is remembered (a file gone is noticed at once).
const ATTACHMENT_TTL: Duration = Duration::from_secs(600);
/// Files up to this size are read in one call on the request's thread (from the page
/// cache, microseconds) by [`StoredFiles::file`]; larger ones are streamed from tokio's
/// blocking pool.
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

/// An instance's DICOM attachment stored uncompressed: its uuid and size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    uuid: String,
    size: u64,
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

/// Orthanc's storage directory, and what each instance's file there is.
#[derive(Debug)]
pub struct StoredFiles {
    root: PathBuf,
    /// Per Orthanc instance id: its DICOM attachment when stored uncompressed, `None` when
    /// not (then it is always read the usual way).
    attachments: TtlCache<String, Option<Attachment>>,
}

impl StoredFiles {
    pub fn new(root: PathBuf) -> Self {
        StoredFiles { root, attachments: TtlCache::new(ATTACHMENT_TTL) }
    }

    fn path(&self, uuid: &str) -> PathBuf {
        self.root.join(&uuid[0..2]).join(&uuid[2..4]).join(uuid)
    }

    /// The instance's attachment, asked of Orthanc (through `orthanc`) when not known;
    /// `None` when its file is not stored as is. An instance Orthanc does not have is
    /// [`PacsError::NotFound`].
    pub async fn attachment<T: Transport + ?Sized>(&self, orthanc: &T, instance_id: &str) -> PacsResult<Option<Attachment>> {
        if let Some(a) = self.attachments.get(instance_id) {
            return Ok(a);
        }
        let body = orthanc.get(&format!("/instances/{instance_id}/attachments/dicom/info")).await?;
        let info: AttachmentInfo =
            serde_json::from_slice(&body).map_err(|e| PacsError::Protocol(format!("attachment info of {instance_id}: {e}")))?;
        let plain = info.compressed_size == info.uncompressed_size && is_uuid(&info.uuid);
        let a = plain.then_some(Attachment { uuid: info.uuid, size: info.uncompressed_size });
        self.attachments.put(instance_id.to_string(), a.clone());
        Ok(a)
    }

    /// The instance's file was not found as described (gone, stored again under a new
    /// uuid, kept elsewhere): it is read the usual way until its attachment is asked of
    /// Orthanc again, when the remembered answer expires.
    pub fn not_found(&self, instance_id: &str) {
        self.attachments.put(instance_id.to_string(), None);
    }

    /// The whole file of `a`, read on this thread, if it is there with the expected size.
    pub fn read_whole(&self, a: &Attachment) -> Option<Bytes> {
        let path = self.path(&a.uuid);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) => return unreadable(&path, &e),
        };
        if bytes.len() as u64 != a.size {
            return resized(&path, a.size, Some(bytes.len() as u64));
        }
        counted();
        Some(Bytes::from(bytes))
    }

    /// The file of `a` if it is there with the expected size: read whole when small,
    /// streamed from tokio's blocking pool otherwise.
    pub async fn read(&self, a: &Attachment) -> Option<DicomFile> {
        if a.size <= READ_IN_PLACE_MAX {
            return self.read_whole(a).map(DicomFile::from_bytes);
        }
        let path = self.path(&a.uuid);
        let file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) => return unreadable(&path, &e),
        };
        match file.metadata().await.map(|m| m.len()) {
            Ok(found) if found == a.size => {}
            found => return resized(&path, a.size, found.ok()),
        }
        counted();
        let body = tokio_util::io::ReaderStream::with_capacity(file, STORED_CHUNK)
            .map_err(|e| PacsError::Unavailable(format!("reading a file in Orthanc's storage: {e}")));
        Some(DicomFile { size: Some(a.size), body: Box::pin(body) })
    }

    /// The instance's file read in the storage directory, or `None` to read it the usual
    /// way (compressed, or not found there as Orthanc describes it).
    pub async fn file<T: Transport + ?Sized>(&self, orthanc: &T, instance_id: &str) -> PacsResult<Option<DicomFile>> {
        let Some(a) = self.attachment(orthanc, instance_id).await? else { return Ok(None) };
        match self.read(&a).await {
            Some(file) => Ok(Some(file)),
            None => {
                self.not_found(instance_id);
                Ok(None)
            }
        }
    }
}

/// `cohort_orthanc_storage_reads_total`.
fn counted() {
    crate::metrics::global().orthanc_storage_reads.fetch_add(1, Ordering::Relaxed);
}

/// A stored file that cannot be read: read the usual way (a missing one silently: deleted).
fn unreadable<T>(path: &Path, e: &std::io::Error) -> Option<T> {
    if e.kind() != std::io::ErrorKind::NotFound {
        tracing::warn!(path = %path.display(), error = %e, "cannot read a file in Orthanc's storage directory; read through Orthanc");
    }
    None
}

/// A stored file of another size than Orthanc says (or of no size to be had): read the
/// usual way.
fn resized<T>(path: &Path, expected: u64, found: Option<u64>) -> Option<T> {
    tracing::warn!(path = %path.display(), expected, found, "a stored file has another size than Orthanc says; read through Orthanc");
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_orthancs_uuids_become_paths() {
        assert!(is_uuid("0d6d1c52-2bd4-4b3c-9a63-6f3a1a5c22e1"));
        for bad in [
            "../../etc/passwd-aaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "0D6D1C52-2BD4-4B3C-9A63-6F3A1A5C22E1",
            "0d6d1c52-2bd4-4b3c-9a63-6f3a1a5c22e",
            "0d6d1c52x2bd4-4b3c-9a63-6f3a1a5c22e1",
        ] {
            assert!(!is_uuid(bad), "{bad}");
        }
    }

    #[test]
    fn a_file_is_read_only_at_its_size() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let stored = StoredFiles::new(dir.path().to_path_buf());
        let uuid = "0d6d1c52-2bd4-4b3c-9a63-6f3a1a5c22e1";
        std::fs::create_dir_all(dir.path().join("0d").join("6d")).expect("directories");
        std::fs::write(dir.path().join("0d").join("6d").join(uuid), b"DICM and the rest").expect("file");
        let a = Attachment { uuid: uuid.into(), size: 17 };
        assert_eq!(stored.read_whole(&a).as_deref(), Some(&b"DICM and the rest"[..]));
        assert_eq!(stored.read_whole(&Attachment { uuid: uuid.into(), size: 18 }), None);
        assert_eq!(stored.read_whole(&Attachment { uuid: "1d6d1c52-2bd4-4b3c-9a63-6f3a1a5c22e1".into(), size: 17 }), None);
    }
}
