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
//!
//! The plugin also keeps the files it read last in memory ([`StoredFiles::keeping`]),
//! as Orthanc's storage cache does for Orthanc's own file route, and within the same
//! bound (Orthanc's `MaximumStorageCacheSize`; 0 keeps none). Reading a 39 KB file from
//! the page cache (open, read, close, the copy and its buffer) was 16–18 % of Orthanc's
//! CPU per image. A kept copy is keyed by its attachment's uuid, whose file never
//! changes, and is answered only after the access checks and the attachment lookup that
//! a read would follow; it expires with the remembered attachment, and goes as soon as
//! Orthanc signals the instance deleted or its attachment changed ([`StoredFiles::forget`]).

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::TryStreamExt;
use hashlink::LinkedHashMap;
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
    /// Files read last, when kept ([`StoredFiles::keeping`]).
    kept: Option<Kept>,
}

impl StoredFiles {
    pub fn new(root: PathBuf) -> Self {
        StoredFiles { root, attachments: TtlCache::new(ATTACHMENT_TTL), kept: None }
    }

    /// Keeps the files [`StoredFiles::read_whole`] reads in memory, `max_bytes` of them
    /// at most, the least recently answered dropped first (none when 0).
    #[must_use]
    pub fn keeping(mut self, max_bytes: u64) -> Self {
        self.kept = (max_bytes > 0).then(|| Kept { max: max_bytes, files: Mutex::default() });
        self
    }

    /// Orthanc deleted the instance or changed its attachment: what is remembered of it
    /// goes, its kept copy with it.
    pub fn forget(&self, instance_id: &str) {
        if let (Some(kept), Some(Some(a))) = (&self.kept, self.attachments.get(instance_id)) {
            kept.forget(&a.uuid);
        }
        self.attachments.forget(instance_id);
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

    /// The whole file of `a`, read on this thread (or its kept copy), if it is there with
    /// the expected size.
    pub fn read_whole(&self, a: &Attachment) -> Option<Bytes> {
        if let Some(bytes) = self.kept.as_ref().and_then(|k| k.get(&a.uuid)) {
            crate::metrics::global().orthanc_storage_kept_hits.fetch_add(1, Ordering::Relaxed);
            return Some(bytes);
        }
        let path = self.path(&a.uuid);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) => return unreadable(&path, &e),
        };
        if bytes.len() as u64 != a.size {
            return resized(&path, a.size, Some(bytes.len() as u64));
        }
        counted();
        let bytes = Bytes::from(bytes);
        if let Some(kept) = &self.kept {
            kept.put(&a.uuid, &bytes);
        }
        Some(bytes)
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

/// Files read last, in memory: at most `max` bytes of them, by attachment uuid, each for
/// [`ATTACHMENT_TTL`] at most, the least recently answered dropped first.
#[derive(Debug)]
struct Kept {
    max: u64,
    files: Mutex<KeptFiles>,
}

#[derive(Debug, Default)]
struct KeptFiles {
    /// Least recently answered first; with the time each was read.
    by_uuid: LinkedHashMap<String, (Instant, Bytes)>,
    bytes: u64,
}

impl KeptFiles {
    fn remove(&mut self, uuid: &str) {
        if let Some((_, b)) = self.by_uuid.remove(uuid) {
            self.bytes -= b.len() as u64;
        }
    }
}

impl Kept {
    fn lock(&self) -> std::sync::MutexGuard<'_, KeptFiles> {
        // Copies of immutable files: still right after a panic elsewhere.
        self.files.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, uuid: &str) -> Option<Bytes> {
        let mut files = self.lock();
        match files.by_uuid.to_back(uuid) {
            Some((read, bytes)) if read.elapsed() < ATTACHMENT_TTL => Some(bytes.clone()),
            Some(_) => {
                files.remove(uuid);
                None
            }
            None => None,
        }
    }

    fn put(&self, uuid: &str, bytes: &Bytes) {
        let size = bytes.len() as u64;
        if size > self.max {
            return;
        }
        let mut files = self.lock();
        files.remove(uuid);
        while files.bytes + size > self.max {
            let Some((_, (_, dropped))) = files.by_uuid.pop_front() else { break };
            files.bytes -= dropped.len() as u64;
        }
        files.by_uuid.insert(uuid.to_string(), (Instant::now(), bytes.clone()));
        files.bytes += size;
    }

    fn forget(&self, uuid: &str) {
        self.lock().remove(uuid);
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
    }

    /// A stored file at `root`, named by a uuid made of `n`.
    fn stored_file(root: &Path, n: u32, content: &[u8]) -> Attachment {
        let uuid = format!("{n:08x}-2bd4-4b3c-9a63-6f3a1a5c22e1");
        std::fs::create_dir_all(root.join(&uuid[0..2]).join(&uuid[2..4])).expect("directories");
        std::fs::write(root.join(&uuid[0..2]).join(&uuid[2..4]).join(&uuid), content).expect("file");
        Attachment { uuid, size: content.len() as u64 }
    }

    #[test]
    fn kept_files_are_answered_without_reading_within_their_bound() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let stored = StoredFiles::new(dir.path().to_path_buf()).keeping(25);
        let [a, b, c] = [1, 2, 3].map(|n| stored_file(dir.path(), n, &[b'0' + n as u8; 10]));
        let remove = |a: &Attachment| std::fs::remove_file(stored.path(&a.uuid)).expect("remove");
        // Read once, then answered from memory: the file is no longer needed.
        assert_eq!(stored.read_whole(&a).as_deref(), Some(&[b'1'; 10][..]));
        assert_eq!(stored.read_whole(&b).as_deref(), Some(&[b'2'; 10][..]));
        remove(&a);
        remove(&b);
        assert_eq!(stored.read_whole(&a).as_deref(), Some(&[b'1'; 10][..]));
        // A third file exceeds 25 bytes: the least recently answered (b) goes, a stays.
        assert_eq!(stored.read_whole(&c).as_deref(), Some(&[b'3'; 10][..]));
        assert_eq!(stored.read_whole(&b), None);
        assert_eq!(stored.read_whole(&a).as_deref(), Some(&[b'1'; 10][..]));
        let kept = stored.kept.as_ref().expect("kept");
        assert_eq!(kept.lock().bytes, 20);
        // A file larger than the bound is never kept.
        let big = stored_file(dir.path(), 4, &[b'4'; 30]);
        assert_eq!(stored.read_whole(&big).map(|b| b.len()), Some(30));
        assert_eq!(kept.lock().bytes, 20);
        assert!(kept.get(&big.uuid).is_none());
    }

    #[test]
    fn a_forgotten_instance_is_read_again() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let stored = StoredFiles::new(dir.path().to_path_buf()).keeping(1 << 20);
        let a = stored_file(dir.path(), 5, b"first");
        stored.attachments.put("instance-5".to_string(), Some(a.clone()));
        assert_eq!(stored.read_whole(&a).as_deref(), Some(&b"first"[..]));
        // Orthanc deleted it: neither its attachment nor its copy is remembered.
        stored.forget("instance-5");
        assert_eq!(stored.attachments.get("instance-5"), None);
        std::fs::remove_file(stored.path(&a.uuid)).expect("remove");
        assert_eq!(stored.read_whole(&a), None);
        // Without keeping, nothing is kept.
        let plain = StoredFiles::new(dir.path().to_path_buf()).keeping(0);
        assert!(plain.kept.is_none());
        assert_eq!(stored.read_whole(&Attachment { uuid: "1d6d1c52-2bd4-4b3c-9a63-6f3a1a5c22e1".into(), size: 17 }), None);
    }
}
