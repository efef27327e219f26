//! Export: one ZIP with `patient.json` and `DICOM/{StudyUID}/{SeriesUID}/{SOPUID}.dcm`
//! per patient (in a `{external_id}/` folder for bulk exports).
//!
//! De-identified (`deidentify=true`), every instance goes through Orthanc's anonymizer
//! (PS3.15 Basic Profile) with the group's pseudonym and deterministic UIDs (see
//! `crate::deidentify`); names of folders and files use them, `patient.json` carries no
//! identity, and instances flagged `BurnedInAnnotation = YES` are withheld (the Basic
//! Profile without its Clean Pixel Data option cannot vouch for their pixels).
//!
//! When the host can stream answers (the sidecar), the archive is produced while it is
//! sent: one instance in memory at a time, first bytes out before the last instance is
//! read. When it cannot (the plugin on Orthanc 1.10.1), it is built in memory up to
//! `MaxExportBytes` and refused with 413 beyond.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::json;

use super::patients::visible_patient;
use super::{action, pseudonyms, Outcome, Principal};
use crate::app::App;
use crate::budget::Reservation;
use crate::deidentify::{self, DeidKey, InstanceIds};
use crate::domain::Id;
use crate::error::{ApiError, ApiResult};
use crate::model::{Patient, Study};
use crate::pacs::{ByteStream, Pacs, PacsError};
use crate::store::patients::{InstanceWithStudy, PatientRow};
use crate::zipstream::{safe_name, ZipStream};

/// An archive ready to send.
pub struct Export {
    pub filename: String,
    pub body: ExportBody,
}

impl std::fmt::Debug for Export {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Export").field("filename", &self.filename).finish_non_exhaustive()
    }
}

pub enum ExportBody {
    Stream(ByteStream),
    /// Built in memory, holding its share of `MaxExportBytes` until it is sent.
    Buffered(Bytes, Reservation),
}

/// 503 `busy`: the in-memory answers being built or sent already hold `MaxExportBytes`.
pub fn export_memory_busy() -> ApiError {
    ApiError::busy("other exports being built in memory are using MaxExportBytes", 5)
}

/// One patient to put in an archive, everything read from the registry up front.
struct Item {
    patient: PatientRow,
    studies: Vec<Study>,
    instances: Vec<InstanceWithStudy>,
    /// Folder inside the archive (`""` or `"{external_id}/"`, or the pseudonym).
    folder: String,
    /// Set for a de-identified export.
    deid: Option<Deid>,
}

/// How one patient is de-identified.
struct Deid {
    key: DeidKey,
    pseudonym: String,
}

/// Tags read from each instance before de-identifying it.
const BURNED_IN_ANNOTATION: &str = "0028,0301";
const FRAME_OF_REFERENCE_UID: &str = "0020,0052";

pub async fn export_one(app: &App, who: &Principal, id: Id, deidentify: bool) -> ApiResult<Export> {
    if !deidentify {
        pseudonyms::require_identified_allowed(app, who, "export").await?;
    }
    let item = load(app, who, id, false, deidentify).await?;
    let filename = match &item.deid {
        Some(d) => format!("{}.zip", d.pseudonym),
        None => format!("{}.zip", safe_name(&item.patient.external_id)),
    };
    build(app, who, vec![item], filename).await
}

/// Several patients in one archive; any unknown or hidden id is a 404 and no archive.
pub async fn export_many(app: &App, who: &Principal, ids: &[Id], deidentify: bool) -> ApiResult<Export> {
    if ids.is_empty() {
        return Err(ApiError::validation("ids", "must list at least one patient id"));
    }
    if !deidentify {
        pseudonyms::require_identified_allowed(app, who, "export").await?;
    }
    let mut seen = HashSet::new();
    let mut folders = HashSet::new();
    let mut items = Vec::new();
    for &id in ids.iter().filter(|id| seen.insert(**id)) {
        let mut item = load(app, who, id, true, deidentify).await?;
        // Two external ids could sanitize to the same folder: keep folders distinct.
        if !folders.insert(item.folder.clone()) {
            let suffix = if item.deid.is_some() { items.len().to_string() } else { item.patient.id.to_string() };
            item.folder = format!("{}_{suffix}/", item.folder.trim_end_matches('/'));
            folders.insert(item.folder.clone());
        }
        items.push(item);
    }
    let filename = format!("cohort-export-{}.zip", chrono::Utc::now().format("%Y%m%d-%H%M%S"));
    build(app, who, items, filename).await
}

async fn load(app: &App, who: &Principal, id: Id, in_folder: bool, deidentify: bool) -> ApiResult<Item> {
    let mut db = app.store.conn().await?;
    let patient = visible_patient(app, &mut db, who, id).await?;
    let studies = db.studies_of_patient(patient.id).await?.into_iter().map(Study::from).collect();
    let instances = db.patient_instances(patient.id).await?;
    let deid = if deidentify {
        let (key, pseudonym) = pseudonyms::pseudonym_of(&mut db, &patient).await?;
        Some(Deid { key, pseudonym })
    } else {
        None
    };
    let folder = match (&deid, in_folder) {
        (_, false) => String::new(),
        (Some(d), true) => format!("{}/", d.pseudonym),
        (None, true) => format!("{}/", safe_name(&patient.external_id)),
    };
    Ok(Item { patient, studies, instances, folder, deid })
}

