//! DICOM import: single files, ZIP archives (one level of nesting), or many files, into
//! Orthanc and the registry.
//!
//! A ZIP is read twice. The first pass checks the whole archive before anything is
//! stored: structure, CRCs, entry count, total inflated size, per-entry compression
//! ratio and nesting, each limit enforced while inflating (a breach stops at once; no
//! entry is ever inflated first and measured after). The second pass sends the DICOM
//! entries to Orthanc one at a time. Entry names are only reported, never used as paths.
//! Memory holds a few instances at most; archives are read from a spooled file or, for
//! small bodies, from memory.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Seek};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_util::task::AbortOnDropHandle;
use utoipa::ToSchema;
use zip::result::ZipError;
use zip::ZipArchive;

use super::reconcile::Journal;
use super::{action, registry, Actor, Outcome};
use crate::app::App;
use crate::domain::Id;
use crate::error::{ApiError, ApiResult};
use crate::pacs::{Pacs, PacsError, StoreStatus, StoredInstance};
use crate::spool::SpoolDir;
use crate::store::patients::Scope;

/// Counts of DICOM instances in an import.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct InstanceCounts {
    /// Files that look like DICOM (`stored + already_stored + failed`).
    pub received: u64,
    pub stored: u64,
    pub already_stored: u64,
    pub failed: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct ImportedPatient {
    pub id: Id,
    pub external_id: String,
    /// True when this import created the patient record.
    pub created: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct FileError {
    pub file: String,
    pub error: String,
}

/// The answer of `POST /api/patients/import`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct ImportReport {
    pub instances: InstanceCounts,
    /// Entries that are not DICOM (macOS metadata, DICOMDIR, PDFs...), each named in `errors`.
    pub skipped: u64,
    pub patients: Vec<ImportedPatient>,
    pub errors: Vec<FileError>,
}

/// The archive limits, from the configuration.
#[derive(Clone, Copy, Debug)]
pub struct ZipLimits {
    pub max_entries: u64,
    pub max_uncompressed: u64,
    pub max_ratio: u64,
}

impl ZipLimits {
    pub fn from_app(app: &App) -> Self {
        ZipLimits {
            max_entries: app.config.max_zip_entries,
            max_uncompressed: app.config.max_uncompressed_bytes,
            max_ratio: app.config.max_compression_ratio,
        }
    }
}

/// Below this many inflated bytes an entry is never called a bomb: a small blank image
/// compresses far beyond any sane ratio.
const RATIO_FLOOR: u64 = 1 << 20;
const CHUNK: usize = 64 * 1024;
/// Instances sent to Orthanc at once during a ZIP import.
const STORE_CONCURRENCY: usize = 3;

/// Where an archive is read from.
pub enum ZipSource {
    File(std::fs::File),
    Memory(Bytes),
}

/// Progress of an import, for the command line's progress bar.
pub trait Progress: Send + Sync {
    /// An entry was handled (stored, refused or skipped).
    fn entry(&self, name: &str, outcome: &str);
}

/// What a caller may import into.
#[derive(Clone, Debug)]
pub struct ImportTarget {
    pub actor: Actor,
    /// Which existing patients the importer may add to.
    pub scope: Scope,
    /// The group new patients get.
    pub new_patient_group: Option<Id>,
}

/// Per study: may this import add to it?
#[derive(Clone, Copy, Debug)]
struct StudyState {
    allowed: bool,
}

/// One import in progress.
pub struct Importer<'a> {
    app: &'a App,
    pacs: Arc<dyn Pacs>,
    target: ImportTarget,
    limits: ZipLimits,
    report: ImportReport,
    studies: HashMap<String, StudyState>,
    patients: BTreeMap<Id, ImportedPatient>,
    progress: Option<Arc<dyn Progress>>,
    /// Written before anything is stored, so that a process killed mid-import leaves
    /// enough for reconciliation (`services::reconcile`).
    journal: Arc<Journal>,
}

impl<'a> Importer<'a> {
    pub fn new(app: &'a App, target: ImportTarget) -> ApiResult<Self> {
        Ok(Importer {
            pacs: app.pacs()?.clone(),
            journal: Journal::new(app.store.clone(), &target.actor, target.scope, target.new_patient_group),
            limits: ZipLimits::from_app(app),
            app,
            target,
            report: ImportReport::default(),
            studies: HashMap::new(),
            patients: BTreeMap::new(),
            progress: None,
        })
    }

    pub fn with_progress(mut self, progress: Arc<dyn Progress>) -> Self {
        self.progress = Some(progress);
        self
    }

    fn note(&self, name: &str, outcome: &str) {
        if let Some(p) = &self.progress {
            p.entry(name, outcome);
        }
    }

    fn skip(&mut self, name: &str, why: &str) {
        self.report.skipped += 1;
        self.report.errors.push(FileError { file: name.to_string(), error: why.to_string() });
        self.note(name, "skipped");
    }

    fn fail(&mut self, name: &str, why: String) {
        self.report.instances.failed += 1;
        self.report.errors.push(FileError { file: name.to_string(), error: why });
        self.note(name, "failed");
    }

    /// Adds one file: stored when it looks like DICOM, skipped and reported otherwise.
    pub async fn add_file(&mut self, name: &str, bytes: Bytes) -> ApiResult<()> {
        match classify(name, &bytes) {
            Kind::Dicom => self.store(name, bytes).await,
            Kind::Junk(why) | Kind::Other(why) => {
                self.skip(name, why);
                Ok(())
            }
            Kind::Zip | Kind::Tar => {
                // An archive given as a file (command line, multipart part) is an archive.
                self.add_zip(name, ZipSource::Memory(bytes)).await
            }
        }
    }

    /// Adds one file spooled to disk (a large body, a form part), classified by its first
    /// bytes: a ZIP is read from the file, a DICOM file streamed to Orthanc from it. Never
    /// read whole into memory.
    pub async fn add_spooled_file(&mut self, name: &str, head: &[u8], file: std::fs::File) -> ApiResult<()> {
        match classify(name, head) {
            Kind::Dicom => {
                let (head, file) = read_head(file).await?;
                self.journal.before_store(&head).await?;
                let sent = self.pacs.store_instance_file(file).await;
                self.record(name, sent).await
            }
            Kind::Junk(why) | Kind::Other(why) => {
                self.skip(name, why);
                Ok(())
            }
            Kind::Zip | Kind::Tar => self.add_zip(name, ZipSource::File(file)).await,
        }
    }

    /// Sends one DICOM instance to Orthanc and claims its study for the registry.
    async fn store(&mut self, name: &str, bytes: Bytes) -> ApiResult<()> {
        self.journal.before_store(&bytes).await?;
        let sent = self.pacs.store_instance(bytes).await;
        self.record(name, sent).await
    }

