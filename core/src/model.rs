//! The JSON shapes of the API (DESIGN.md section 3). Services return these; storage rows
//! never reach the client directly, so a hash cannot leak by accident.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::domain::{ExportPolicy, Id, PatientStatus, Role, TokenScope, UserStatus};
use crate::store::audit::AuditRow;
use crate::store::groups::GroupRow;
use crate::store::patients::{InstanceWithStudy, PatientRow, StudyRow};
use crate::store::sessions::SessionRow;
use crate::store::tokens::TokenRow;
use crate::store::users::{AuthUser, UserRow};

/// A user as the API shows it; never a hash.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct User {
    pub id: Id,
    pub email: String,
    pub role: Role,
    pub status: UserStatus,
    pub group_id: Option<Id>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl From<&UserRow> for User {
    fn from(r: &UserRow) -> Self {
        User {
            id: r.id,
            email: r.email.clone(),
            role: r.role,
            status: r.status,
            group_id: r.group_id,
            first_name: r.first_name.clone(),
            last_name: r.last_name.clone(),
            created_at: r.created_at,
        }
    }
}

impl From<&AuthUser> for User {
    fn from(r: &AuthUser) -> Self {
        User {
            id: r.id,
            email: r.email.clone(),
            role: r.role,
            status: r.status,
            group_id: r.group_id,
            first_name: r.first_name.clone(),
            last_name: r.last_name.clone(),
            created_at: r.created_at,
        }
    }
}

/// A personal API token as listed; never the secret or its hash.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct ApiToken {
    pub id: Id,
    /// The owner (shown to admins in `GET /api/tokens`).
    pub user_id: Id,
    pub name: String,
    pub scope: TokenScope,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// Updated at most once a minute.
    pub last_used_at: Option<DateTime<Utc>>,
}

impl From<TokenRow> for ApiToken {
    fn from(r: TokenRow) -> Self {
        ApiToken {
            id: r.id,
            user_id: r.user_id,
            name: r.name,
            scope: r.scope,
            created_at: r.created_at,
            expires_at: r.expires_at,
            last_used_at: r.last_used_at,
        }
    }
}

/// A token just created: the only answer that ever carries its secret.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct NewApiToken {
    pub id: Id,
    pub name: String,
    pub scope: TokenScope,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// `coh_` + 43 base64url characters; shown once, send it as `Authorization: Bearer`.
    pub token: String,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Group {
    pub id: Id,
    pub name: String,
    pub created_at: DateTime<Utc>,
    /// Number of users in the group.
    pub members: i64,
    /// `deidentified_only`: the group's users may only export de-identified data.
    pub export_policy: ExportPolicy,
}

impl From<GroupRow> for Group {
    fn from(r: GroupRow) -> Self {
        Group { id: r.id, name: r.name, created_at: r.created_at, members: r.members, export_policy: r.export_policy }
    }
}

/// One login (device) of the caller.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Session {
    pub id: String,
    /// A short description of the client, derived from its user agent.
    pub device: String,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// True for the session making this request.
    pub current: bool,
}

impl Session {
    pub fn from_row(r: SessionRow, current_id: &str) -> Self {
        Session {
            device: describe_device(r.user_agent.as_deref()),
            current: r.id == current_id,
            id: r.id,
            user_agent: r.user_agent,
            ip: r.ip,
            created_at: r.created_at,
            last_seen_at: r.last_seen_at,
            expires_at: r.expires_at,
        }
    }
}

/// "Firefox on Linux"-style summary of a user agent; good enough to tell devices apart.
pub fn describe_device(user_agent: Option<&str>) -> String {
    let Some(ua) = user_agent.filter(|s| !s.trim().is_empty()) else {
        return "Unknown device".into();
    };
    let browsers = [
        ("Edg/", "Edge"),
        ("OPR/", "Opera"),
        ("Firefox/", "Firefox"),
        ("Chrome/", "Chrome"),
        ("Safari/", "Safari"),
        ("curl/", "curl"),
        ("python-requests", "Python"),
        ("python-httpx", "Python"),
    ];
    let systems =
        [("Android", "Android"), ("iPhone", "iOS"), ("iPad", "iPadOS"), ("Windows", "Windows"), ("Mac OS X", "macOS"), ("Linux", "Linux")];
    let browser = browsers.iter().find(|(k, _)| ua.contains(k)).map(|(_, v)| *v);
    let system = systems.iter().find(|(k, _)| ua.contains(k)).map(|(_, v)| *v);
    match (browser, system) {
        (Some(b), Some(s)) => format!("{b} on {s}"),
        (Some(b), None) => b.to_string(),
        (None, Some(s)) => s.to_string(),
        (None, None) => ua.chars().take(60).collect(),
    }
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct AuditEntry {
    pub id: Id,
    pub at: DateTime<Utc>,
    pub user_id: Option<Id>,
    pub actor_email: Option<String>,
    pub action: String,
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    pub outcome: String,
    pub ip: Option<String>,
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
}

impl From<AuditRow> for AuditEntry {
    fn from(r: AuditRow) -> Self {
        AuditEntry {
            details: serde_json::from_str(&r.details).unwrap_or(serde_json::Value::String(r.details)),
            id: r.id,
            at: r.at,
            user_id: r.user_id,
            actor_email: r.actor_email,
            action: r.action,
            resource_type: r.resource_type,
            resource_id: r.resource_id,
            outcome: r.outcome,
            ip: r.ip,
        }
    }
}

/// `?page=&page_size=` of every list.
#[derive(Clone, Copy, Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// 1-based page number (default 1).
    #[param(minimum = 1)]
    pub page: Option<u32>,
    /// Items per page, 1 to 200 (default 20).
    #[param(minimum = 1, maximum = 200)]
    pub page_size: Option<u32>,
}

