//! `/api/patients`: the registry, DICOM import and export, the image proxy; and
//! `/api/stats`.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use chrono::NaiveDate;
use futures_util::{Stream, StreamExt, TryStreamExt};
use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{explicit_null, page_request, search_text, Admin, ApiJson, ApiPath, ApiQuery, Caller};
use super::multipart_limits::PartWatch;
use super::JsonBytes;
use crate::app::{App, SharedApp};
use crate::domain::{Id, PatientStatus};
use crate::error::{ApiError, ErrorBody};
use crate::model::{PageParams, Paginated, Patient, PatientDetail, PatientInstance, StatusLabel};
use crate::services::export::{self, Export, ExportBody};
use crate::services::images;
use crate::services::import::{sniff, ImportReport, ImportTarget, Importer, ZipSource, SNIFF_LEN};
use crate::services::patients::{self as service, own_group, scope_of, PatientChanges, PatientInput};
use crate::services::stats::{self, Stats};
use crate::spool::SpoolDir;

pub fn router() -> OpenApiRouter<SharedApp> {
    OpenApiRouter::new()
        .routes(routes!(list_patients, create_patient))
        .routes(routes!(statuses))
        .routes(routes!(import))
        .routes(routes!(export_many))
        .routes(routes!(image))
        .routes(routes!(image_preview))
        .routes(routes!(get_patient, update_patient, delete_patient))
        .routes(routes!(patient_instances))
        .routes(routes!(export_one))
}

pub fn stats_router() -> OpenApiRouter<SharedApp> {
    OpenApiRouter::new().routes(routes!(get_stats))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PatientListQuery {
    /// 1-based page number (default 1).
    #[param(minimum = 1)]
    pub page: Option<u32>,
    /// Items per page, 1 to 200 (default 20).
    #[param(minimum = 1, maximum = 200)]
    pub page_size: Option<u32>,
    /// Case- and accent-insensitive substring of the external id or names.
    #[param(max_length = 100)]
    pub q: Option<String>,
    pub status: Option<PatientStatus>,
    /// `created_at`, `updated_at` (default, newest first), `last_name`, `external_id` or
    /// `status`; prefix `-` for descending.
    pub sort: Option<String>,
}

/// List the patients the caller may see.
#[utoipa::path(get, path = "/", tag = "patients", params(PatientListQuery), responses(
    (status = 200, body = Paginated<Patient>),
    (status = 401, body = ErrorBody),
))]
async fn list_patients(
    State(app): State<SharedApp>,
    Caller(who): Caller,
    ApiQuery(q): ApiQuery<PatientListQuery>,
) -> Result<JsonBytes, ApiError> {
    let page = page_request(PageParams { page: q.page, page_size: q.page_size })?;
    let sort = service::parse_sort(q.sort.as_deref())?;
    Ok(JsonBytes(service::list(&app, &who, search_text(q.q.as_deref())?, q.status, sort, page).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePatientBody {
    /// IPP: the DICOM PatientID, 1 to 64 characters.
    pub external_id: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    /// `YYYY-MM-DD`.
    pub date_of_birth: Option<NaiveDate>,
    /// Defaults to `to_interpret`.
    pub status: Option<PatientStatus>,
    /// Admins only; users create in their own group.
    pub group_id: Option<Id>,
}

/// Create a patient record by hand.
#[utoipa::path(post, path = "/", tag = "patients", request_body = CreatePatientBody, responses(
    (status = 201, body = Patient),
    (status = 403, description = "No group, or another group", body = ErrorBody),
    (status = 409, description = "external_id taken", body = ErrorBody),
))]
async fn create_patient(
    State(app): State<SharedApp>,
    Caller(who): Caller,
    ApiJson(b): ApiJson<CreatePatientBody>,
) -> Result<(StatusCode, Json<Patient>), ApiError> {
    let input = PatientInput {
        external_id: b.external_id,
        first_name: b.first_name,
        last_name: b.last_name,
        date_of_birth: b.date_of_birth,
        status: b.status,
        group_id: b.group_id,
    };
    Ok((StatusCode::CREATED, Json(service::create(&app, &who, input).await?)))
}

/// The patient statuses and their labels.
#[utoipa::path(get, path = "/statuses", tag = "patients", responses((status = 200, body = Vec<StatusLabel>)))]
async fn statuses(_: Caller) -> Json<Vec<StatusLabel>> {
    Json(service::statuses())
}