    /// Counts what Orthanc did with one instance, claiming its study the first time.
    async fn record(&mut self, name: &str, sent: Result<StoredInstance, PacsError>) -> ApiResult<()> {
        self.report.instances.received += 1;
        let stored = match sent {
            Ok(s) => s,
            Err(PacsError::Rejected { message, .. }) => {
                self.fail(name, format!("Orthanc refused the file: {}", orthanc_message(&message)));
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        let state = match self.studies.get(&stored.study_id) {
            Some(s) => *s,
            None => {
                let s = self.claim_study(&stored.study_id).await?;
                self.studies.insert(stored.study_id.clone(), s);
                s
            }
        };
        if !state.allowed {
            // The patient exists and belongs to another group: take back what we added.
            if stored.status == StoreStatus::Stored {
                if let Err(e) = self.pacs.delete_instance(&stored.instance_id).await {
                    tracing::warn!(instance = %stored.instance_id, error = %e, "could not remove a refused instance");
                }
            }
            self.fail(name, "this patient is not accessible to you".into());
            return Ok(());
        }
        match stored.status {
            StoreStatus::Stored => self.report.instances.stored += 1,
            StoreStatus::AlreadyStored => self.report.instances.already_stored += 1,
        }
        self.note(name, "stored");
        Ok(())
    }

    /// First instance of a study in this import: registers the study now (so the
    /// patient is created in the importer's group before Orthanc's change log could
    /// register it for nobody), unless its patient belongs to someone else.
    async fn claim_study(&mut self, orthanc_study_id: &str) -> ApiResult<StudyState> {
        let info = self.pacs.study(orthanc_study_id).await?;
        let (app, target, info) = (self.app, &self.target, &info);
        let synced = registry::retrying(move || async move {
            let mut tx = app.store.begin().await?;
            if let Some(existing) = registry::find_patient(&mut tx, info).await? {
                if !super::patients::can_see(target.scope, &existing) {
                    // Audited like any other refusal to reach another group's patient.
                    tx.insert_audit(&target.actor.audit(action::ACCESS_DENIED, Outcome::Denied).on("patient", existing.id).details(
                        json!({"reason": "patient_of_another_group", "route": "/api/patients/import", "study": info.study_instance_uid}),
                    ))
                    .await?;
                    tx.commit().await?;
                    return Ok(None);
                }
            }
            let synced = registry::apply_study(&mut tx, info, target.new_patient_group).await?;
            tx.commit().await?;
            Ok(Some(synced))
        })
        .await?;
        let Some(synced) = synced else {
            return Ok(StudyState { allowed: false });
        };
        let p = &synced.patient;
        let entry = self.patients.entry(p.id).or_insert(ImportedPatient { id: p.id, external_id: p.external_id.clone(), created: false });
        entry.created |= synced.patient_created;
        Ok(StudyState { allowed: true })
    }

    /// Adds a ZIP archive: checked whole first, then its DICOM entries stored.
    pub async fn add_zip(&mut self, name: &str, source: ZipSource) -> ApiResult<()> {
        let limits = self.limits;
        let spool = SpoolDir::new(self.app.config.spool_dir.as_deref());
        let plan = tokio::task::spawn_blocking(move || plan_any(source, limits, spool)).await.map_err(ApiError::internal)??;
        let (tx, rx) = tokio::sync::mpsc::channel::<ApiResult<Entry>>(2);
        let reader = tokio::task::spawn_blocking(move || plan.send_entries(&tx));
        let prefix = if name.is_empty() { String::new() } else { format!("{name}/") };
        // A few instances travel to Orthanc at once (it stores them in parallel); results
        // are recorded in entry order. Each send is a task of its own: recording a result
        // calls Orthanc too, and meanwhile a send that was only a future of this stream
        // would not be polled; when the transport's places were given in turn to such
        // unpolled sends (the sidecar's OrthancConnections), the recording waited for a
        // place they held and the import stalled.
        let (pacs, journal) = (self.pacs.clone(), self.journal.clone());
        let mut sends = Box::pin(
            Entries(rx)
                .map(move |entry| {
                    // Aborted when dropped: the import stopped before reading its result.
                    AbortOnDropHandle::new(tokio::spawn(send_entry(pacs.clone(), journal.clone(), prefix.clone(), entry)))
                        .map(|joined| joined.map_err(ApiError::internal).and_then(|sent| sent))
                })
                .buffered(STORE_CONCURRENCY),
        );
        let mut result = Ok(());
        while let Some(item) = sends.next().await {
            let step = match item {
                Ok((path, Ok(sent))) => self.record(&path, sent).await,
                Ok((path, Err(why))) => {
                    self.skip(&path, &why);
                    Ok(())
                }
                Err(e) => Err(e),
            };
            if let Err(e) = step {
                result = Err(e);
                break;
            }
        }
        // Dropping the stream hangs up on the reader, which then stops.
        drop(sends);
        reader.await.map_err(ApiError::internal)?;
        result
    }

    /// Refreshes every study this import touched (complete instance lists and counts),
    /// records the `IMPORT` audit row with them, and returns the report.
    pub async fn finish(self) -> ApiResult<ImportReport> {
        self.finish_with(None).await
    }

    /// Ends an import that failed part-way (a later part refused, Orthanc gone, the
    /// client gone): what was stored is registered and audited all the same, the audit
    /// row saying how far it got; then the error stands.
    pub async fn abandon(self, error: ApiError) -> ApiError {
        if self.report.instances.received == 0 {
            // Nothing reached Orthanc: the journal, if any, has nothing to reconcile.
            if let Some(id) = self.journal.opened() {
                let closed = async { self.app.store.conn().await?.close_import_journal(id).await };
                if let Err(e) = closed.await {
                    tracing::warn!(import = id, error = %e, "could not close an import's journal; reconciliation will");
                }
            }
            return error;
        }
        if let Err(e) = self.finish_with(Some(&error)).await {
            tracing::warn!(error = %e, "could not record an interrupted import");
        }
        error
    }

    async fn finish_with(mut self, interrupted: Option<&ApiError>) -> ApiResult<ImportReport> {
        let mut infos = Vec::new();
        // Studies Orthanc could not describe while an interrupted import winds down (it is
        // stopping, or gone): the row is written all the same and the journal stays open,
        // so reconciliation completes their registration at the next start.
        let mut unrefreshed = Vec::new();
        for (study_id, state) in &self.studies {
            if state.allowed {
                match self.pacs.study(study_id).await {
                    Ok(info) => infos.push(info),
                    Err(PacsError::NotFound) => {}
                    Err(e @ (PacsError::Unavailable(_) | PacsError::Protocol(_))) if interrupted.is_some() => {
                        tracing::warn!(study = %study_id, error = %e, "an interrupted import leaves this study to reconciliation");
                        unrefreshed.push(study_id.clone());
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        self.report.patients = self.patients.into_values().collect();
        let (app, target, r, journal) = (self.app, &self.target, &self.report, self.journal.opened());
        let (infos, unrefreshed) = (&infos, &unrefreshed);
        registry::retrying(move || async move {
            let mut tx = app.store.begin().await?;
            for info in infos {
                registry::apply_study(&mut tx, info, target.new_patient_group).await?;
            }
            if r.instances.received > 0 {
                let clean = r.instances.failed == 0 && interrupted.is_none();
                let row = target.actor.audit(action::IMPORT, if clean { Outcome::Success } else { Outcome::Failure });
                let row = match r.patients.as_slice() {
                    [only] => row.on("patient", only.id),
                    _ => row,
                };
                tx.insert_audit(&row.details(json!({
                    "instances": r.instances, "skipped": r.skipped,
                    "patients": r.patients.iter().map(|p| json!({"id": p.id, "external_id": p.external_id, "created": p.created})).collect::<Vec<_>>(),
                    "studies": infos.iter().map(|i| i.study_instance_uid.clone()).collect::<Vec<_>>(),
                    "completed": interrupted.is_none(),
                    "interrupted_by": interrupted.map(|e| json!({"status": e.status.as_u16(), "code": e.code, "message": e.message})),
                    "left_to_reconciliation": unrefreshed,
                })))
                .await?;
            }
            // The import is complete and audited: nothing left for reconciliation (unless
            // Orthanc could not describe some of its studies).
            if let (Some(id), true) = (journal, unrefreshed.is_empty()) {
                tx.close_import_journal(id).await?;
            }
            tx.commit().await
        })
        .await?;
        Ok(self.report)
    }
}

/// The entries the blocking reader sends, as a stream.
struct Entries(tokio::sync::mpsc::Receiver<ApiResult<Entry>>);

impl futures_util::Stream for Entries {
    type Item = ApiResult<Entry>;

    fn poll_next(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

/// What became of one archive entry: sent to Orthanc (with Orthanc's answer), or skipped.
type Sent = (String, Result<Result<StoredInstance, PacsError>, String>);

/// Sends one archive entry to Orthanc (boxed: a concrete `Send` future for the stream).
fn send_entry(
    pacs: Arc<dyn Pacs>,
    journal: Arc<Journal>,
    prefix: String,
    entry: ApiResult<Entry>,
) -> futures_util::future::BoxFuture<'static, ApiResult<Sent>> {
    async move {
        let entry = entry?;
        let path = format!("{prefix}{}", entry.name);
        Ok(match entry.content {
            EntryContent::Dicom(bytes) => {
                journal.before_store(&bytes).await?;
                (path, Ok(pacs.store_instance(bytes).await))
            }
            EntryContent::Skipped(why) => (path, Err(why)),
        })
    }
    .boxed()
}

/// How much of a spooled DICOM file is read for its study's keys (they come early).
const KEYS_HEAD: u64 = 1 << 20;

/// The first bytes of a spooled file (for its study's keys), and the file rewound.
async fn read_head(file: std::fs::File) -> ApiResult<(Vec<u8>, std::fs::File)> {
    tokio::task::spawn_blocking(move || {
        let mut file = file;
        let mut head = Vec::new();
        (&mut file).take(KEYS_HEAD).read_to_end(&mut head)?;
        file.rewind()?;
        Ok::<_, std::io::Error>((head, file))
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)
}

/// Orthanc's JSON error answers carry a `Message`; show that rather than the whole JSON.
fn orthanc_message(raw: &str) -> String {
    serde_json::from_str::<serde_json::Value>(raw)
        .ok()
        .and_then(|v| v.get("Message").and_then(|m| m.as_str()).map(str::to_string))
        .unwrap_or_else(|| raw.chars().take(200).collect())
}

/// What every ZIP starts with (a local header `PK\x03\x04`, an empty archive's
/// `PK\x05\x06`, a spanned one's `PK\x07\x08`): anything starting so is a ZIP to Cohort.
const ZIP_MAGIC: &[u8] = b"PK";

/// What an entry is, from its name and first bytes.
#[derive(Debug, PartialEq, Eq)]
enum Kind {
    Dicom,
    Zip,
    /// A tar archive, plain or compressed with gzip or Zstandard.
    Tar,
    /// Files that are never DICOM and are expected in archives.
    Junk(&'static str),
    Other(&'static str),
}

const DICOMDIR_SKIPPED: &str = "skipped: DICOMDIR index (the images are imported on their own)";

/// Why a file is skipped from its name alone (macOS metadata, system files, a media's
/// `DICOMDIR` index, which Orthanc refuses), whatever it holds; `None` when its content
/// decides. `cohort import --url` asks this before sending a file, as the server would.
pub fn skipped_by_name(name: &str) -> Option<&'static str> {
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
    if name.starts_with("__MACOSX/") || name.contains("/__MACOSX/") || base.starts_with("._") {
        return Some("skipped: macOS metadata");
    }
    if base == ".DS_Store" || base.eq_ignore_ascii_case("thumbs.db") || base.eq_ignore_ascii_case("desktop.ini") {
        return Some("skipped: system file");
    }
    if base.eq_ignore_ascii_case("DICOMDIR") {
        return Some(DICOMDIR_SKIPPED);
    }
    None
}

fn classify(name: &str, head: &[u8]) -> Kind {
    if let Some(why) = skipped_by_name(name) {
        return Kind::Junk(why);
    }
    // `PK` first: a ZIP can also carry `DICM` at offset 128 (in its first entry's extra
    // field), and Orthanc unzips whatever starts like a ZIP. Such a file is an archive
    // to Cohort, checked and imported entry by entry, never handed over whole.
    if head.starts_with(ZIP_MAGIC) {
        return Kind::Zip;
    }
    let dicom = |head: &[u8]| {
        // A DICOMDIR under another name (or a body without one) is still an index:
        // Orthanc refuses it, and its images come on their own.
        if crate::dicom_keys::media_storage_sop_class(head).as_deref() == Some(crate::dicom_keys::DICOMDIR_SOP_CLASS) {
            Kind::Junk(DICOMDIR_SKIPPED)
        } else {
            Kind::Dicom
        }
    };
    if head.len() >= 132 && &head[128..132] == b"DICM" {
        return dicom(head);
    }
    if tar_compression(head).is_some() {
        return Kind::Tar;
    }
    if starts_with_dicom_element(head) {
        return dicom(head);
    }
    if head.starts_with(b"%PDF") {
        return Kind::Other("skipped: not DICOM: PDF document");
    }
    Kind::Other("skipped: not DICOM (no DICM marker at offset 128, and no DICOM element at the start)")
}

/// The value representations of DICOM PS3.5 (explicit VR files spell one after the tag).
const VRS: [&[u8; 2]; 34] = [
    b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT", b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"PN",
    b"SH", b"SL", b"SQ", b"SS", b"ST", b"SV", b"TM", b"UC", b"UI", b"UL", b"UN", b"UR", b"US", b"UT", b"UV",
];

/// Values longer than this in the first element of a file are not believed (the first
/// elements of groups 0x0002 and 0x0008 are short strings or group lengths).
const FIRST_VALUE_MAX: u32 = 1 << 16;

/// A file without the preamble and `DICM` is still DICOM to Orthanc (DCMTK reads it)
/// when it starts with a data element of group 0x0002 (file meta) or 0x0008 (identifying
/// attributes), little endian, with an explicit VR or an implicit one. The element must
/// be plausible: a known VR, or an even value length below 64 KiB (or undefined, for an
/// implicit-VR sequence).
fn starts_with_dicom_element(head: &[u8]) -> bool {
    if head.len() < 8 {
        return false;
    }
    let group = u16::from_le_bytes([head[0], head[1]]);
    if group != 0x0002 && group != 0x0008 {
        return false;
    }
    let vr = [head[4], head[5]];
    if VRS.iter().any(|known| **known == vr) {
        return true;
    }
    let length = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    length == u32::MAX || (length % 2 == 0 && length < FIRST_VALUE_MAX)
}

/// The name of a ZIP compression method, for an error a user can act on.
fn method_name(code: u16) -> String {
    let name = match code {
        1 => "Shrink",
        2..=5 => "Reduce",
        6 => "Implode",
        10 => "PKWARE DCL Implode",
        12 => "BZIP2",
        14 => "LZMA",
        18 => "IBM TERSE",
        19 => "IBM LZ77",
        20 | 93 => "Zstandard",
        95 => "XZ",
        96 => "JPEG",
        97 => "WavPack",
        98 => "PPMd",
        99 => "AES encryption",
        _ => "an unknown method",
    };
    format!("{name} (method {code})")
}

/// Whether a body is a ZIP or a DICOM file, from its first bytes.
pub fn sniff(head: &[u8]) -> Option<&'static str> {
    match classify("", head) {
        Kind::Dicom => Some("dicom"),
        Kind::Zip => Some("zip"),
        Kind::Tar => Some("tar"),
        _ => None,
    }
}

fn invalid_zip(why: impl std::fmt::Display) -> ApiError {
    ApiError::unprocessable("invalid_zip", format!("the ZIP archive is truncated or corrupt: {why}"))
}

fn zip_error(e: ZipError) -> ApiError {
    match e {
        ZipError::UnsupportedArchive(why) => ApiError::unprocessable("invalid_zip", format!("unsupported ZIP archive: {why}")),
        other => invalid_zip(other),
    }
}

/// The compression methods entries may use (each inflated within the limits).
const SUPPORTED_METHODS: [zip::CompressionMethod; 3] =
    [zip::CompressionMethod::Stored, zip::CompressionMethod::Deflated, zip::CompressionMethod::Deflate64];

/// Running totals shared by an archive and the archive nested in it.
#[derive(Default)]
struct Budget {
    entries: u64,
    inflated: u64,
    /// Where nested archives are spooled.
    spool: SpoolDir,
}

enum Planned {
    Dicom(usize),
    Skip(String),
    Nested(Box<Plan>),
}

struct PlannedEntry {
    name: String,
    what: Planned,
}

/// An archive checked whole, and what to do with each entry.
struct Plan {
    archive: ZipArchive<Reader>,
    entries: Vec<PlannedEntry>,
}

/// Reads archives from a file or memory alike.
enum Reader {
    File(std::fs::File),
    Memory(std::io::Cursor<Bytes>),
}

impl Read for Reader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Reader::File(f) => f.read(buf),
            Reader::Memory(c) => c.read(buf),
        }
    }
}

impl Seek for Reader {
    fn seek(&mut self, pos: std::io::SeekFrom) -> std::io::Result<u64> {
        match self {
            Reader::File(f) => f.seek(pos),
            Reader::Memory(c) => c.seek(pos),
        }
    }
}

/// One entry for the async side.
struct Entry {
    name: String,
    content: EntryContent,
}

enum EntryContent {
    Dicom(Bytes),
    Skipped(String),
}

#[cfg(test)]
fn plan_archive(source: ZipSource, limits: ZipLimits) -> ApiResult<Plan> {
    let reader = match source {
        ZipSource::File(f) => Reader::File(f),
        ZipSource::Memory(b) => Reader::Memory(std::io::Cursor::new(b)),
    };
    let mut budget = Budget::default();
    plan(reader, limits, &mut budget, 0)
}

/// First pass over an archive (blocking): inflates every entry once, within the limits,
/// verifying CRCs; spools a nested archive to a temporary file and checks it too.
fn plan(mut reader: Reader, limits: ZipLimits, budget: &mut Budget, depth: u8) -> ApiResult<Plan> {
    // The entry count the archive declares, read before its central directory is: the
    // directory is parsed (and allocated for) only when the count is within the limit.
    let declared = declared_entries(&mut reader)?;
    if budget.entries.saturating_add(declared) > limits.max_entries {
        return Err(too_many_entries(limits));
    }
    let mut archive = ZipArchive::new(reader).map_err(zip_error)?;
    let mut entries = Vec::with_capacity(archive.len());
    for index in 0..archive.len() {
        // Directory, encryption and method are read from the raw entry first: opening an
        // encrypted entry, or one whose method the reader lacks, fails with an error that
        // names neither the entry nor the method.
        let (is_dir, encrypted, method, name) = {
            let raw = archive.by_index_raw(index).map_err(zip_error)?;
            (raw.is_dir(), raw.encrypted(), raw.compression(), raw.name().to_string())
        };
        if is_dir {
            continue;
        }
        budget.entries += 1;
        if budget.entries > limits.max_entries {
            return Err(too_many_entries(limits));
        }
        if encrypted {
            entries.push(PlannedEntry { name, what: Planned::Skip("skipped: encrypted ZIP entry: re-export without a password".into()) });
            continue;
        }
        if !SUPPORTED_METHODS.contains(&method) {
            #[allow(deprecated)] // the numeric code is what users can look up
            let code = method.to_u16();
            return Err(ApiError::unprocessable(
                "invalid_zip",
                format!("unsupported ZIP archive: {name} is compressed with {}; re-create the archive with Deflate", method_name(code)),
            ));
        }
        let mut file = archive.by_index(index).map_err(zip_error)?;
        let declared = file.size();
        let compressed = file.compressed_size().max(1);
        let ratio_cap = compressed.saturating_mul(limits.max_ratio).max(RATIO_FLOOR);
        if declared > ratio_cap {
            return Err(bomb(&name, limits));
        }
        if budget.inflated.saturating_add(declared) > limits.max_uncompressed {
            return Err(ApiError::too_large(format!("the archive inflates to more than {} bytes", limits.max_uncompressed)));
        }
        // Inflate, keeping only the head (to classify) or, for a nested archive, the
        // whole entry in a temporary file.
        let mut head: Vec<u8> = Vec::with_capacity(132);
        let mut spool: Option<std::fs::File> = None;
        let mut seen: u64 = 0;
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = file.read(&mut buf).map_err(|e| invalid_zip(format!("{name}: {e}")))?;
            if n == 0 {
                break;
            }
            seen += n as u64;
            budget.inflated += n as u64;
            if seen > declared {
                return Err(invalid_zip(format!("{name} inflates to more than its declared size")));
            }
            if seen > ratio_cap {
                return Err(bomb(&name, limits));
            }
            if budget.inflated > limits.max_uncompressed {
                return Err(ApiError::too_large(format!("the archive inflates to more than {} bytes", limits.max_uncompressed)));
            }
            let chunk = &buf[..n];
            if head.len() < 132 {
                let take = (132 - head.len()).min(n);
                head.extend_from_slice(&chunk[..take]);
                if head.len() >= ZIP_MAGIC.len() && head.starts_with(ZIP_MAGIC) && depth == 0 && spool.is_none() {
                    spool = Some(budget.spool.file()?);
                    if let Some(f) = spool.as_mut() {
                        std::io::Write::write_all(f, &head).map_err(ApiError::spool_io)?;
                        std::io::Write::write_all(f, &chunk[take..]).map_err(ApiError::spool_io)?;
                    }
                    continue;
                }
            }
            if let Some(f) = spool.as_mut() {
                std::io::Write::write_all(f, chunk).map_err(ApiError::spool_io)?;
            }
        }
        if seen != declared {
            return Err(invalid_zip(format!("{name} is shorter than its declared size")));
        }
        let what = match classify(&name, &head) {
            Kind::Dicom => Planned::Dicom(index),
            Kind::Junk(why) | Kind::Other(why) => Planned::Skip(why.to_string()),
            Kind::Zip if depth > 0 => Planned::Skip("skipped: ZIP nested more than one level deep".into()),
            Kind::Tar => Planned::Skip("skipped: tar archive inside an archive (import it on its own)".into()),
            Kind::Zip => {
                let mut f = spool.take().ok_or_else(|| ApiError::internal("nested archive was not spooled"))?;
                f.rewind().map_err(ApiError::internal)?;
                let inner = plan(Reader::File(f), limits, budget, depth + 1).map_err(|e| {
                    if e.code == "invalid_zip" {
                        invalid_zip(format!("nested archive {name}: {}", e.message))
                    } else {
                        e
                    }
                })?;
                Planned::Nested(Box::new(inner))
            }
        };
        entries.push(PlannedEntry { name, what });
    }
    Ok(Plan { archive, entries })
}

fn too_many_entries(limits: ZipLimits) -> ApiError {
    ApiError::too_large(format!("the archive has more than {} entries", limits.max_entries))
}

/// End of central directory: signature, then the entry count at offset 10 (u16).
const EOCD_SIGNATURE: &[u8; 4] = b"PK\x05\x06";
const EOCD_LEN: usize = 22;
/// The ZIP64 locator (20 bytes, just before the EOCD) points at the ZIP64 EOCD, whose
/// entry count is a u64 at offset 32.
const ZIP64_LOCATOR_SIGNATURE: &[u8; 4] = b"PK\x06\x07";
const ZIP64_LOCATOR_LEN: u64 = 20;
const ZIP64_EOCD_SIGNATURE: &[u8; 4] = b"PK\x06\x06";

/// How many entries (directories included) an archive says it holds, from its
/// end-of-central-directory record (or the ZIP64 one), without reading the central
/// directory itself. Leaves the reader at the start.
fn declared_entries<R: Read + Seek>(reader: &mut R) -> ApiResult<u64> {
    use std::io::SeekFrom;
    let io = |e: std::io::Error| invalid_zip(e);
    let len = reader.seek(SeekFrom::End(0)).map_err(io)?;
    // The record is the last thing in the file, followed by a comment of up to 64 KiB.
    let tail_len = len.min((EOCD_LEN + u16::MAX as usize) as u64);
    let tail_start = len - tail_len;
    reader.seek(SeekFrom::Start(tail_start)).map_err(io)?;
    let mut tail = vec![0u8; tail_len as usize];
    reader.read_exact(&mut tail).map_err(io)?;
    let at = (0..=tail.len().saturating_sub(EOCD_LEN))
        .rev()
        .find(|&i| tail.len() >= i + EOCD_LEN && &tail[i..i + 4] == EOCD_SIGNATURE)
        .ok_or_else(|| invalid_zip("no end of central directory record"))?;
    let u16_at = |i: usize| u64::from(u16::from_le_bytes([tail[at + i], tail[at + i + 1]]));
    let mut entries = u16_at(10).max(u16_at(8));
    let eocd_offset = tail_start + at as u64;
    if entries == u64::from(u16::MAX) && eocd_offset >= ZIP64_LOCATOR_LEN {
        // ZIP64: the real count is in the ZIP64 record the locator points at.
        let mut locator = [0u8; ZIP64_LOCATOR_LEN as usize];
        reader.seek(SeekFrom::Start(eocd_offset - ZIP64_LOCATOR_LEN)).map_err(io)?;
        reader.read_exact(&mut locator).map_err(io)?;
        if &locator[..4] == ZIP64_LOCATOR_SIGNATURE {
            let offset = u64::from_le_bytes(locator[8..16].try_into().map_err(io_bytes)?);
            let mut record = [0u8; 56];
            reader.seek(SeekFrom::Start(offset)).map_err(io)?;
            reader.read_exact(&mut record).map_err(|_| invalid_zip("the ZIP64 end of central directory is out of the file"))?;
            if &record[..4] != ZIP64_EOCD_SIGNATURE {
                return Err(invalid_zip("the ZIP64 end of central directory record is missing"));
            }
            entries = u64::from_le_bytes(record[32..40].try_into().map_err(io_bytes)?);
        }
    }
    reader.seek(SeekFrom::Start(0)).map_err(io)?;
    Ok(entries)
}

fn io_bytes(e: std::array::TryFromSliceError) -> ApiError {
    ApiError::internal(e)
}

fn bomb(name: &str, limits: ZipLimits) -> ApiError {
    ApiError::unprocessable("zip_bomb", format!("{name} inflates more than {} times its compressed size; refused", limits.max_ratio))
}

impl Plan {
    /// Second pass (blocking): sends each entry, the DICOM ones read whole, to the
    /// importer; stops when the importer hangs up.
    fn send_entries(mut self, tx: &tokio::sync::mpsc::Sender<ApiResult<Entry>>) {
        self.send_with_prefix("", tx);
    }

    fn send_with_prefix(&mut self, prefix: &str, tx: &tokio::sync::mpsc::Sender<ApiResult<Entry>>) -> bool {
        let entries = std::mem::take(&mut self.entries);
        for entry in entries {
            let name = format!("{prefix}{}", entry.name);
            let item = match entry.what {
                Planned::Skip(why) => Ok(Entry { name, content: EntryContent::Skipped(why) }),
                Planned::Dicom(index) => read_entry(&mut self.archive, index).map(|b| Entry { name, content: EntryContent::Dicom(b) }),
                Planned::Nested(mut inner) => {
                    if !inner.send_with_prefix(&format!("{name}/"), tx) {
                        return false;
                    }
                    continue;
                }
            };
            let failed = item.is_err();
            if tx.blocking_send(item).is_err() || failed {
                return false;
            }
        }
        true
    }
}

fn read_entry(archive: &mut ZipArchive<Reader>, index: usize) -> ApiResult<Bytes> {
    let mut file = archive.by_index(index).map_err(zip_error)?;
    let declared = file.size();
    let mut out = Vec::with_capacity(usize::try_from(declared).unwrap_or(0).min(1 << 30));
    // The first pass proved the size; the limit guards against the file changing under us.
    (&mut file).take(declared).read_to_end(&mut out).map_err(|e| invalid_zip(e.to_string()))?;
    Ok(Bytes::from(out))
}

// ---------------------------------------------------------------------------------------
// tar, tar.gz and tar.zst archives: the same two passes as a ZIP. The first decompresses
// the whole archive once, within the limits (entry count, total inflated size, ratio of
// inflated to compressed bytes, each checked while inflating), classifying each entry by
// its first bytes; the second decompresses it again and sends the DICOM entries. Entry
// names are only reported; links, devices, FIFOs and absolute or `..` names are skipped.
// ---------------------------------------------------------------------------------------

/// How a tar archive is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TarCompression {
    None,
    Gzip,
    Zstd,
}

/// What the first bytes say: gzip (1f 8b), Zstandard (28 b5 2f fd), or `ustar` at 257.
fn tar_compression(head: &[u8]) -> Option<TarCompression> {
    if head.starts_with(&[0x1f, 0x8b]) {
        Some(TarCompression::Gzip)
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some(TarCompression::Zstd)
    } else if head.len() >= 262 && &head[257..262] == b"ustar" {
        Some(TarCompression::None)
    } else {
        None
    }
}

/// How many first bytes `sniff` needs to see a plain tar (`ustar` at offset 257).
pub const SNIFF_LEN: usize = 262;

fn invalid_tar(why: impl std::fmt::Display) -> ApiError {
    ApiError::unprocessable("invalid_archive", format!("the tar archive is truncated or corrupt: {why}"))
}

/// A limit broken while decompressing (the reader's error only says "stop").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Breach {
    None,
    Total,
    Ratio,
}

/// The decompressed tar stream, counted: every byte read (headers, data, padding) is
/// checked against the total and ratio limits as it is read.
struct Counted<R> {
    inner: R,
    inflated: std::rc::Rc<std::cell::Cell<u64>>,
    breach: std::rc::Rc<std::cell::Cell<Breach>>,
    max_total: u64,
    ratio_cap: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let total = self.inflated.get() + n as u64;
        self.inflated.set(total);
        let breach = if total > self.max_total {
            Breach::Total
        } else if total > self.ratio_cap {
            Breach::Ratio
        } else {
            Breach::None
        };
        if breach != Breach::None {
            self.breach.set(breach);
            return Err(std::io::Error::other("archive limit exceeded"));
        }
        Ok(n)
    }
}

/// A tar archive's decompressed stream, counted.
struct TarStream {
    archive: tar::Archive<Counted<Box<dyn Read>>>,
    inflated: std::rc::Rc<std::cell::Cell<u64>>,
    breach: std::rc::Rc<std::cell::Cell<Breach>>,
    limits: ZipLimits,
}

impl TarStream {
    fn open(mut reader: Reader, compression: TarCompression, limits: ZipLimits, inflated: u64) -> ApiResult<Self> {
        let compressed = reader.seek(std::io::SeekFrom::End(0)).map_err(ApiError::internal)?;
        reader.rewind().map_err(ApiError::internal)?;
        let inner: Box<dyn Read> = match compression {
            TarCompression::None => Box::new(reader),
            TarCompression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(reader)),
            TarCompression::Zstd => {
                Box::new(ruzstd::decoding::StreamingDecoder::new(reader).map_err(|e| invalid_tar(format!("Zstandard: {e}")))?)
            }
        };
        let inflated = std::rc::Rc::new(std::cell::Cell::new(inflated));
        let breach = std::rc::Rc::new(std::cell::Cell::new(Breach::None));
        // A plain tar is its own size; a compressed one may inflate `max_ratio` times.
        let ratio_cap =
            if compression == TarCompression::None { u64::MAX } else { compressed.saturating_mul(limits.max_ratio).max(RATIO_FLOOR) };
        let counted = Counted { inner, inflated: inflated.clone(), breach: breach.clone(), max_total: limits.max_uncompressed, ratio_cap };
        Ok(TarStream { archive: tar::Archive::new(counted), inflated, breach, limits })
    }

