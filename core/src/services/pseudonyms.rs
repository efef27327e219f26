//! Keys, pseudonyms and the `deidentified_only` group policy. The key of a patient's
//! group names it; ungrouped patients (admins' triage) use one key kept in `settings`.

use serde_json::json;

use super::{action, Outcome, Principal};
use crate::app::App;
use crate::deidentify::DeidKey;
use crate::domain::{ExportPolicy, Id};
use crate::error::{ApiError, ApiResult};
use crate::store::patients::PatientRow;
use crate::store::{Db, StoreError};

/// The `settings` key of the key used for patients without a group.
const UNGROUPED_KEY: &str = "deid_key_ungrouped";

/// The de-identification key of a group (or of ungrouped patients), made on first use.
pub async fn key_for(db: &mut Db, group_id: Option<Id>) -> ApiResult<DeidKey> {
    let candidate = DeidKey::generate().to_hex();
    let hex = match group_id {
        Some(g) => db.group_deid_key(g, &candidate).await?.ok_or_else(|| ApiError::not_found("group"))?,
        None => db.setting_or_insert(UNGROUPED_KEY, &candidate).await?,
    };
    DeidKey::from_hex(&hex).ok_or_else(|| StoreError::Corrupt("a de-identification key is not 64 hex digits".into()).into())
}

/// The patient's pseudonym under its group's key, remembered so that admins can search
/// for it.
pub async fn pseudonym_of(db: &mut Db, patient: &PatientRow) -> ApiResult<(DeidKey, String)> {
    let key = key_for(db, patient.group_id).await?;
    let pseudonym = key.pseudonym(&patient.external_id);
    db.record_pseudonym(&pseudonym, patient.id, patient.group_id).await?;
    Ok((key, pseudonym))
}

/// The caller's group policy (admins are never restricted), cached briefly: the image
/// proxy asks on every download.
pub async fn policy_of(app: &App, who: &Principal) -> ApiResult<ExportPolicy> {
    let Some(group) = who.user.group_id.filter(|_| !who.is_admin()) else {
        return Ok(ExportPolicy::Any);
    };
    if let Some(p) = app.export_policies.get(&group) {
        return Ok(p);
    }
    let policy = app.store.conn().await?.group_export_policy(group).await?.unwrap_or(ExportPolicy::Any);
    app.export_policies.put(group, policy);
    Ok(policy)
}

/// Refuses identified data (exports, image files) to users of a `deidentified_only`
/// group: 403 `deidentified_only`, audited.
pub async fn require_identified_allowed(app: &App, who: &Principal, what: &str) -> ApiResult<()> {
    if policy_of(app, who).await? != ExportPolicy::DeidentifiedOnly {
        return Ok(());
    }
    let row = who.actor().audit(action::ACCESS_DENIED, Outcome::Denied).details(json!({"reason": "deidentified_only", "what": what}));
    if let Err(e) = app.store.audit(&row).await {
        tracing::warn!(error = %e, "could not audit a deidentified_only refusal");
    }
    Err(ApiError::forbidden("deidentified_only", "your group may only export de-identified data (deidentify=true)"))
}