/// A patient with their studies.
#[utoipa::path(get, path = "/{id}", tag = "patients", params(("id" = Id, Path)), responses(
    (status = 200, body = PatientDetail),
    (status = 404, description = "Unknown, or not visible to the caller", body = ErrorBody),
))]
async fn get_patient(State(app): State<SharedApp>, Caller(who): Caller, ApiPath(id): ApiPath<Id>) -> Result<Json<PatientDetail>, ApiError> {
    Ok(Json(service::get(&app, &who, id).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdatePatientBody {
    pub status: Option<PatientStatus>,
    #[serde(default, deserialize_with = "explicit_null")]
    #[schema(value_type = Option<String>)]
    pub first_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "explicit_null")]
    #[schema(value_type = Option<String>)]
    pub last_name: Option<Option<String>>,
    /// `YYYY-MM-DD`, or `null` to clear.
    #[serde(default, deserialize_with = "explicit_null")]
    #[schema(value_type = Option<NaiveDate>)]
    pub date_of_birth: Option<Option<NaiveDate>>,
    /// Admins only; `null` makes the patient ungrouped.
    #[serde(default, deserialize_with = "explicit_null")]
    #[schema(value_type = Option<Id>)]
    pub group_id: Option<Option<Id>>,
}

/// Update a patient's status, names, birth date or group; every change is audited.
#[utoipa::path(put, path = "/{id}", tag = "patients", params(("id" = Id, Path)), request_body = UpdatePatientBody, responses(
    (status = 200, body = Patient),
    (status = 404, body = ErrorBody),
))]
async fn update_patient(
    State(app): State<SharedApp>,
    Caller(who): Caller,
    ApiPath(id): ApiPath<Id>,
    ApiJson(b): ApiJson<UpdatePatientBody>,
) -> Result<Json<Patient>, ApiError> {
    let changes = PatientChanges {
        status: b.status,
        first_name: b.first_name,
        last_name: b.last_name,
        date_of_birth: b.date_of_birth,
        group_id: b.group_id,
    };
    Ok(Json(service::update(&app, &who, id, changes).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeleteQuery {
    /// Also delete the patient's DICOM data from Orthanc. (In the plugin, Orthanc 1.10.1
    /// drops the query string of DELETE requests: send `X-Purge-Dicom: true` instead.)
    pub purge_dicom: Option<bool>,
}

/// The header form of `?purge_dicom=true`, which survives where query strings do not.
const PURGE_HEADER: &str = "x-purge-dicom";

/// Delete a patient record (admins).
#[utoipa::path(delete, path = "/{id}", tag = "patients", params(
    ("id" = Id, Path),
    DeleteQuery,
    ("X-Purge-Dicom" = Option<bool>, Header, description = "Same as purge_dicom=true"),
), responses(
    (status = 204, description = "Deleted"),
    (status = 404, body = ErrorBody),
    (status = 503, description = "Orthanc unavailable (purge_dicom)", body = ErrorBody),
))]
async fn delete_patient(
    State(app): State<SharedApp>,
    Admin(who): Admin,
    ApiPath(id): ApiPath<Id>,
    ApiQuery(q): ApiQuery<DeleteQuery>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let by_header = headers.get(PURGE_HEADER).and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case("true"));
    service::delete(&app, &who, id, q.purge_dicom.unwrap_or(false) || by_header).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The patient's DICOM instances; each `id` is what `/images/{instance_id}` takes.
#[utoipa::path(get, path = "/{id}/instances", tag = "patients", params(("id" = Id, Path)), responses(
    (status = 200, body = Vec<PatientInstance>),
    (status = 404, body = ErrorBody),
))]
async fn patient_instances(
    State(app): State<SharedApp>,
    Caller(who): Caller,
    ApiPath(id): ApiPath<Id>,
) -> Result<Json<Vec<PatientInstance>>, ApiError> {
    Ok(Json(service::instances(&app, &who, id).await?))
}

fn attachment(filename: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("attachment; filename=\"{filename}\"")).unwrap_or_else(|_| HeaderValue::from_static("attachment"))
}