    /// The error for a failed read: a broken limit, else a corrupt archive.
    fn error(&self, e: impl std::fmt::Display) -> ApiError {
        tar_error(self.breach.get(), self.limits, e)
    }
}

fn tar_error(breach: Breach, limits: ZipLimits, e: impl std::fmt::Display) -> ApiError {
    match breach {
        Breach::Total => ApiError::too_large(format!("the archive inflates to more than {} bytes", limits.max_uncompressed)),
        Breach::Ratio => ApiError::unprocessable(
            "zip_bomb",
            format!("the archive inflates more than {} times its compressed size; refused", limits.max_ratio),
        ),
        Breach::None => invalid_tar(e),
    }
}

/// Why a tar entry is not read, or `None` for a regular file with a safe name.
fn tar_refusal(kind: tar::EntryType, name: &str) -> Option<&'static str> {
    use tar::EntryType as T;
    match kind {
        T::Regular | T::Continuous => {}
        T::Symlink => return Some("skipped: symbolic link (links are not followed; archive the file itself)"),
        T::Link => return Some("skipped: hard link (links are not followed; archive the file itself)"),
        T::Char | T::Block => return Some("skipped: device file"),
        T::Fifo => return Some("skipped: FIFO"),
        T::GNUSparse => return Some("skipped: sparse file (archive it without --sparse)"),
        _ => return Some("skipped: not a regular file"),
    }
    if name.starts_with('/') || name.starts_with('\\') || name.split(['/', '\\']).any(|part| part == "..") {
        return Some("skipped: absolute name or `..` in the name (entry names must stay inside the archive)");
    }
    None
}

