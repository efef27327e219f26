//! The DICOM store behind one trait. Both hosts talk to Orthanc's REST API — the
//! sidecar over HTTP, the plugin in-process through the SDK — so the REST knowledge
//! (which routes, which JSON) lives here once, in [`OrthancPacs`], over a small
//! [`Transport`] each host implements.

use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::Stream;
use serde::Deserialize;
use serde_json::Value;

use crate::error::ApiError;

pub mod stored;

/// What can go wrong talking to the DICOM store.
#[derive(Debug, Clone, thiserror::Error)]
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
            PacsError::Unavailable(cause) | PacsError::Protocol(cause) => ApiError::unavailable("orthanc_unavailable", cause),
            PacsError::NotFound => ApiError::not_found("DICOM resource"),
            PacsError::Rejected { message, .. } => ApiError::unprocessable("orthanc_rejected", message),
        }
    }
}

pub type PacsResult<T> = Result<T, PacsError>;

/// A body that arrives in chunks.
pub type ByteStream = Pin<Box<dyn Stream<Item = PacsResult<Bytes>> + Send>>;

/// A DICOM file on its way out of Orthanc.
pub struct DicomFile {
    /// Its size when known in advance (Content-Length).
    pub size: Option<u64>,
    pub body: ByteStream,
}

impl std::fmt::Debug for DicomFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DicomFile").field("size", &self.size).finish_non_exhaustive()
    }
}

impl DicomFile {
    /// A file already in memory.
    pub fn from_bytes(bytes: Bytes) -> DicomFile {
        DicomFile { size: Some(bytes.len() as u64), body: Box::pin(futures_util::stream::once(async move { Ok(bytes) })) }
    }

    /// Reads the whole file into memory.
    pub async fn collect(mut self) -> PacsResult<Bytes> {
        use futures_util::StreamExt;
        let mut buf = bytes::BytesMut::with_capacity(self.size.unwrap_or(0).min(1 << 30) as usize);
        while let Some(chunk) = self.body.next().await {
            buf.extend_from_slice(&chunk?);
        }
        Ok(buf.freeze())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreStatus {
    Stored,
    AlreadyStored,
}

/// Where Orthanc put an instance it accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredInstance {
    pub instance_id: String,
    pub patient_id: String,
    pub study_id: String,
    pub series_id: String,
    pub status: StoreStatus,
}

/// The patient-level tags Orthanc keeps for a study (decoded to UTF-8 by Orthanc).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PatientTags {
    pub patient_id: String,
    /// DICOM PN: `Family^Given^Middle^Prefix^Suffix`.
    pub patient_name: Option<String>,
    /// DICOM DA: `YYYYMMDD`.
    pub birth_date: Option<String>,
}

/// One instance of a study.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceInfo {
    pub orthanc_id: String,
    pub orthanc_series_id: String,
    pub sop_instance_uid: String,
    pub series_instance_uid: String,
    pub instance_number: Option<i64>,
    pub modality: Option<String>,
}

/// A study as the registry needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StudyInfo {
    pub orthanc_id: String,
    pub orthanc_patient_id: String,
    pub patient: PatientTags,
    pub study_instance_uid: String,
    /// DICOM DA: `YYYYMMDD`.
    pub study_date: Option<String>,
    pub description: Option<String>,
    pub instances: Vec<InstanceInfo>,
}

impl StudyInfo {
    /// Distinct modalities, sorted.
    pub fn modalities(&self) -> Vec<String> {
        let set: std::collections::BTreeSet<String> = self.instances.iter().filter_map(|i| i.modality.clone()).collect();
        set.into_iter().collect()
    }
}

/// One entry of Orthanc's change log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub seq: i64,
    pub change_type: String,
    pub resource_type: String,
    pub resource_id: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangesPage {
    pub changes: Vec<Change>,
    /// The sequence number to continue from.
    pub last: i64,
    /// No more changes after this page.
    pub done: bool,
}

/// Orthanc's storage figures.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Statistics {
    pub patients: i64,
    pub studies: i64,
    pub instances: i64,
    pub disk_size_mb: f64,
}