fn dicom_path(folder: &str, i: &InstanceWithStudy) -> String {
    format!(
        "{folder}DICOM/{}/{}/{}.dcm",
        safe_name(&i.study_instance_uid),
        safe_name(&i.series_instance_uid),
        safe_name(&i.sop_instance_uid)
    )
}

fn patient_json(item: &Item, who: &Principal, report: &ItemReport) -> Bytes {
    let doc = match &item.deid {
        None => json!({
            "format": "cohort-export/1",
            "patient": Patient::from(item.patient.clone()),
            "studies": item.studies,
            "export": {
                "exported_at": chrono::Utc::now(),
                "exported_by": who.user.email,
                "cohort_version": env!("CARGO_PKG_VERSION"),
                "instances": report.exported,
                "missing_instances": report.missing,
            }
        }),
        // No name, birth date, external id, Orthanc id, date or user: the pseudonym, the
        // status and what the archive holds.
        Some(d) => json!({
            "format": "cohort-export/1",
            "deidentified": true,
            "patient": {"pseudonym": d.pseudonym, "status": item.patient.status},
            "studies": deidentified_studies(item, d),
            "export": {
                "method": deidentify::METHOD,
                "dates": "removed (PS3.15 Basic Profile), not shifted",
                "cohort_version": env!("CARGO_PKG_VERSION"),
                "instances": report.exported,
                "missing_instances": report.missing,
                "withheld_instances": {"burned_in_annotation": report.withheld},
            }
        }),
    };
    Bytes::from(serde_json::to_vec_pretty(&doc).unwrap_or_default())
}

/// Per study (by its new UID): modalities, series and instance counts.
fn deidentified_studies(item: &Item, d: &Deid) -> Vec<serde_json::Value> {
    use std::collections::{BTreeMap, BTreeSet};
    let mut studies: BTreeMap<String, (BTreeSet<String>, BTreeSet<&str>, usize)> = BTreeMap::new();
    for i in &item.instances {
        let entry = studies.entry(d.key.uid(&item.patient.external_id, &i.study_instance_uid)).or_default();
        entry.0.extend(i.modality.clone());
        entry.1.insert(&i.series_instance_uid);
        entry.2 += 1;
    }
    studies
        .into_iter()
        .map(|(uid, (modalities, series, instances))| {
            json!({"study_instance_uid": uid, "modalities": modalities, "series": series.len(), "instances": instances})
        })
        .collect()
}

/// What happened to one patient's instances.
#[derive(Default)]
struct ItemReport {
    exported: usize,
    /// SOP instance UIDs (the new ones when de-identified) Orthanc no longer has.
    missing: Vec<String>,
    /// De-identified only: instances left out because of burned-in annotation.
    withheld: usize,
}

/// Audits the export (one `EXPORT` row per patient, in one transaction).
async fn audit(app: &App, who: &Principal, items: &[Item]) -> ApiResult<()> {
    let mut tx = app.store.begin().await?;
    for item in items {
        let details = match &item.deid {
            None => json!({
                "external_id": item.patient.external_id,
                "instances": item.instances.len(),
                "bulk": items.len() > 1,
            }),
            Some(d) => json!({
                "deidentified": true,
                "pseudonym": d.pseudonym,
                "patients": items.len(),
                "instances": item.instances.len(),
                "bulk": items.len() > 1,
            }),
        };
        tx.insert_audit(&who.actor().audit(action::EXPORT, Outcome::Success).on("patient", item.patient.id).details(details)).await?;
    }
    tx.commit().await?;
    Ok(())
}

async fn build(app: &App, who: &Principal, items: Vec<Item>, filename: String) -> ApiResult<Export> {
    let has_dicom = items.iter().any(|i| !i.instances.is_empty());
    let pacs = if has_dicom { Some(app.pacs()?.clone()) } else { None };
    if let Some(pacs) = &pacs {
        // Answer 503 now, rather than a broken download, when Orthanc is down.
        pacs.ping().await?;
    }
    if app.streams_answers() {
        audit(app, who, &items).await?;
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, PacsError>>(2);
        let who = who.clone();
        tokio::spawn(async move {
            if let Err(e) = write_archive(pacs, &who, &items, None, |b| {
                let tx = tx.clone();
                async move { tx.send(Ok(b)).await.map_err(|_| WriteStop::ClientGone) }
            })
            .await
            {
                match e {
                    WriteStop::ClientGone => tracing::info!("export stopped: the client went away"),
                    WriteStop::Failed(err) => {
                        tracing::warn!(error = %err.message, "export failed while streaming");
                        let _ = tx.send(Err(PacsError::Unavailable(err.message))).await;
                    }
                }
            }
        });
        let body = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) }).boxed();
        Ok(Export { filename, body: ExportBody::Stream(body) })
    } else {
        let limit = app.config.max_export_bytes;
        let mut buf = bytes::BytesMut::new();
        let mut held = app.export_memory.reserve();
        write_archive(pacs, who, &items, Some(limit), |b| {
            let taken = held.grow(b.len() as u64);
            if taken {
                buf.extend_from_slice(&b);
            }
            std::future::ready(if taken { Ok(()) } else { Err(WriteStop::Failed(export_memory_busy())) })
        })
        .await
        .map_err(|e| match e {
            WriteStop::Failed(err) => err,
            WriteStop::ClientGone => ApiError::internal("export buffer closed"),
        })?;
        audit(app, who, &items).await?;
        Ok(Export { filename, body: ExportBody::Buffered(buf.freeze(), held) })
    }
}