struct TarPlanned {
    name: String,
    what: Planned,
}

/// A tar archive checked whole, and what to do with each entry.
struct TarPlan {
    reader: Reader,
    compression: TarCompression,
    limits: ZipLimits,
    entries: Vec<TarPlanned>,
}

/// Any archive, checked whole.
enum ArchivePlan {
    Zip(Plan),
    Tar(TarPlan),
}

impl ArchivePlan {
    fn send_entries(self, tx: &tokio::sync::mpsc::Sender<ApiResult<Entry>>) {
        match self {
            ArchivePlan::Zip(plan) => plan.send_entries(tx),
            ArchivePlan::Tar(plan) => {
                if let Err(e) = plan.send_entries(tx) {
                    let _ = tx.blocking_send(Err(e));
                }
            }
        }
    }
}

/// Plans a ZIP or a tar archive, told apart by their first bytes.
fn plan_any(source: ZipSource, limits: ZipLimits, spool: SpoolDir) -> ApiResult<ArchivePlan> {
    let mut reader = match source {
        ZipSource::File(f) => Reader::File(f),
        ZipSource::Memory(b) => Reader::Memory(std::io::Cursor::new(b)),
    };
    let mut head = Vec::with_capacity(SNIFF_LEN);
    (&mut reader).take(SNIFF_LEN as u64).read_to_end(&mut head).map_err(ApiError::internal)?;
    reader.rewind().map_err(ApiError::internal)?;
    match (head.starts_with(ZIP_MAGIC), tar_compression(&head)) {
        (false, Some(compression)) => plan_tar(reader, compression, limits, spool).map(ArchivePlan::Tar),
        _ => plan(reader, limits, &mut Budget { spool, ..Budget::default() }, 0).map(ArchivePlan::Zip),
    }
}

