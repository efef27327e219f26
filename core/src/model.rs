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

impl<T> Paginated<T> {
    /// A page from a service, in the API's list shape.
    pub fn of(page: crate::store::Page<T>, req: crate::store::PageRequest) -> Paginated<T> {
        Paginated { items: page.items, total: page.total, page: req.page, page_size: req.page_size }
    }
}

#[cfg(test)]
mod tests {
    use super::describe_device;

    /// A page of patients written by `WriteJson` is byte for byte what serde_json writes
    /// for its `Serialize`: every field, in order, with serde's escaping of quotes,
    /// backslashes and control characters, non-ASCII text as it is, and chrono's text for
    /// the times and dates the fast path leaves to it.
    #[test]
    fn a_page_of_patients_is_written_as_serde_json_writes_it() {
        use super::{Paginated, Patient, WriteJson};
        use crate::domain::PatientStatus;
        use chrono::{NaiveDate, TimeZone, Utc};
        let time = |y, ns| Utc.with_ymd_and_hms(y, 3, 4, 5, 6, 7).single().expect("time") + chrono::Duration::nanoseconds(ns);
        let texts = [
            "DUPONT",
            "Quérébeuf",
            "O\"Brien",
            "C:\\dir",
            "line\nbreak\ttab\r\u{8}\u{c}",
            "\u{1}\u{1f}\u{7f}",
            "",
            "emoji 🩻 and 日本",
            "a long name without anything to escape, longer than sixteen bytes",
        ];
        let dates = [None, NaiveDate::from_ymd_opt(1950, 1, 31), NaiveDate::from_ymd_opt(-44, 3, 15), NaiveDate::from_ymd_opt(12345, 6, 7)];
        let times = [time(2026, 0), time(2026, 123_000_000), time(2026, 123_456_000), time(2026, 123_456_789), time(10000, 5), time(-1, 0)];
        let items: Vec<Patient> = (0..24)
            .map(|i| {
                let status = PatientStatus::ALL[i % PatientStatus::ALL.len()];
                Patient {
                    id: [1, i64::MAX, 0, -7][i % 4],
                    external_id: texts[i % texts.len()].to_string(),
                    orthanc_patient_id: (i % 3 != 0).then(|| texts[(i + 1) % texts.len()].to_string()),
                    dicom_study_uid: (i % 2 == 0).then(|| "1.2.826.0.1.3680043.8.498.1".to_string()),
                    status,
                    status_label: status.label(),
                    first_name: (i % 5 != 0).then(|| texts[(i + 2) % texts.len()].to_string()),
                    last_name: (i % 7 != 0).then(|| texts[(i + 3) % texts.len()].to_string()),
                    date_of_birth: dates[i % dates.len()],
                    group_id: (i % 2 == 1).then_some(i as i64 * 1000),
                    created_at: times[i % times.len()],
                    updated_at: times[(i + 1) % times.len()],
                }
            })
            .collect();
        for page in [
            Paginated { items: items.clone(), total: 1_000_000, page: 3, page_size: 24 },
            Paginated { items: Vec::new(), total: 0, page: 1, page_size: 50 },
        ] {
            let mut ours = Vec::new();
            page.write_json(&mut ours);
            let serde = serde_json::to_vec(&page).expect("serialise");
            assert_eq!(String::from_utf8(ours).expect("UTF-8"), String::from_utf8(serde).expect("UTF-8"));
        }
    }

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
    match time_text(t) {
        Some(text) => s.serialize_str(text.as_str()),
        None => s.serialize_str(&chrono_time_text(t)),
    }
}

/// A short ASCII text formatted on the stack.
struct Stamp {
    bytes: [u8; 30],
    len: usize,
}

impl Stamp {
    fn new() -> Stamp {
        Stamp { bytes: [0; 30], len: 0 }
    }

    /// Appends `value` as `digits` decimal digits, zero-padded.
    fn digits(&mut self, mut value: u32, digits: usize) {
        for slot in self.bytes[self.len..self.len + digits].iter_mut().rev() {
            *slot = b'0' + (value % 10) as u8;
            value /= 10;
        }
        self.len += digits;
    }

    fn byte(&mut self, b: u8) {
        self.bytes[self.len] = b;
        self.len += 1;
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }
}

/// `t` as chrono's `Serialize` writes it, or `None` outside four-digit years and on a
/// leap second, where [`chrono_time_text`] writes it.
fn time_text(t: &DateTime<Utc>) -> Option<Stamp> {
    use chrono::{Datelike, Timelike};
    // A `DateTime`'s own accessors each add its offset again (even UTC's zero).
    let t = t.naive_utc();
    let (year, nanos) = (t.year(), t.nanosecond());
    if !(0..=9999).contains(&year) || nanos >= 1_000_000_000 {
        return None;
    }
    // `YYYY-MM-DDTHH:MM:SS`, then `.` and 3, 6 or 9 digits when the fraction needs them, then `Z`.
    let fraction = match nanos {
        0 => None,
        n if n % 1_000_000 == 0 => Some((n / 1_000_000, 3)),
        n if n % 1_000 == 0 => Some((n / 1_000, 6)),
        n => Some((n, 9)),
    };
    let mut out = Stamp::new();
    let parts = [(year as u32, 4, b'-'), (t.month(), 2, b'-'), (t.day(), 2, b'T'), (t.hour(), 2, b':'), (t.minute(), 2, b':')];
    for (value, digits, separator) in parts {
        out.digits(value, digits);
        out.byte(separator);
    }
    out.digits(t.second(), 2);
    if let Some((value, digits)) = fraction {
        out.byte(b'.');
        out.digits(value, digits);
    }
    out.byte(b'Z');
    Some(out)
}