/// Why writing an archive stopped early.
enum WriteStop {
    ClientGone,
    Failed(ApiError),
}

/// Writes the archive piece by piece through `emit`; with `limit`, refuses (413) as
/// soon as the archive would grow beyond it.
async fn write_archive<F, Fut>(
    pacs: Option<Arc<dyn Pacs>>,
    who: &Principal,
    items: &[Item],
    limit: Option<u64>,
    mut emit: F,
) -> Result<(), WriteStop>
where
    F: FnMut(Bytes) -> Fut,
    Fut: std::future::Future<Output = Result<(), WriteStop>>,
{
    let mut zip = ZipStream::new();
    let too_large = |limit: u64| {
        WriteStop::Failed(ApiError::too_large(format!(
            "the archive exceeds MaxExportBytes ({limit} bytes); export fewer patients or use the sidecar, which streams"
        )))
    };
    let check = |zip: &ZipStream, extra: u64| match limit {
        Some(limit) if zip.written() + extra > limit => Err(too_large(limit)),
        _ => Ok(()),
    };
    for item in items {
        let mut report = ItemReport::default();
        for instance in &item.instances {
            let Some(pacs) = &pacs else { break };
            let fetched = match &item.deid {
                None => fetch_identified(pacs, instance).await,
                Some(d) => fetch_deidentified(pacs, &item.patient, d, instance).await,
            };
            let (path, data) = match fetched {
                Ok(Fetched::File { path, data }) => (format!("{}{path}", item.folder), data),
                Ok(Fetched::Withheld) => {
                    report.withheld += 1;
                    continue;
                }
                Err(PacsError::NotFound) => {
                    report.missing.push(match &item.deid {
                        None => instance.sop_instance_uid.clone(),
                        Some(d) => d.key.uid(&item.patient.external_id, &instance.sop_instance_uid),
                    });
                    continue;
                }
                Err(e) => return Err(WriteStop::Failed(e.into())),
            };
            check(&zip, data.len() as u64 + path.len() as u64 + 64)?;
            emit(zip.entry_header(&path, &data)).await?;
            emit(data).await?;
            report.exported += 1;
        }
        let doc = patient_json(item, who, &report);
        let path = format!("{}patient.json", item.folder);
        check(&zip, doc.len() as u64 + 128)?;
        emit(zip.entry_header(&path, &doc)).await?;
        emit(doc).await?;
    }
    emit(zip.finish()).await
}

/// One instance, ready for the archive.
enum Fetched {
    /// Its path below the patient's folder, and its bytes.
    File { path: String, data: Bytes },
    /// Left out (de-identified export of an image with burned-in annotation).
    Withheld,
}

async fn fetch_identified(pacs: &Arc<dyn Pacs>, instance: &InstanceWithStudy) -> Result<Fetched, PacsError> {
    let data = pacs.instance_file(&instance.orthanc_instance_id).await?.collect().await?;
    Ok(Fetched::File { path: dicom_path("", instance), data })
}

async fn fetch_deidentified(
    pacs: &Arc<dyn Pacs>,
    patient: &PatientRow,
    d: &Deid,
    instance: &InstanceWithStudy,
) -> Result<Fetched, PacsError> {
    let id = &instance.orthanc_instance_id;
    let burned_in = pacs.instance_tag(id, BURNED_IN_ANNOTATION).await?;
    if burned_in.is_some_and(|v| v.trim().eq_ignore_ascii_case("YES")) {
        return Ok(Fetched::Withheld);
    }
    let frame_of_reference = pacs.instance_tag(id, FRAME_OF_REFERENCE_UID).await?;
    let ids = InstanceIds {
        study_uid: &instance.study_instance_uid,
        series_uid: &instance.series_instance_uid,
        sop_uid: &instance.sop_instance_uid,
        frame_of_reference_uid: frame_of_reference.as_deref(),
    };
    let (request, new) = deidentify::anonymize_request(&d.key, &patient.external_id, &d.pseudonym, &ids);
    let data = pacs.anonymized_instance(id, &request).await?;
    Ok(Fetched::File { path: format!("DICOM/{}/{}/{}.dcm", new.study_uid, new.series_uid, new.sop_uid), data })
}