/// A page of a list: `{"items": [...], "total": N, "page": 1, "page_size": 20}`.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Paginated<T> {
    pub items: Vec<T>,
    pub total: i64,
    pub page: u32,
    pub page_size: u32,
}

#[cfg(test)]
mod tests {
    use super::describe_device;

    /// The patient's times and dates are written exactly as chrono's `Serialize` writes
    /// them, which the API has always answered.
    #[test]
    fn patient_times_and_dates_are_written_as_chrono_writes_them() {
        use chrono::{NaiveDate, TimeZone, Utc};
        #[derive(serde::Serialize)]
        struct Ours {
            #[serde(serialize_with = "super::time_json")]
            t: chrono::DateTime<Utc>,
            #[serde(serialize_with = "super::date_json")]
            d: Option<NaiveDate>,
        }
        #[derive(serde::Serialize)]
        struct Chrono {
            t: chrono::DateTime<Utc>,
            d: Option<NaiveDate>,
        }
        let base = Utc.with_ymd_and_hms(2026, 12, 3, 9, 5, 7).single().expect("time");
        let times = [0, 1, 120_000_000, 123_000_000, 123_456_000, 123_456_789, 999_999_999]
            .map(|ns| base + chrono::Duration::nanoseconds(ns))
            .into_iter()
            .chain([
                Utc.with_ymd_and_hms(1, 1, 1, 0, 0, 0).single().expect("time"),
                Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).single().expect("time"),
            ])
            .chain([
                Utc.with_ymd_and_hms(-1, 1, 1, 0, 0, 0).single().expect("time"),
                Utc.with_ymd_and_hms(10000, 1, 1, 0, 0, 0).single().expect("time"),
            ])
            .chain([Utc.with_ymd_and_hms(1999, 1, 2, 3, 4, 5).single().expect("time") + chrono::Duration::microseconds(7)]);
        let dates = [
            None,
            NaiveDate::from_ymd_opt(1959, 7, 8),
            NaiveDate::from_ymd_opt(2000, 2, 29),
            NaiveDate::from_ymd_opt(0, 1, 1),
            NaiveDate::from_ymd_opt(9999, 12, 31),
            NaiveDate::from_ymd_opt(-44, 3, 15),
            NaiveDate::from_ymd_opt(12345, 6, 7),
            NaiveDate::from_ymd_opt(7, 10, 1),
        ];
        for t in times {
            for d in dates {
                let ours = serde_json::to_string(&Ours { t, d }).expect("ours");
                let chrono = serde_json::to_string(&Chrono { t, d }).expect("chrono");
                assert_eq!(ours, chrono);
            }
        }
    }

    #[test]
    fn devices_are_described_from_user_agents() {
        let firefox = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
        assert_eq!(describe_device(Some(firefox)), "Firefox on Linux");
        let chrome_mac = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 Chrome/120.0 Safari/537.36";
        assert_eq!(describe_device(Some(chrome_mac)), "Chrome on macOS");
        assert_eq!(describe_device(Some("curl/8.1")), "curl");
        assert_eq!(describe_device(None), "Unknown device");
    }
}

/// A patient record (DESIGN.md section 2).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Patient {
    pub id: Id,
    /// IPP: the DICOM PatientID.
    pub external_id: String,
    pub orthanc_patient_id: Option<String>,
    /// StudyInstanceUID of the latest study.
    pub dicom_study_uid: Option<String>,
    pub status: PatientStatus,
    /// The status in French, as the front end shows it.
    pub status_label: &'static str,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    #[serde(serialize_with = "date_json")]
    pub date_of_birth: Option<NaiveDate>,
    pub group_id: Option<Id>,
    #[serde(serialize_with = "time_json")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "time_json")]
    pub updated_at: DateTime<Utc>,
}