#[async_trait]
pub trait Pacs: Send + Sync + 'static {
    /// Checks that Orthanc answers.
    async fn ping(&self) -> PacsResult<()>;
    /// Stores one DICOM instance.
    async fn store_instance(&self, dicom: Bytes) -> PacsResult<StoredInstance>;
    /// Stores one DICOM instance read from a (spooled) file. By default the file is read
    /// into memory; a store that can stream it from disk does so.
    async fn store_instance_file(&self, file: std::fs::File) -> PacsResult<StoredInstance> {
        let bytes = read_spooled(file).await?;
        self.store_instance(bytes).await
    }
    /// A study with its patient tags and instances; `NotFound` when Orthanc has no such study.
    async fn study(&self, orthanc_study_id: &str) -> PacsResult<StudyInfo>;
    /// The Orthanc id of the study an instance belongs to.
    async fn instance_study(&self, orthanc_instance_id: &str) -> PacsResult<String>;
    /// The raw DICOM file of an instance.
    async fn instance_file(&self, orthanc_instance_id: &str) -> PacsResult<DicomFile>;
    /// Orthanc's rendered preview of an instance (PNG).
    async fn instance_preview(&self, orthanc_instance_id: &str) -> PacsResult<Bytes>;
    /// The value of one top-level tag of an instance (`"0020,0052"`), trailing padding
    /// trimmed; `None` when the instance does not have it.
    async fn instance_tag(&self, orthanc_instance_id: &str, tag: &str) -> PacsResult<Option<String>>;
    /// The instance run through Orthanc's anonymizer with this request (see
    /// `deidentify::anonymize_request`); Orthanc stores nothing.
    async fn anonymized_instance(&self, orthanc_instance_id: &str, request: &Value) -> PacsResult<Bytes>;
    async fn delete_patient(&self, orthanc_patient_id: &str) -> PacsResult<()>;
    async fn delete_instance(&self, orthanc_instance_id: &str) -> PacsResult<()>;
    async fn statistics(&self) -> PacsResult<Statistics>;
    /// Orthanc's change log after `since`.
    async fn changes(&self, since: i64, limit: u32) -> PacsResult<ChangesPage>;
    /// The sequence number of Orthanc's newest change (0 when there is none).
    async fn last_change_seq(&self) -> PacsResult<i64>;
    /// The Orthanc ids of every study Orthanc holds.
    async fn study_ids(&self) -> PacsResult<Vec<String>>;
    /// The Orthanc ids of the studies with this StudyInstanceUID (one per patient that
    /// has it; usually one or none).
    async fn studies_with_uid(&self, study_instance_uid: &str) -> PacsResult<Vec<String>>;
}

/// How a host reaches Orthanc's REST API. Paths start with `/` (e.g. `/system`).
/// A missing resource is [`PacsError::NotFound`].
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    async fn get(&self, path: &str) -> PacsResult<Bytes>;
    async fn post(&self, path: &str, body: Bytes) -> PacsResult<Bytes>;
    /// A POST whose body is read from a file while it is sent; by default the file is
    /// read into memory first.
    async fn post_file(&self, path: &str, file: std::fs::File) -> PacsResult<Bytes> {
        let bytes = read_spooled(file).await?;
        self.post(path, bytes).await
    }
    async fn delete(&self, path: &str) -> PacsResult<()>;
    /// The DICOM file of an instance (`GET /instances/{id}/file`, an id already checked),
    /// streamed.
    async fn instance_file(&self, id: &str) -> PacsResult<DicomFile>;
}

/// Orthanc's REST API over any [`Transport`].
#[derive(Debug)]
pub struct OrthancPacs<T> {
    transport: T,
}

impl<T: Transport> OrthancPacs<T> {
    pub fn new(transport: T) -> Self {
        OrthancPacs { transport }
    }

    pub fn shared(transport: T) -> Arc<dyn Pacs> {
        Arc::new(Self::new(transport))
    }

    async fn get_json<D: for<'de> Deserialize<'de>>(&self, path: &str) -> PacsResult<D> {
        let body = self.transport.get(path).await?;
        serde_json::from_slice(&body).map_err(|e| PacsError::Protocol(format!("GET {path}: {e}")))
    }
}

