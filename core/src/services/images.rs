//! The image proxy: who may fetch an instance, its raw DICOM file, and Orthanc's rendered
//! preview. Both answer 404 for an instance of a patient the caller may not see, exactly
//! as for one that does not exist.

use bytes::Bytes;

use super::patients::{audit_hidden, scope_of};
use super::Principal;
use crate::app::App;
use crate::error::{ApiError, ApiResult};
use crate::pacs::{DicomFile, PacsError};

/// Checks that the caller may see the patient an instance belongs to (owners cached
/// for a few seconds in `App::instance_owners`).
async fn authorize(app: &App, who: &Principal, instance_id: &str) -> ApiResult<()> {
    let owner = match app.instance_owners.get(instance_id) {
        Some(owner) => owner,
        None => {
            let mut db = app.store.conn().await?;
            let owner = match db.instance_owner(instance_id).await? {
                Some(owner) => owner,
                None => {
                    // Not registered (yet): ask Orthanc which study it belongs to.
                    let orthanc_study = match app.pacs()?.instance_study(instance_id).await {
                        Ok(s) => s,
                        Err(PacsError::NotFound) => return Err(ApiError::not_found("instance")),
                        Err(e) => return Err(e.into()),
                    };
                    db.study_owner(&orthanc_study).await?.ok_or_else(|| ApiError::not_found("instance"))?
                }
            };
            app.instance_owners.put(instance_id.to_string(), owner);
            owner
        }
    };
    let (patient_id, group_id) = owner;
    if !scope_of(who).allows(group_id) {
        audit_hidden(app, who, patient_id).await;
        return Err(ApiError::not_found("instance"));
    }
    Ok(())
}

/// The raw DICOM file of an instance whose patient the caller may see.
/// Users of a `deidentified_only` group get 403 `deidentified_only` (the preview, a
/// rendering without the DICOM header, stays available to them).
pub async fn file(app: &App, who: &Principal, instance_id: &str) -> ApiResult<DicomFile> {
    authorize(app, who, instance_id).await?;
    super::pseudonyms::require_identified_allowed(app, who, "image").await?;
    app.pacs()?.instance_file(instance_id).await.map_err(|e| match e {
        PacsError::NotFound => ApiError::not_found("instance"),
        other => other.into(),
    })
}

/// Orthanc's PNG preview of an instance whose patient the caller may see. An instance
/// Orthanc cannot render (no pixel data, an unsupported transfer syntax) is a 422
/// `preview_unavailable`; a 503 only when Orthanc itself does not answer.
pub async fn preview(app: &App, who: &Principal, instance_id: &str) -> ApiResult<Bytes> {
    authorize(app, who, instance_id).await?;
    let pacs = app.pacs()?;
    let error = match pacs.instance_preview(instance_id).await {
        Ok(png) => return Ok(png),
        Err(e) => e,
    };
    // Orthanc says "not found", 4xx or 5xx for images it cannot decode (in-process, a
    // missing pixel data element is an "inexistent item"): tell those apart from an
    // instance that is gone and from Orthanc being down.
    match pacs.instance_study(instance_id).await {
        Ok(_) => {
            tracing::debug!(error = %error, instance_id, "Orthanc could not render a preview");
            Err(ApiError::unprocessable("preview_unavailable", "Orthanc cannot render a preview of this instance"))
        }
        Err(PacsError::NotFound) => Err(ApiError::not_found("instance")),
        Err(down) => Err(down.into()),
    }
}