/// A time as chrono's own `Serialize` writes it (RFC 3339, `Z`, 0, 3, 6 or 9 digits of
/// fraction), formatted first and written once: chrono's goes through `collect_str`, one
/// escaped `write_char` per character, which was a fifth of serialising a page of
/// patients (callgrind).
fn time_json<S: serde::Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    use chrono::{Datelike, Timelike};
    let (year, nanos) = (t.year(), t.nanosecond());
    if !(0..=9999).contains(&year) || nanos >= 1_000_000_000 {
        // Outside four-digit years, or a leap second: chrono's own text.
        return s.serialize_str(&t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true));
    }
    // `YYYY-MM-DDTHH:MM:SS`, then `.` and 3, 6 or 9 digits when the fraction needs them, then `Z`.
    let fraction = match nanos {
        0 => None,
        n if n % 1_000_000 == 0 => Some((n / 1_000_000, 3)),
        n if n % 1_000 == 0 => Some((n / 1_000, 6)),
        n => Some((n, 9)),
    };
    let mut out = [0u8; 30];
    let mut n = 0;
    let parts = [(year as u32, 4, b'-'), (t.month(), 2, b'-'), (t.day(), 2, b'T'), (t.hour(), 2, b':'), (t.minute(), 2, b':')];
    for (value, digits, separator) in parts {
        push_digits(&mut out, &mut n, value, digits);
        out[n] = separator;
        n += 1;
    }
    push_digits(&mut out, &mut n, t.second(), 2);
    if let Some((value, digits)) = fraction {
        out[n] = b'.';
        n += 1;
        push_digits(&mut out, &mut n, value, digits);
    }
    out[n] = b'Z';
    n += 1;
    s.serialize_str(std::str::from_utf8(&out[..n]).unwrap_or_default())
}

/// Writes `value` as `digits` decimal digits (zero-padded) at `out[*n..]`.
fn push_digits(out: &mut [u8], n: &mut usize, value: u32, digits: u32) {
    for place in (0..digits).rev() {
        out[*n] = b'0' + (value / 10u32.pow(place) % 10) as u8;
        *n += 1;
    }
}

/// A date as chrono's `Serialize` writes it (`YYYY-MM-DD`; years outside 0–9999 as
/// chrono's `Display` writes them), without `collect_str`.
fn date_json<S: serde::Serializer>(d: &Option<NaiveDate>, s: S) -> Result<S::Ok, S::Error> {
    use chrono::Datelike;
    match d {
        None => s.serialize_none(),
        Some(d) if (0..=9999).contains(&d.year()) => {
            let mut text = [b'-'; 10];
            let mut n = 0;
            push_digits(&mut text, &mut n, d.year() as u32, 4);
            n += 1;
            push_digits(&mut text, &mut n, d.month(), 2);
            n += 1;
            push_digits(&mut text, &mut n, d.day(), 2);
            s.serialize_str(std::str::from_utf8(&text).unwrap_or_default())
        }
        Some(d) => s.serialize_str(&d.to_string()),
    }
}

impl From<PatientRow> for Patient {
    fn from(r: PatientRow) -> Self {
        Patient {
            id: r.id,
            external_id: r.external_id,
            orthanc_patient_id: r.orthanc_patient_id,
            dicom_study_uid: r.dicom_study_uid,
            status_label: r.status.label(),
            status: r.status,
            first_name: r.first_name,
            last_name: r.last_name,
            date_of_birth: r.date_of_birth,
            group_id: r.group_id,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Study {
    pub id: Id,
    pub study_instance_uid: String,
    pub orthanc_study_id: String,
    pub study_date: Option<NaiveDate>,
    pub description: Option<String>,
    pub modalities: Vec<String>,
    pub instances_count: i64,
}

impl From<StudyRow> for Study {
    fn from(r: StudyRow) -> Self {
        Study {
            id: r.id,
            study_instance_uid: r.study_instance_uid,
            orthanc_study_id: r.orthanc_study_id,
            study_date: r.study_date,
            description: r.description,
            modalities: r.modalities.split(',').filter(|m| !m.is_empty()).map(str::to_string).collect(),
            instances_count: r.instances_count,
        }
    }
}

/// A patient with their studies.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct PatientDetail {
    #[serde(flatten)]
    pub patient: Patient,
    pub studies: Vec<Study>,
    /// Admins only: the pseudonym a de-identified export gives this patient (under its
    /// current group's key).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pseudonym: Option<String>,
}

/// One DICOM instance of a patient; `id` is what `/api/patients/images/{id}` takes.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct PatientInstance {
    pub id: String,
    pub sop_instance_uid: String,
    pub series_instance_uid: String,
    pub study_instance_uid: String,
    pub instance_number: Option<i64>,
    pub modality: Option<String>,
}

impl From<InstanceWithStudy> for PatientInstance {
    fn from(r: InstanceWithStudy) -> Self {
        PatientInstance {
            id: r.orthanc_instance_id,
            sop_instance_uid: r.sop_instance_uid,
            series_instance_uid: r.series_instance_uid,
            study_instance_uid: r.study_instance_uid,
            instance_number: r.instance_number,
            modality: r.modality,
        }
    }
}

/// A patient status and its label.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct StatusLabel {
    pub code: PatientStatus,
    pub label: &'static str,
}