/// First pass over a tar archive (blocking).
fn plan_tar(reader: Reader, compression: TarCompression, limits: ZipLimits, spool: SpoolDir) -> ApiResult<TarPlan> {
    let reader = match reader {
        Reader::File(f) => {
            let f2 = f.try_clone().map_err(ApiError::internal)?;
            (Reader::File(f), Reader::File(f2))
        }
        Reader::Memory(c) => (Reader::Memory(std::io::Cursor::new(c.get_ref().clone())), Reader::Memory(c)),
    };
    let (first, second) = reader;
    let mut stream = TarStream::open(first, compression, limits, 0)?;
    let mut budget = Budget { spool, ..Budget::default() };
    let mut entries = Vec::new();
    let iter = stream.archive.entries().map_err(invalid_tar)?;
    let mut failure: Option<String> = None;
    let mut nested: Vec<(usize, String, std::fs::File)> = Vec::new();
    for (ordinal, entry) in iter.enumerate() {
        let mut entry = match entry {
            Ok(e) => e,
            Err(e) => {
                failure = Some(e.to_string());
                break;
            }
        };
        let kind = entry.header().entry_type();
        if kind == tar::EntryType::Directory {
            continue;
        }
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        budget.entries += 1;
        if budget.entries > limits.max_entries {
            return Err(too_many_entries(limits));
        }
        if let Some(why) = tar_refusal(kind, &name) {
            entries.push(TarPlanned { name, what: Planned::Skip(why.to_string()) });
            continue;
        }
        // Read the head to classify; spool a nested ZIP whole; the rest is read (and
        // counted) as the archive moves on.
        let mut head = Vec::with_capacity(132);
        if let Err(e) = (&mut entry).take(132).read_to_end(&mut head) {
            failure = Some(format!("{name}: {e}"));
            break;
        }
        let what = match classify(&name, &head) {
            Kind::Dicom => Planned::Dicom(ordinal),
            Kind::Junk(why) | Kind::Other(why) => Planned::Skip(why.to_string()),
            Kind::Tar => Planned::Skip("skipped: tar archive inside an archive (import it on its own)".into()),
            Kind::Zip => {
                let mut f = budget.spool.file()?;
                std::io::Write::write_all(&mut f, &head).map_err(ApiError::spool_io)?;
                if let Err(e) = std::io::copy(&mut entry, &mut f) {
                    if crate::store::io_storage_full(&e) {
                        return Err(ApiError::spool_io(e));
                    }
                    failure = Some(format!("{name}: {e}"));
                    break;
                }
                nested.push((entries.len(), name.clone(), f));
                Planned::Skip(String::new())
            }
        };
        entries.push(TarPlanned { name, what });
    }
    if let Some(why) = failure {
        return Err(stream.error(why));
    }
    // The rest of the stream (end blocks, gzip's CRC) is read too: a corrupt tail is found now.
    let mut rest = stream.archive.into_inner();
    if let Err(e) = std::io::copy(&mut rest, &mut std::io::sink()) {
        return Err(tar_error(stream.breach.get(), limits, e));
    }
    // Nested ZIPs are checked after the tar itself, sharing its budget.
    budget.inflated = stream.inflated.get();
    for (at, name, mut f) in nested {
        f.rewind().map_err(ApiError::internal)?;
        let inner = plan(Reader::File(f), limits, &mut budget, 1).map_err(|e| {
            if e.code == "invalid_zip" {
                invalid_zip(format!("nested archive {name}: {}", e.message))
            } else {
                e
            }
        })?;
        entries[at].what = Planned::Nested(Box::new(inner));
    }
    Ok(TarPlan { reader: second, compression, limits, entries })
}