fn zip_response(export: Export) -> Response {
    use std::sync::atomic::Ordering::Relaxed;
    let metrics = crate::metrics::global();
    metrics.exports.fetch_add(1, Relaxed);
    let disposition = attachment(&export.filename);
    // Bytes are counted as they leave (a streamed export cut short counts what went).
    let body = match export.body {
        ExportBody::Stream(stream) => ExportBody::Stream(Box::pin(stream.inspect(move |chunk| {
            if let Ok(bytes) = chunk {
                metrics.export_bytes.fetch_add(bytes.len() as u64, Relaxed);
            }
        }))),
        ExportBody::Buffered(bytes, held) => {
            metrics.export_bytes.fetch_add(bytes.len() as u64, Relaxed);
            ExportBody::Buffered(bytes, held)
        }
    };
    let mut resp = super::export_body(body);
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/zip"));
    h.insert(header::CONTENT_DISPOSITION, disposition);
    resp
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    /// De-identify (PS3.15 Basic Profile, the group's pseudonym and UIDs).
    pub deidentify: Option<bool>,
}

/// One patient as a ZIP: `patient.json` and `DICOM/{StudyUID}/{SeriesUID}/{SOPUID}.dcm`
/// (with `deidentify=true`: `{pseudonym}.zip`, new UIDs, no identity).
#[utoipa::path(get, path = "/{id}/export", tag = "patients", params(("id" = Id, Path), ExportQuery), responses(
    (status = 200, description = "ZIP archive", content_type = "application/zip"),
    (status = 403, description = "Identified export refused by the group's policy (`deidentified_only`)", body = ErrorBody),
    (status = 404, body = ErrorBody),
    (status = 413, description = "Larger than MaxExportBytes (plugin)", body = ErrorBody),
    (status = 503, description = "Orthanc unavailable", body = ErrorBody),
))]
async fn export_one(
    State(app): State<SharedApp>,
    Caller(who): Caller,
    ApiPath(id): ApiPath<Id>,
    ApiQuery(q): ApiQuery<ExportQuery>,
) -> Result<Response, ApiError> {
    Ok(zip_response(export::export_one(&app, &who, id, q.deidentify.unwrap_or(false)).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportBodyIds {
    pub ids: Vec<Id>,
    /// De-identify (PS3.15 Basic Profile, the groups' pseudonyms and UIDs).
    #[serde(default)]
    pub deidentify: bool,
}

/// Several patients in one ZIP, a folder `{external_id}/` each; any unknown or hidden id
/// is a 404 and no archive.
#[utoipa::path(post, path = "/export", tag = "patients", request_body = ExportBodyIds, responses(
    (status = 200, description = "ZIP archive", content_type = "application/zip"),
    (status = 403, description = "Identified export refused by the group's policy (`deidentified_only`)", body = ErrorBody),
    (status = 404, body = ErrorBody),
    (status = 413, description = "Larger than MaxExportBytes (plugin)", body = ErrorBody),
))]
async fn export_many(State(app): State<SharedApp>, Caller(who): Caller, ApiJson(b): ApiJson<ExportBodyIds>) -> Result<Response, ApiError> {
    Ok(zip_response(export::export_many(&app, &who, &b.ids, b.deidentify).await?))
}

/// The raw DICOM file of an instance (streamed).
#[utoipa::path(get, path = "/images/{instance_id}", tag = "patients", params(("instance_id" = String, Path, description = "Orthanc instance id")), responses(
    (status = 200, description = "DICOM file", content_type = "application/dicom"),
    (status = 403, description = "The caller's group may only export de-identified data (`deidentified_only`)", body = ErrorBody),
    (status = 404, body = ErrorBody),
))]
async fn image(State(app): State<SharedApp>, who: Caller, ApiPath(instance_id): ApiPath<String>) -> Result<Response, ApiError> {
    image_answer(&app, who, instance_id).await
}

/// [`image`]'s answer, also given by [`super::lane`].
pub(crate) async fn image_answer(app: &SharedApp, Caller(who): Caller, instance_id: String) -> Result<Response, ApiError> {
    let file = images::file(app, &who, &instance_id).await?;
    let mut resp = Body::from_stream(file.body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/dicom"));
    if let Some(size) = file.size {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    }
    Ok(resp)
}

/// Orthanc's rendered preview of an instance, as PNG; same visibility as the file.
#[utoipa::path(get, path = "/images/{instance_id}/preview", tag = "patients", params(("instance_id" = String, Path, description = "Orthanc instance id")), responses(
    (status = 200, description = "PNG preview", content_type = "image/png"),
    (status = 404, description = "Unknown, or not visible to the caller", body = ErrorBody),
    (status = 422, description = "Orthanc cannot render this instance (`preview_unavailable`)", body = ErrorBody),
    (status = 503, description = "Orthanc unavailable", body = ErrorBody),
))]
async fn image_preview(
    State(app): State<SharedApp>,
    Caller(who): Caller,
    ApiPath(instance_id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let png = images::preview(&app, &who, &instance_id).await?;
    let mut resp = Body::from(png).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/png"));
    // Private: the image is personal data; the browser may keep it for the page's life.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=300"));
    Ok(resp)
}

/// Figures for the dashboard.
#[utoipa::path(get, path = "/stats", tag = "patients", responses(
    (status = 200, body = Stats),
    (status = 401, body = ErrorBody),
))]
async fn get_stats(State(app): State<SharedApp>, Caller(who): Caller) -> Result<Json<Stats>, ApiError> {
    Ok(Json(stats::stats(&app, &who).await?))
}

