//! Export: one ZIP with `patient.json` and `DICOM/{StudyUID}/{SeriesUID}/{SOPUID}.dcm`
//! per patient (in a `{external_id}/` folder for bulk exports).
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
use super::{action, Outcome, Principal};
use crate::app::App;
use crate::budget::Reservation;
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
    /// Folder inside the archive (`""` or `"{external_id}/"`).
    folder: String,
}

pub async fn export_one(app: &App, who: &Principal, id: Id) -> ApiResult<Export> {
    let item = load(app, who, id, false).await?;
    let filename = format!("{}.zip", safe_name(&item.patient.external_id));
    build(app, who, vec![item], filename).await
}

/// Several patients in one archive; any unknown or hidden id is a 404 and no archive.
pub async fn export_many(app: &App, who: &Principal, ids: &[Id]) -> ApiResult<Export> {
    if ids.is_empty() {
        return Err(ApiError::validation("ids", "must list at least one patient id"));
    }
    let mut seen = HashSet::new();
    let mut folders = HashSet::new();
    let mut items = Vec::new();
    for &id in ids.iter().filter(|id| seen.insert(**id)) {
        let mut item = load(app, who, id, true).await?;
        // Two external ids could sanitize to the same folder: keep folders distinct.
        if !folders.insert(item.folder.clone()) {
            item.folder = format!("{}_{}/", item.folder.trim_end_matches('/'), item.patient.id);
            folders.insert(item.folder.clone());
        }
        items.push(item);
    }
    let filename = format!("cohort-export-{}.zip", chrono::Utc::now().format("%Y%m%d-%H%M%S"));
    build(app, who, items, filename).await
}

async fn load(app: &App, who: &Principal, id: Id, in_folder: bool) -> ApiResult<Item> {
    let mut db = app.store.conn().await?;
    let patient = visible_patient(app, &mut db, who, id).await?;
    let studies = db.studies_of_patient(patient.id).await?.into_iter().map(Study::from).collect();
    let instances = db.patient_instances(patient.id).await?;
    let folder = if in_folder { format!("{}/", safe_name(&patient.external_id)) } else { String::new() };
    Ok(Item { patient, studies, instances, folder })
}

fn dicom_path(folder: &str, i: &InstanceWithStudy) -> String {
    format!(
        "{folder}DICOM/{}/{}/{}.dcm",
        safe_name(&i.study_instance_uid),
        safe_name(&i.series_instance_uid),
        safe_name(&i.sop_instance_uid)
    )
}

fn patient_json(item: &Item, who: &Principal, exported: usize, missing: &[String]) -> Bytes {
    let doc = json!({
        "format": "cohort-export/1",
        "patient": Patient::from(item.patient.clone()),
        "studies": item.studies,
        "export": {
            "exported_at": chrono::Utc::now(),
            "exported_by": who.user.email,
            "cohort_version": env!("CARGO_PKG_VERSION"),
            "instances": exported,
            "missing_instances": missing,
        }
    });
    Bytes::from(serde_json::to_vec_pretty(&doc).unwrap_or_default())
}

/// Audits the export (one `EXPORT` row per patient, in one transaction).
async fn audit(app: &App, who: &Principal, items: &[Item]) -> ApiResult<()> {
    let mut tx = app.store.begin().await?;
    for item in items {
        tx.insert_audit(&who.actor().audit(action::EXPORT, Outcome::Success).on("patient", item.patient.id).details(json!({
            "external_id": item.patient.external_id,
            "instances": item.instances.len(),
            "bulk": items.len() > 1,
        })))
        .await?;
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
        let mut missing = Vec::new();
        let mut exported = 0usize;
        for instance in &item.instances {
            let Some(pacs) = &pacs else { break };
            let data = match pacs.instance_file(&instance.orthanc_instance_id).await {
                Ok(file) => file.collect().await,
                Err(e) => Err(e),
            };
            let data = match data {
                Ok(d) => d,
                Err(PacsError::NotFound) => {
                    missing.push(instance.sop_instance_uid.clone());
                    continue;
                }
                Err(e) => return Err(WriteStop::Failed(e.into())),
            };
            let path = dicom_path(&item.folder, instance);
            check(&zip, data.len() as u64 + path.len() as u64 + 64)?;
            emit(zip.entry_header(&path, &data)).await?;
            emit(data).await?;
            exported += 1;
        }
        let doc = patient_json(item, who, exported, &missing);
        let path = format!("{}patient.json", item.folder);
        check(&zip, doc.len() as u64 + 128)?;
        emit(zip.entry_header(&path, &doc)).await?;
        emit(doc).await?;
    }
    emit(zip.finish()).await
}