impl TarPlan {
    /// Second pass (blocking): decompresses the archive again and sends each entry.
    fn send_entries(mut self, tx: &tokio::sync::mpsc::Sender<ApiResult<Entry>>) -> ApiResult<()> {
        // The first pass proved the limits; they still guard against the file changing.
        let mut stream = TarStream::open(self.reader, self.compression, self.limits, 0)?;
        let breach = stream.breach.clone();
        let limits = self.limits;
        let fail = |e: std::io::Error| tar_error(breach.get(), limits, e);
        let mut iter = stream.archive.entries().map_err(fail)?.enumerate();
        for planned in std::mem::take(&mut self.entries) {
            let item = match planned.what {
                Planned::Skip(why) => Ok(Entry { name: planned.name, content: EntryContent::Skipped(why) }),
                Planned::Nested(mut inner) => {
                    if !inner.send_with_prefix(&format!("{}/", planned.name), tx) {
                        return Ok(());
                    }
                    continue;
                }
                Planned::Dicom(ordinal) => {
                    let mut found = None;
                    for (at, entry) in iter.by_ref() {
                        let entry = entry.map_err(fail)?;
                        if at == ordinal {
                            found = Some(entry);
                            break;
                        }
                    }
                    let mut entry = found.ok_or_else(|| invalid_tar("the archive changed between the two passes"))?;
                    let size = entry.size();
                    let mut out = Vec::with_capacity(usize::try_from(size).unwrap_or(0).min(1 << 30));
                    (&mut entry).take(size).read_to_end(&mut out).map_err(fail)?;
                    Ok(Entry { name: planned.name, content: EntryContent::Dicom(Bytes::from(out)) })
                }
            };
            if tx.blocking_send(item).is_err() {
                return Ok(());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn dicom_like(body: &[u8]) -> Vec<u8> {
        let mut v = vec![0u8; 128];
        v.extend_from_slice(b"DICM");
        v.extend_from_slice(body);
        v
    }

    fn zip_of(entries: &[(&str, Vec<u8>)], method: zip::CompressionMethod) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        for (name, data) in entries {
            w.start_file(*name, zip::write::SimpleFileOptions::default().compression_method(method)).expect("start");
            w.write_all(data).expect("write");
        }
        w.finish().expect("finish").into_inner()
    }

    const LIMITS: ZipLimits = ZipLimits { max_entries: 10, max_uncompressed: 1 << 30, max_ratio: 100 };

    fn planned(bytes: Vec<u8>, limits: ZipLimits) -> ApiResult<Vec<(String, &'static str)>> {
        let plan = plan_archive(ZipSource::Memory(Bytes::from(bytes)), limits)?;
        fn walk(p: &Plan, prefix: &str, out: &mut Vec<(String, &'static str)>) {
            for e in &p.entries {
                let name = format!("{prefix}{}", e.name);
                match &e.what {
                    Planned::Dicom(_) => out.push((name, "dicom")),
                    Planned::Skip(_) => out.push((name, "skip")),
                    Planned::Nested(inner) => walk(inner, &format!("{name}/"), out),
                }
            }
        }
        let mut out = Vec::new();
        walk(&plan, "", &mut out);
        Ok(out)
    }

    #[test]
    fn entries_are_classified_and_nesting_stops_at_one_level() {
        let deep = zip_of(&[("deep.dcm", dicom_like(b"x"))], zip::CompressionMethod::Stored);
        let inner = zip_of(&[("a.dcm", dicom_like(b"a")), ("deeper.zip", deep)], zip::CompressionMethod::Deflated);
        let outer = zip_of(
            &[
                ("one.dcm", dicom_like(b"1")),
                ("__MACOSX/._one.dcm", b"junk".to_vec()),
                ("DICOMDIR", dicom_like(b"dir")),
                ("report.pdf", b"%PDF-1.4".to_vec()),
                ("inner.zip", inner),
                ("../../evil.dcm", dicom_like(b"e")),
            ],
            zip::CompressionMethod::Deflated,
        );
        let got = planned(outer, LIMITS).expect("valid archive");
        let expect: Vec<(String, &str)> = [
            ("one.dcm", "dicom"),
            ("__MACOSX/._one.dcm", "skip"),
            ("DICOMDIR", "skip"),
            ("report.pdf", "skip"),
            ("inner.zip/a.dcm", "dicom"),
            ("inner.zip/deeper.zip", "skip"),
            ("../../evil.dcm", "dicom"),
        ]
        .iter()
        .map(|(n, k)| (n.to_string(), *k))
        .collect();
        assert_eq!(got, expect);
    }

    #[test]
    fn truncated_and_corrupt_archives_are_refused_whole() {
        let good = zip_of(&[("a.dcm", dicom_like(&[7u8; 5000])), ("b.dcm", dicom_like(&[9u8; 5000]))], zip::CompressionMethod::Deflated);
        let truncated = good[..good.len() / 2].to_vec();
        assert_eq!(planned(truncated, LIMITS).expect_err("truncated").code, "invalid_zip");
        let stored = zip_of(&[("a.dcm", dicom_like(&[7u8; 5000]))], zip::CompressionMethod::Stored);
        let mut corrupt = stored.clone();
        corrupt[30 + "a.dcm".len() + 2000] ^= 0xff;
        assert_eq!(planned(corrupt, LIMITS).expect_err("crc").code, "invalid_zip");
    }

    #[test]
    fn limits_stop_reading_at_once() {
        let many: Vec<(String, Vec<u8>)> = (0..11).map(|i| (format!("{i}.dcm"), dicom_like(b"x"))).collect();
        let many: Vec<(&str, Vec<u8>)> = many.iter().map(|(n, d)| (n.as_str(), d.clone())).collect();
        let e = planned(zip_of(&many, zip::CompressionMethod::Stored), LIMITS).expect_err("too many entries");
        assert_eq!((e.status.as_u16(), e.code), (413, "too_large"));

        let zeros = vec![0u8; 4 << 20];
        let e = planned(zip_of(&[("zeros.dcm", zeros.clone())], zip::CompressionMethod::Deflated), LIMITS).expect_err("ratio");
        assert_eq!((e.status.as_u16(), e.code), (422, "zip_bomb"));

        let small = ZipLimits { max_uncompressed: 1 << 20, max_ratio: 100_000, ..LIMITS };
        let e = planned(zip_of(&[("zeros.dcm", zeros)], zip::CompressionMethod::Deflated), small).expect_err("total size");
        assert_eq!((e.status.as_u16(), e.code), (413, "too_large"));
    }

    #[test]
    fn the_entry_count_is_read_before_the_central_directory() {
        let entries: Vec<(String, Vec<u8>)> = (0..11).map(|i| (format!("{i}.dcm"), dicom_like(b"x"))).collect();
        let entries: Vec<(&str, Vec<u8>)> = entries.iter().map(|(n, d)| (n.as_str(), d.clone())).collect();
        let bytes = zip_of(&entries, zip::CompressionMethod::Stored);
        assert_eq!(declared_entries(&mut std::io::Cursor::new(&bytes)).expect("count"), 11);
        // A central directory that would not even parse is refused for its count alone.
        let mut forged = bytes.clone();
        let eocd = forged.len() - EOCD_LEN;
        forged[eocd + 8..eocd + 12].copy_from_slice(&[0xfe, 0xff, 0xfe, 0xff]);
        forged[eocd + 12..eocd + 16].copy_from_slice(&u32::MAX.to_le_bytes());
        let e = planned(forged, LIMITS).expect_err("too many entries declared");
        assert_eq!((e.status.as_u16(), e.code), (413, "too_large"));
        // ZIP64 archives are read through their ZIP64 record.
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        for i in 0..3 {
            let options = zip::write::SimpleFileOptions::default().large_file(true);
            w.start_file(format!("{i}.dcm"), options).expect("start");
            std::io::Write::write_all(&mut w, &dicom_like(b"x")).expect("write");
        }
        let zip64 = w.finish().expect("finish").into_inner();
        assert_eq!(declared_entries(&mut std::io::Cursor::new(&zip64)).expect("count"), 3);
        assert_eq!(planned(b"not a zip at all".to_vec(), LIMITS).expect_err("no EOCD").code, "invalid_zip");
    }

    #[test]
    fn a_zip_that_also_looks_like_dicom_is_a_zip() {
        // A stored ZIP whose first entry's extra field puts DICM at offset 128.
        let mut crafted = b"PK\x03\x04".to_vec();
        crafted.resize(128, 0);
        crafted.extend_from_slice(b"DICM");
        assert_eq!(classify("upload", &crafted), Kind::Zip);
        assert_eq!(sniff(&crafted), Some("zip"));
        assert_eq!(classify("x.dcm", b"PK\x05\x06"), Kind::Zip);
    }

    /// Rewrites every entry's compression method (local header and central directory).
    fn relabel(mut bytes: Vec<u8>, method: u16) -> Vec<u8> {
        let offsets: Vec<(u64, u64)> = {
            let mut archive = ZipArchive::new(std::io::Cursor::new(bytes.clone())).expect("archive");
            (0..archive.len())
                .map(|i| {
                    let f = archive.by_index_raw(i).expect("entry");
                    (f.header_start(), f.central_header_start())
                })
                .collect()
        };
        for (local, central) in offsets {
            let (local, central) = (local as usize, central as usize);
            bytes[local + 8..local + 10].copy_from_slice(&method.to_le_bytes());
            bytes[central + 10..central + 12].copy_from_slice(&method.to_le_bytes());
        }
        bytes
    }

    /// Data that deflates well without a match of 258 bytes: the one length code
    /// Deflate64 reads differently (16 extra bits), so its Deflate stream is a valid
    /// Deflate64 stream too.
    fn compressible(len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len);
        let mut line = 0u32;
        while out.len() < len {
            out.extend_from_slice(&[0u8; 240]);
            let c = [(line % 251) as u8 + 1, (line / 251 % 251) as u8 + 1, (line / 63001 % 251) as u8 + 1];
            out.extend_from_slice(&c);
            line += 1;
        }
        out.truncate(len);
        out
    }

    #[test]
    fn deflate64_entries_are_read_within_the_limits() {
        let dicom = dicom_like(&compressible(200_000));
        let deflated = zip_of(&[("a.dcm", dicom.clone()), ("b.dcm", dicom)], zip::CompressionMethod::Deflated);
        let got = planned(relabel(deflated, 9), LIMITS).expect("a Deflate64 archive");
        assert_eq!(got, vec![("a.dcm".to_string(), "dicom"), ("b.dcm".to_string(), "dicom")]);

        let big = relabel(zip_of(&[("big.dcm", compressible(4 << 20))], zip::CompressionMethod::Deflated), 9);
        let ratio = ZipLimits { max_ratio: 10, ..LIMITS };
        let e = planned(big.clone(), ratio).expect_err("ratio");
        assert_eq!((e.status.as_u16(), e.code), (422, "zip_bomb"));
        let small = ZipLimits { max_uncompressed: 1 << 20, ..LIMITS };
        let e = planned(big, small).expect_err("total size");
        assert_eq!((e.status.as_u16(), e.code), (413, "too_large"));
    }

    #[test]
    fn an_unsupported_method_is_named() {
        let lzma = relabel(zip_of(&[("scan/IM0001", dicom_like(b"x"))], zip::CompressionMethod::Stored), 14);
        let e = planned(lzma, LIMITS).expect_err("LZMA");
        assert_eq!((e.status.as_u16(), e.code), (422, "invalid_zip"));
        assert!(e.message.contains("scan/IM0001 is compressed with LZMA (method 14)"), "{}", e.message);
    }

    #[test]
    fn a_dicomdir_is_known_by_its_media_storage_class() {
        let meta = |class: &str| {
            let mut f = vec![0u8; 128];
            f.extend_from_slice(b"DICM\x02\x00\x01\x00OB\x00\x00\x02\x00\x00\x00\x00\x01\x02\x00\x02\x00UI");
            f.extend_from_slice(&(class.len() as u16).to_le_bytes());
            f.extend_from_slice(class.as_bytes());
            f
        };
        assert_eq!(classify("upload", &meta("1.2.840.10008.1.3.10")), Kind::Junk(DICOMDIR_SKIPPED));
        assert_eq!(classify("upload", &meta("1.2.840.10008.5.1.4.1.1.2\0")), Kind::Dicom);
        // A head too short to reach the class is DICOM as before.
        assert_eq!(classify("upload", &meta("1.2.840.10008.1.3.10")[..140]), Kind::Dicom);
    }

    #[test]
    fn dicom_without_a_preamble_is_dicom() {
        // Implicit VR: (0008,0005) length 10 "ISO_IR 100", as pydicom's rtstruct.dcm starts.
        let implicit = b"\x08\x00\x05\x00\x0a\x00\x00\x00ISO_IR 100";
        assert_eq!(classify("IM0001", implicit), Kind::Dicom);
        // Explicit VR file meta: (0002,0000) UL 4.
        let explicit = b"\x02\x00\x00\x00UL\x04\x00\xc8\x00\x00\x00";
        assert_eq!(classify("IM0002", explicit), Kind::Dicom);
        assert_eq!(sniff(explicit), Some("dicom"));
        // Other groups, odd or huge lengths, and short heads are not.
        assert!(matches!(classify("x", b"\x10\x00\x10\x00PN\x04\x00Doe^"), Kind::Other(_)));
        assert!(matches!(classify("x", b"\x08\x00\x05\x00\x0b\x00\x00\x00ISO_IR 100"), Kind::Other(_)));
        assert!(matches!(classify("x", b"\x08\x00\x05\x00\x00\x00\x10\x00"), Kind::Other(_)));
        assert!(matches!(classify("x", b"\x08\x00"), Kind::Other(_)));
        assert!(matches!(classify("x", b"hello world, plain text"), Kind::Other(_)));
    }

    fn tar_of(entries: &[(&str, tar::EntryType, Vec<u8>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, data) in entries {
            let mut h = tar::Header::new_gnu();
            // Written raw: `set_path` refuses the absolute and `..` names under test.
            h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            h.set_entry_type(*kind);
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append(&h, data.as_slice()).expect("append");
        }
        b.into_inner().expect("finish")
    }

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).expect("gzip");
        e.finish().expect("gzip")
    }

    fn tar_planned(bytes: Vec<u8>, limits: ZipLimits) -> ApiResult<Vec<(String, &'static str)>> {
        match plan_any(ZipSource::Memory(Bytes::from(bytes)), limits, SpoolDir::default())? {
            ArchivePlan::Tar(p) => {
                Ok(p.entries.iter().map(|e| (e.name.clone(), if matches!(e.what, Planned::Dicom(_)) { "dicom" } else { "skip" })).collect())
            }
            ArchivePlan::Zip(_) => panic!("planned as a ZIP"),
        }
    }

    #[test]
    fn tar_entries_are_classified_and_hostile_ones_skipped() {
        use tar::EntryType as T;
        let plain = tar_of(&[
            ("a/IM1", T::Regular, dicom_like(b"1")),
            ("link.dcm", T::Symlink, Vec::new()),
            ("/abs.dcm", T::Regular, dicom_like(b"2")),
            ("x/../../evil.dcm", T::Regular, dicom_like(b"3")),
            ("dev", T::Char, Vec::new()),
            ("notes.txt", T::Regular, b"hello".to_vec()),
        ]);
        assert_eq!(sniff(&plain[..SNIFF_LEN]), Some("tar"));
        let expect: Vec<(String, &str)> = [
            ("a/IM1", "dicom"),
            ("link.dcm", "skip"),
            ("/abs.dcm", "skip"),
            ("x/../../evil.dcm", "skip"),
            ("dev", "skip"),
            ("notes.txt", "skip"),
        ]
        .iter()
        .map(|(n, k)| (n.to_string(), *k))
        .collect();
        assert_eq!(tar_planned(plain.clone(), LIMITS).expect("plain tar"), expect);
        let tgz = gz(&plain);
        assert_eq!(sniff(&tgz), Some("tar"));
        assert_eq!(tar_planned(tgz.clone(), LIMITS).expect("tgz"), expect);
        let e = tar_planned(tgz[..tgz.len() - 6].to_vec(), LIMITS).expect_err("truncated");
        assert_eq!((e.status.as_u16(), e.code), (422, "invalid_archive"));
    }

    #[test]
    fn tar_limits_stop_reading_at_once() {
        use tar::EntryType as T;
        let many: Vec<(String, tar::EntryType, Vec<u8>)> = (0..11).map(|i| (format!("{i}.dcm"), T::Regular, dicom_like(b"x"))).collect();
        let many: Vec<(&str, tar::EntryType, Vec<u8>)> = many.iter().map(|(n, k, d)| (n.as_str(), *k, d.clone())).collect();
        let e = tar_planned(tar_of(&many), LIMITS).expect_err("too many entries");
        assert_eq!((e.status.as_u16(), e.code), (413, "too_large"));
        let bomb = gz(&tar_of(&[("zeros", T::Regular, vec![0u8; 4 << 20])]));
        let e = tar_planned(bomb.clone(), LIMITS).expect_err("ratio");
        assert_eq!((e.status.as_u16(), e.code), (422, "zip_bomb"));
        let small = ZipLimits { max_uncompressed: 1 << 20, max_ratio: 100_000, ..LIMITS };
        let e = tar_planned(bomb, small).expect_err("total size");
        assert_eq!((e.status.as_u16(), e.code), (413, "too_large"));
    }

    #[test]
    fn bodies_are_sniffed() {
        assert_eq!(sniff(&dicom_like(b"")), Some("dicom"));
        assert_eq!(sniff(b"PK\x03\x04rest"), Some("zip"));
        assert_eq!(sniff(b"%PDF-1.7"), None);
        assert_eq!(sniff(b""), None);
    }
}