/// Bodies up to this size are kept in memory; larger ones go to a temporary file.
const IN_MEMORY_BODY: u64 = 64 << 20;

/// A request body read within the upload limit.
enum Spooled {
    Memory(Bytes),
    File(std::fs::File),
}

impl Spooled {
    /// The first bytes, to sniff the format.
    fn head(&mut self) -> Result<Vec<u8>, ApiError> {
        match self {
            Spooled::Memory(b) => Ok(b[..b.len().min(SNIFF_LEN)].to_vec()),
            Spooled::File(f) => {
                use std::io::{Read, Seek};
                let mut head = Vec::with_capacity(132);
                (&mut *f).take(SNIFF_LEN as u64).read_to_end(&mut head).map_err(ApiError::spool_io)?;
                f.rewind().map_err(ApiError::spool_io)?;
                Ok(head)
            }
        }
    }

    fn into_zip(self) -> ZipSource {
        match self {
            Spooled::Memory(b) => ZipSource::Memory(b),
            Spooled::File(f) => ZipSource::File(f),
        }
    }

    /// Imports it as one file (not a ZIP): from memory, or streamed from its spool file,
    /// so a large single upload never sits in memory whole.
    async fn import_as_file(self, importer: &mut Importer<'_>, name: &str, head: &[u8]) -> Result<(), ApiError> {
        match self {
            Spooled::Memory(b) => importer.add_file(name, b).await,
            Spooled::File(f) => importer.add_spooled_file(name, head, f).await,
        }
    }
}

/// A body declared at most this large is read and thrown away before a refusal is sent.
const DRAIN_BYTES: u64 = 8 << 20;
/// And read for at most this long.
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(2);

/// Returns `refusal` once the client has sent a small body: answering while it is still
/// sending makes the server close a socket with unread data, which resets the connection
/// and can destroy the answer before the client reads it (the client then sees a network
/// error, not the 413 or the 401). Bodies declared larger are not read: their senders get
/// the refusal as early as possible, and may miss it; a body of unknown length is read up
/// to the same bounds.
async fn refuse_after_draining(body: Body, declared: Option<u64>, refusal: ApiError) -> ApiError {
    if declared.is_none_or(|n| n <= DRAIN_BYTES) {
        drain(body.into_data_stream()).await;
    }
    refusal
}

/// Reads and throws away what is left of a body: at most [`DRAIN_BYTES`], for at most
/// [`DRAIN_TIME`].
async fn drain<S, E>(mut stream: S)
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    let mut read = 0u64;
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        while let Some(Ok(chunk)) = stream.next().await {
            read += chunk.len() as u64;
            if read > DRAIN_BYTES {
                break;
            }
        }
    })
    .await;
}

fn upload_too_large(limit: u64) -> ApiError {
    ApiError::too_large(format!("uploads are limited to {limit} bytes (MaxUploadBytes)"))
}

/// Reads a body stream, stopping as soon as `budget` bytes are exceeded. Bodies up to
/// `in_memory` bytes (by their announced length) stay in memory.
async fn spool<S, E>(
    mut stream: S,
    dir: &SpoolDir,
    budget: &mut u64,
    limit: u64,
    expected: Option<u64>,
    in_memory: u64,
) -> Result<Spooled, ApiError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let read_error = |e: E| ApiError::bad_request("upload_interrupted", format!("the upload could not be read: {e}"));
    if expected.is_some_and(|n| n <= in_memory) {
        let mut buf = bytes::BytesMut::with_capacity(expected.unwrap_or(0) as usize);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(read_error)?;
            *budget = budget.checked_sub(chunk.len() as u64).ok_or_else(|| upload_too_large(limit))?;
            buf.extend_from_slice(&chunk);
            if buf.len() as u64 > in_memory {
                // The client sent more than it announced: continue on disk.
                let mut file = tokio::fs::File::from_std(dir.file()?);
                file.write_all(&buf).await.map_err(ApiError::spool_io)?;
                return spool_rest(stream, file, budget, limit).await;
            }
        }
        return Ok(Spooled::Memory(buf.freeze()));
    }
    let file = tokio::fs::File::from_std(dir.file()?);
    spool_rest(stream, file, budget, limit).await
}

