//! `GET /api/stats`.

use std::collections::BTreeMap;

use chrono::Duration;
use serde::Serialize;
use utoipa::ToSchema;

use super::patients::scope_of;
use super::Principal;
use crate::app::App;
use crate::domain::PatientStatus;
use crate::error::ApiResult;

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct PatientStats {
    pub total: i64,
    /// Every status code, with 0 for the empty ones.
    pub by_status: BTreeMap<String, i64>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct UserStats {
    pub total: i64,
    pub active: i64,
    pub admins: i64,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ActivityStats {
    pub logins_30d: i64,
    pub imports_30d: i64,
    pub exports_30d: i64,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct StorageStats {
    pub instances: i64,
    pub studies: i64,
    pub disk_size_mb: f64,
}

/// Patient figures count what the caller may see; the rest is for admins only.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Stats {
    pub patients: PatientStats,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub users: Option<UserStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub activity: Option<ActivityStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageStats>,
}

pub async fn stats(app: &App, who: &Principal) -> ApiResult<Stats> {
    let mut db = app.store.conn().await?;
    let counts = db.patient_status_counts(scope_of(who)).await?;
    let mut by_status: BTreeMap<String, i64> = PatientStatus::ALL.iter().map(|s| (s.as_str().to_string(), 0)).collect();
    for (status, n) in counts.0 {
        by_status.insert(status, n);
    }
    let patients = PatientStats { total: by_status.values().sum(), by_status };
    if !who.is_admin() {
        return Ok(Stats { patients, users: None, activity: None, storage: None });
    }
    let u = db.user_counts().await?;
    let a = db.activity_since(crate::store::now() - Duration::days(30)).await?;
    drop(db);
    let s = app.pacs()?.statistics().await?;
    Ok(Stats {
        patients,
        users: Some(UserStats { total: u.total, active: u.active, admins: u.admins }),
        activity: Some(ActivityStats { logins_30d: a.logins, imports_30d: a.imports, exports_30d: a.exports }),
        storage: Some(StorageStats { instances: s.instances, studies: s.studies, disk_size_mb: s.disk_size_mb }),
    })
}