/// Orthanc ids are hex digests with dashes; anything else must not reach a URL.
fn check_id(id: &str) -> PacsResult<&str> {
    if !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
        Ok(id)
    } else {
        Err(PacsError::NotFound)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct StoreAnswer {
    #[serde(rename = "ID")]
    id: String,
    parent_patient: String,
    parent_study: String,
    parent_series: String,
    status: String,
}

/// The main DICOM tags Orthanc reports (names as Orthanc spells them).
#[derive(Deserialize, Default)]
#[serde(default)]
struct Tags {
    #[serde(rename = "PatientID")]
    patient_id: Option<String>,
    #[serde(rename = "PatientName")]
    patient_name: Option<String>,
    #[serde(rename = "PatientBirthDate")]
    patient_birth_date: Option<String>,
    #[serde(rename = "StudyInstanceUID")]
    study_instance_uid: Option<String>,
    #[serde(rename = "StudyDate")]
    study_date: Option<String>,
    #[serde(rename = "StudyDescription")]
    study_description: Option<String>,
    #[serde(rename = "SeriesInstanceUID")]
    series_instance_uid: Option<String>,
    #[serde(rename = "Modality")]
    modality: Option<String>,
    #[serde(rename = "SOPInstanceUID")]
    sop_instance_uid: Option<String>,
    #[serde(rename = "InstanceNumber")]
    instance_number: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Resource {
    #[serde(rename = "ID")]
    id: String,
    #[serde(default)]
    parent_patient: Option<String>,
    #[serde(default)]
    parent_series: Option<String>,
    #[serde(default)]
    main_dicom_tags: Tags,
    #[serde(default)]
    patient_main_dicom_tags: Tags,
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

#[async_trait]
impl<T: Transport> Pacs for OrthancPacs<T> {
    async fn ping(&self) -> PacsResult<()> {
        let system: Value = self.get_json("/system").await?;
        match system.get("Version") {
            Some(_) => Ok(()),
            None => Err(PacsError::Protocol("/system has no Version".into())),
        }
    }

    async fn store_instance(&self, dicom: Bytes) -> PacsResult<StoredInstance> {
        count_import_bytes(dicom.len() as u64);
        stored_instance(&self.transport.post("/instances", dicom).await?)
    }

    async fn store_instance_file(&self, file: std::fs::File) -> PacsResult<StoredInstance> {
        count_import_bytes(file.metadata().map(|m| m.len()).unwrap_or(0));
        stored_instance(&self.transport.post_file("/instances", file).await?)
    }

    async fn study(&self, orthanc_study_id: &str) -> PacsResult<StudyInfo> {
        let id = check_id(orthanc_study_id)?;
        let study: Resource = self.get_json(&format!("/studies/{id}")).await?;
        let series: Vec<Resource> = self.get_json(&format!("/studies/{id}/series")).await?;
        let instances: Vec<Resource> = self.get_json(&format!("/studies/{id}/instances")).await?;
        let series_tags = |sid: &str| series.iter().find(|s| s.id == sid).map(|s| &s.main_dicom_tags);
        let mut list: Vec<InstanceInfo> = instances
            .into_iter()
            .map(|i| {
                let series_id = i.parent_series.clone().unwrap_or_default();
                let st = series_tags(&series_id);
                InstanceInfo {
                    sop_instance_uid: i.main_dicom_tags.sop_instance_uid.clone().unwrap_or_default(),
                    series_instance_uid: st.and_then(|t| t.series_instance_uid.clone()).unwrap_or_default(),
                    instance_number: i.main_dicom_tags.instance_number.as_deref().and_then(|n| n.trim().parse().ok()),
                    modality: non_empty(st.and_then(|t| t.modality.clone())),
                    orthanc_series_id: series_id,
                    orthanc_id: i.id,
                }
            })
            .collect();
        list.sort_by(|a, b| {
            (&a.series_instance_uid, a.instance_number, &a.sop_instance_uid).cmp(&(
                &b.series_instance_uid,
                b.instance_number,
                &b.sop_instance_uid,
            ))
        });
        let p = study.patient_main_dicom_tags;
        Ok(StudyInfo {
            orthanc_patient_id: study.parent_patient.unwrap_or_default(),
            patient: PatientTags {
                patient_id: p.patient_id.unwrap_or_default(),
                patient_name: non_empty(p.patient_name),
                birth_date: non_empty(p.patient_birth_date),
            },
            study_instance_uid: study.main_dicom_tags.study_instance_uid.unwrap_or_default(),
            study_date: non_empty(study.main_dicom_tags.study_date),
            description: non_empty(study.main_dicom_tags.study_description),
            orthanc_id: study.id,
            instances: list,
        })
    }

    async fn instance_study(&self, orthanc_instance_id: &str) -> PacsResult<String> {
        let id = check_id(orthanc_instance_id)?;
        let study: Resource = self.get_json(&format!("/instances/{id}/study")).await?;
        Ok(study.id)
    }

    async fn instance_file(&self, orthanc_instance_id: &str) -> PacsResult<DicomFile> {
        let id = check_id(orthanc_instance_id)?;
        self.transport.instance_file(id).await
    }

    async fn instance_preview(&self, orthanc_instance_id: &str) -> PacsResult<Bytes> {
        let id = check_id(orthanc_instance_id)?;
        self.transport.get(&format!("/instances/{id}/preview")).await
    }

    async fn instance_tag(&self, orthanc_instance_id: &str, tag: &str) -> PacsResult<Option<String>> {
        let id = check_id(orthanc_instance_id)?;
        let ok = tag.len() == 9 && tag.bytes().enumerate().all(|(i, b)| if i == 4 { b == b',' } else { b.is_ascii_hexdigit() });
        if !ok {
            return Err(PacsError::Protocol(format!("not a DICOM tag: {tag}")));
        }
        match self.transport.get(&format!("/instances/{id}/content/{tag}")).await {
            Ok(v) => Ok(Some(String::from_utf8_lossy(&v).trim_end_matches(['\0', ' ']).to_string())),
            Err(PacsError::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn anonymized_instance(&self, orthanc_instance_id: &str, request: &Value) -> PacsResult<Bytes> {
        let id = check_id(orthanc_instance_id)?;
        self.transport.post(&format!("/instances/{id}/anonymize"), Bytes::from(request.to_string())).await
    }

    async fn delete_patient(&self, orthanc_patient_id: &str) -> PacsResult<()> {
        let id = check_id(orthanc_patient_id)?;
        self.transport.delete(&format!("/patients/{id}")).await
    }

    async fn delete_instance(&self, orthanc_instance_id: &str) -> PacsResult<()> {
        let id = check_id(orthanc_instance_id)?;
        self.transport.delete(&format!("/instances/{id}")).await
    }

    async fn statistics(&self) -> PacsResult<Statistics> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Stats {
            count_patients: i64,
            count_studies: i64,
            count_instances: i64,
            #[serde(rename = "TotalDiskSizeMB")]
            total_disk_size_mb: f64,
        }
        let s: Stats = self.get_json("/statistics").await?;
        Ok(Statistics {
            patients: s.count_patients,
            studies: s.count_studies,
            instances: s.count_instances,
            disk_size_mb: s.total_disk_size_mb,
        })
    }

    async fn study_ids(&self) -> PacsResult<Vec<String>> {
        self.get_json("/studies").await
    }

    async fn studies_with_uid(&self, study_instance_uid: &str) -> PacsResult<Vec<String>> {
        #[derive(Deserialize)]
        struct Found {
            #[serde(rename = "ID")]
            id: String,
            #[serde(rename = "Type")]
            kind: String,
        }
        let answer = self.transport.post("/tools/lookup", Bytes::from(study_instance_uid.to_string())).await?;
        let found: Vec<Found> = serde_json::from_slice(&answer).map_err(|e| PacsError::Protocol(format!("/tools/lookup: {e}")))?;
        Ok(found.into_iter().filter(|f| f.kind == "Study").map(|f| f.id).collect())
    }

    async fn changes(&self, since: i64, limit: u32) -> PacsResult<ChangesPage> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Raw {
            changes: Vec<RawChange>,
            done: bool,
            last: i64,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct RawChange {
            seq: i64,
            change_type: String,
            resource_type: String,
            #[serde(rename = "ID")]
            id: String,
        }
        let raw: Raw = self.get_json(&format!("/changes?since={since}&limit={limit}")).await?;
        Ok(ChangesPage {
            changes: raw
                .changes
                .into_iter()
                .map(|c| Change { seq: c.seq, change_type: c.change_type, resource_type: c.resource_type, resource_id: c.id })
                .collect(),
            last: raw.last,
            done: raw.done,
        })
    }

    async fn last_change_seq(&self) -> PacsResult<i64> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Raw {
            last: i64,
        }
        let raw: Raw = self.get_json("/changes?last").await?;
        Ok(raw.last)
    }
}

/// Counts DICOM bytes sent to Orthanc for storage (imports are the only writers).
fn count_import_bytes(n: u64) {
    crate::metrics::global().import_bytes.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
}

/// What Orthanc answered to `POST /instances` with one DICOM file.
fn stored_instance(body: &[u8]) -> PacsResult<StoredInstance> {
    let a: StoreAnswer = serde_json::from_slice(body).map_err(|e| PacsError::Protocol(format!("POST /instances: {e}")))?;
    let status = match a.status.as_str() {
        "Success" => StoreStatus::Stored,
        "AlreadyStored" => StoreStatus::AlreadyStored,
        other => return Err(PacsError::Rejected { status: 400, message: format!("Orthanc did not store the instance: {other}") }),
    };
    Ok(StoredInstance { instance_id: a.id, patient_id: a.parent_patient, study_id: a.parent_study, series_id: a.parent_series, status })
}

/// A spooled upload read back into memory (off the async threads), for a store or a
/// transport that cannot stream it from disk.
async fn read_spooled(file: std::fs::File) -> PacsResult<Bytes> {
    tokio::task::spawn_blocking(move || {
        let mut file = file;
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut file, &mut buf).map(|_| Bytes::from(buf))
    })
    .await
    .map_err(|e| PacsError::Unavailable(e.to_string()))?
    .map_err(|e| PacsError::Unavailable(format!("cannot read the spooled upload: {e}")))
}