async fn spool_rest<S, E>(mut stream: S, mut file: tokio::fs::File, budget: &mut u64, limit: u64) -> Result<Spooled, ApiError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request("upload_interrupted", format!("the upload could not be read: {e}")))?;
        *budget = budget.checked_sub(chunk.len() as u64).ok_or_else(|| upload_too_large(limit))?;
        if let Err(e) = file.write_all(&chunk).await {
            // A full disk: the rest of a small body is read (bounded) before the 507, so
            // that the client still sending gets the answer rather than a reset.
            drain(stream).await;
            return Err(ApiError::spool_io(e));
        }
    }
    file.flush().await.map_err(ApiError::spool_io)?;
    let mut std_file = file.into_std().await;
    std::io::Seek::rewind(&mut std_file).map_err(ApiError::spool_io)?;
    Ok(Spooled::File(std_file))
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok())
}

/// What an upload declares itself to be.
enum Declared {
    Zip,
    Dicom,
    Sniff,
    Multipart(String),
}

fn declared_type(headers: &HeaderMap) -> Result<Declared, ApiError> {
    let raw = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let mime = raw.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    match mime.as_str() {
        "application/zip" | "application/x-zip-compressed" | "application/x-zip" => Ok(Declared::Zip),
        "application/dicom" => Ok(Declared::Dicom),
        // tar archives (plain, gzip, Zstandard) are told apart by their first bytes.
        "application/octet-stream"
        | "application/x-tar"
        | "application/gzip"
        | "application/x-gzip"
        | "application/x-compressed-tar"
        | "application/zstd"
        | "application/x-zstd"
        | "application/x-zstd-compressed-tar" => Ok(Declared::Sniff),
        "multipart/form-data" => multer::parse_boundary(raw)
            .map(Declared::Multipart)
            .map_err(|_| ApiError::bad_request("invalid_multipart", "multipart/form-data without a valid boundary")),
        _ => Err(ApiError::unsupported_media_type(
            "send the file itself as application/zip, application/x-tar, application/gzip, application/zstd, application/dicom or application/octet-stream (or multipart/form-data with `files` parts)",
        )),
    }
}

/// Import DICOM: the body is a ZIP (Stored, Deflate or Deflate64 entries), a tar
/// archive (plain, gzip or Zstandard, told apart by their first bytes) or a DICOM
/// file, with or without the 128-byte preamble (`application/zip`, `application/x-tar`,
/// `application/gzip`, `application/zstd`, `application/dicom`,
/// `application/octet-stream` sniffed), or `multipart/form-data`
/// with `files` parts (sidecar only: Orthanc 1.10.1 swallows multipart bodies).
#[utoipa::path(post, path = "/import", tag = "patients",
    request_body(content = Vec<u8>, description = "A ZIP or tar archive (.tar, .tgz, .tar.zst) or a DICOM file", content_type = "application/zip"),
    responses(
        (status = 200, body = ImportReport),
        (status = 400, description = "Empty body, or nothing DICOM in it (`no_dicom`)", body = ErrorBody),
        (status = 403, description = "The caller has no group (`no_group`)", body = ErrorBody),
        (status = 413, description = "Upload, entry count or inflated size over a limit", body = ErrorBody),
        (status = 415, description = "Unsupported content type", body = ErrorBody),
        (status = 422, description = "Truncated or corrupt ZIP, or an entry compressed with a method other than Stored, Deflate or Deflate64 (`invalid_zip`, the message names the entry and the method); zip bomb (`zip_bomb`)", body = ErrorBody),
        (status = 503, description = "Orthanc or the database unavailable", body = ErrorBody),
        (status = 507, description = "The server's disk is full (`insufficient_storage`): the spool (`SpoolDir`) or the database; nothing was kept", body = ErrorBody),
    ))]