/// chrono's own text of a time, for what [`time_text`] leaves to it.
fn chrono_time_text(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// A date as chrono's `Serialize` writes it (`YYYY-MM-DD`; years outside 0–9999 as
/// chrono's `Display` writes them), without `collect_str`.
fn date_json<S: serde::Serializer>(d: &Option<NaiveDate>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        None => s.serialize_none(),
        Some(d) => match date_text(d) {
            Some(text) => s.serialize_str(text.as_str()),
            None => s.serialize_str(&d.to_string()),
        },
    }
}

/// `d` as `YYYY-MM-DD`, or `None` outside four-digit years (chrono's `Display` then).
fn date_text(d: &NaiveDate) -> Option<Stamp> {
    use chrono::Datelike;
    if !(0..=9999).contains(&d.year()) {
        return None;
    }
    let mut out = Stamp::new();
    out.digits(d.year() as u32, 4);
    out.byte(b'-');
    out.digits(d.month(), 2);
    out.byte(b'-');
    out.digits(d.day(), 2);
    Some(out)
}

/// A value that writes its own JSON, byte for byte what serde_json writes for its
/// `Serialize` (the tests compare the two), for the answers of the hot list route: serde
/// escapes every key and string a byte at a time, a seventh of the sidecar's
/// instructions for a page of 50 patients (callgrind). Keys here are literals, and a
/// string is copied whole unless it holds a byte serde_json escapes (then serde_json
/// writes it).
pub trait WriteJson {
    fn write_json(&self, out: &mut Vec<u8>);
}

/// A JSON string, escaped as serde_json escapes it: `"`, `\\` and the bytes below 0x20
/// (a text without those is copied as it is).
fn json_str(out: &mut Vec<u8>, s: &str) {
    // No early exit, so that the compiler checks many bytes at a time.
    let plain = s.bytes().fold(true, |plain, b| plain & (b >= 0x20) & (b != b'"') & (b != b'\\'));
    if plain {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        // Writing into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

fn json_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => json_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

fn json_int(out: &mut Vec<u8>, n: i64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// A stamp needs no escaping: digits, `-`, `:`, `T`, `.` and `Z`.
fn json_stamp(out: &mut Vec<u8>, stamp: &Stamp) {
    out.push(b'"');
    out.extend_from_slice(stamp.as_bytes());
    out.push(b'"');
}

fn json_time(out: &mut Vec<u8>, t: &DateTime<Utc>) {
    match time_text(t) {
        Some(stamp) => json_stamp(out, &stamp),
        None => json_str(out, &chrono_time_text(t)),
    }
}

impl WriteJson for Patient {
    fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"id\":");
        json_int(out, self.id);
        out.extend_from_slice(b",\"external_id\":");
        json_str(out, &self.external_id);
        out.extend_from_slice(b",\"orthanc_patient_id\":");
        json_opt_str(out, self.orthanc_patient_id.as_deref());
        out.extend_from_slice(b",\"dicom_study_uid\":");
        json_opt_str(out, self.dicom_study_uid.as_deref());
        out.extend_from_slice(b",\"status\":");
        json_str(out, self.status.as_str());
        out.extend_from_slice(b",\"status_label\":");
        json_str(out, self.status_label);
        out.extend_from_slice(b",\"first_name\":");
        json_opt_str(out, self.first_name.as_deref());
        out.extend_from_slice(b",\"last_name\":");
        json_opt_str(out, self.last_name.as_deref());
        out.extend_from_slice(b",\"date_of_birth\":");
        match &self.date_of_birth {
            None => out.extend_from_slice(b"null"),
            Some(d) => match date_text(d) {
                Some(stamp) => json_stamp(out, &stamp),
                None => json_str(out, &d.to_string()),
            },
        }
        out.extend_from_slice(b",\"group_id\":");
        match self.group_id {
            Some(g) => json_int(out, g),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"created_at\":");
        json_time(out, &self.created_at);
        out.extend_from_slice(b",\"updated_at\":");
        json_time(out, &self.updated_at);
        out.push(b'}');
    }
}

impl<T: WriteJson> WriteJson for Paginated<T> {
    fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"items\":[");
        for (i, item) in self.items.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            item.write_json(out);
        }
        out.extend_from_slice(b"],\"total\":");
        json_int(out, self.total);
        out.extend_from_slice(b",\"page\":");
        json_int(out, i64::from(self.page));
        out.extend_from_slice(b",\"page_size\":");
        json_int(out, i64::from(self.page_size));
        out.push(b'}');
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