async fn import(
    State(app): State<SharedApp>,
    caller: Result<Caller, ApiError>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<ImportReport>, ApiError> {
    // A refusal before the upload is read (credentials, CSRF, no group, content type)
    // waits for the rest of a small body, so that the client sees it (see
    // `refuse_after_draining`).
    let target = caller.and_then(|Caller(who)| {
        declared_type(&headers)?;
        Ok(ImportTarget { actor: who.actor(), scope: scope_of(&who), new_patient_group: own_group(&who)? })
    });
    let target = match target {
        Ok(target) => target,
        Err(refusal) => return Err(refuse_after_draining(body, content_length(&headers), refusal).await),
    };
    // The import runs to its end in its own task: a client that goes away stops the
    // reading, not the bookkeeping of what was already stored.
    // A server that stops cuts it where it is (after its drain deadline): what was stored
    // is registered and audited all the same, the row saying how far it got.
    let task = tokio::spawn(async move {
        let mut importer = Importer::new(&app, target)?;
        let received = tokio::select! {
            received = receive_upload(&app, &mut importer, &headers, body) => received,
            () = app.abort.fired() => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "the server is stopping: the import was cut short; what was stored is registered (see the audit trail)",
            )),
        };
        match received {
            Ok(()) => importer.finish().await,
            Err(e) => Err(importer.abandon(e).await),
        }
    });
    let report = task.await.map_err(ApiError::internal)??;
    if report.instances.received == 0 {
        let detail = report.errors.iter().take(5).map(|e| format!("{}: {}", e.file, e.error)).collect::<Vec<_>>().join("; ");
        return Err(ApiError::bad_request(
            "no_dicom",
            format!("nothing in the upload is DICOM ({} entries skipped: {detail})", report.skipped),
        ));
    }
    let n = &report.instances;
    crate::metrics::global().record_import(n.stored, n.already_stored, n.failed);
    Ok(Json(report))
}

/// Reads the upload and feeds its DICOM to `importer`.
async fn receive_upload(app: &App, importer: &mut Importer<'_>, headers: &HeaderMap, body: Body) -> Result<(), ApiError> {
    let declared = declared_type(headers)?;
    let limit = app.config.max_upload_bytes;
    let length = content_length(headers);
    if let Some(declared) = length.filter(|n| *n > limit) {
        return Err(refuse_after_draining(body, Some(declared), upload_too_large(limit)).await);
    }
    if length == Some(0) {
        return Err(ApiError::bad_request("empty_body", "the request body is empty; send a ZIP or DICOM file"));
    }
    let mut budget = limit;
    let dir = SpoolDir::new(app.config.spool_dir.as_deref());
    let stream = body.into_data_stream();
    match declared {
        Declared::Multipart(boundary) => {
            let watch = PartWatch::default();
            let mut form = multer::Multipart::new(watch.watch(stream), boundary);
            let (mut parts, mut fields) = (0u64, 0u64);
            loop {
                watch.between_parts();
                let next = form.next_field().await;
                watch.in_part();
                let Some(field) = next.map_err(|e| watch.refusal(e))? else { break };
                fields += 1;
                if fields > app.config.max_zip_entries {
                    return Err(ApiError::too_large(format!(
                        "the form has more than {} parts (MaxZipEntries)",
                        app.config.max_zip_entries
                    )));
                }
                if field.file_name().is_none() {
                    continue;
                }
                parts += 1;
                let name = field.file_name().unwrap_or("file").to_string();
                let mut part = spool(field.map_err(|e| e.to_string()).boxed(), &dir, &mut budget, limit, None, IN_MEMORY_BODY).await?;
                let head = part.head()?;
                if matches!(sniff(&head), Some("zip" | "tar")) {
                    importer.add_zip(&name, part.into_zip()).await?;
                } else {
                    part.import_as_file(importer, &name, &head).await?;
                }
            }
            if parts == 0 {
                return Err(ApiError::bad_request("empty_body", "the form has no file parts; send them as `files`"));
            }
        }
        declared => {
            // The plugin's bodies are in memory already (Orthanc read them whole).
            let in_memory = if app.bodies_in_memory() { limit } else { IN_MEMORY_BODY };
            let mut body = spool(stream, &dir, &mut budget, limit, length, in_memory).await?;
            let head = body.head()?;
            if head.is_empty() {
                return Err(ApiError::bad_request("empty_body", "the request body is empty; send a ZIP or DICOM file"));
            }
            let is_zip = match declared {
                Declared::Zip => true,
                Declared::Dicom => false,
                _ => matches!(sniff(&head), Some("zip" | "tar")),
            };
            if is_zip {
                importer.add_zip("", body.into_zip()).await?;
            } else {
                body.import_as_file(importer, "upload", &head).await?;
            }
        }
    }
    Ok(())
}
