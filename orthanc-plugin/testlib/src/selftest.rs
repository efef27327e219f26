//! Routes that exercise the FFI layer on its own, for `tests/ffi_selftest.rs`. The test
//! library registers them instead of Cohort when Orthanc's environment sets
//! `COHORT_PLUGIN_SELFTEST=1`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use http::header::{ALLOW, CONTENT_TYPE, LOCATION, SET_COOKIE};
use http::{Method, Response, StatusCode};
use serde_json::{json, Value};

use cohort_orthanc_bridge::sdk::{self, ChangeType, FilterDecision, Registrar, RestRequest, SdkError};

/// The environment variable that selects these routes instead of Cohort.
pub(crate) const ENV: &str = "COHORT_PLUGIN_SELFTEST";

/// How many change events arrived.
static CHANGES_SEEN: AtomicU64 = AtomicU64::new(0);
/// Whether `OrthancStarted` arrived with its NULL resource id mapped to `None`.
static STARTED_WITHOUT_ID: AtomicBool = AtomicBool::new(false);

pub(crate) fn register(plugin: &Registrar) -> Result<(), SdkError> {
    plugin.register_rest_route("/cohort-ffi-selftest(/.*)?", echo)?;
    plugin.register_rest_route("/cohort-ffi-selftest-panic", |_| panic!("deliberate panic in the selftest route"))?;
    plugin.register_rest_route("/cohort-ffi-selftest-status/([0-9]+)", status)?;
    plugin.register_rest_route("/cohort-ffi-selftest-in-process", in_process)?;
    plugin.register_rest_route("/cohort-ffi-selftest-dicom/([0-9a-f-]+)", dicom)?;
    plugin.register_http_filter(|request| {
        let deny_argument = request.query.iter().any(|(key, value)| key == "deny" && value == "yes");
        if request.uri == "/cohort-ffi-selftest-denied" || deny_argument {
            FilterDecision::Deny
        } else {
            FilterDecision::Allow
        }
    })?;
    plugin.register_on_change(|event| {
        CHANGES_SEEN.fetch_add(1, Ordering::Relaxed);
        if event.change == ChangeType::OrthancStarted && event.resource_id.is_none() {
            STARTED_WITHOUT_ID.store(true, Ordering::Relaxed);
        }
    })
}

/// Echoes the request as JSON and sets two cookies.
fn echo(request: RestRequest) -> Response<Bytes> {
    let body = json!({
        "method": request.method.as_str(),
        "path": request.path,
        "groups": request.groups,
        "query": request.query,
        "headers": request.headers,
        "body_length": request.body.len(),
        "changes_seen": CHANGES_SEEN.load(Ordering::Relaxed),
        "started_without_id": STARTED_WITHOUT_ID.load(Ordering::Relaxed),
    });
    let mut response = json_response(StatusCode::OK, &body);
    let headers = response.headers_mut();
    headers.append(SET_COOKIE, http::HeaderValue::from_static("first=1; Path=/; HttpOnly"));
    headers.append(SET_COOKIE, http::HeaderValue::from_static("second=2; Path=/; SameSite=Strict"));
    response
}

/// Answers the status in the path with a JSON body (Location and Allow for 301 and 405).
fn status(request: RestRequest) -> Response<Bytes> {
    let Some(status) = request.groups.first().and_then(|code| code.parse().ok()).and_then(|code| StatusCode::from_u16(code).ok()) else {
        return json_response(StatusCode::BAD_REQUEST, &json!({"error": "not a status"}));
    };
    let mut response = if status == StatusCode::NO_CONTENT {
        Response::new(Bytes::new())
    } else {
        json_response(status, &json!({"status": status.as_u16()}))
    };
    *response.status_mut() = status;
    response.headers_mut().insert(LOCATION, http::HeaderValue::from_static("/cohort-ffi-selftest/moved"));
    response.headers_mut().insert(ALLOW, http::HeaderValue::from_static("GET, POST"));
    response
}

/// Reports what the in-process services return: version, configuration, REST calls.
fn in_process(_: RestRequest) -> Response<Bytes> {
    let system = sdk::call_rest_api(Method::GET, "/system", b"", &[]);
    let missing = sdk::call_rest_api(Method::GET, "/instances/does-not-exist", b"", &[]);
    let body = json!({
        "orthanc_version": sdk::orthanc_version().ok(),
        "configured_name": sdk::get_configuration().ok().and_then(|config| config.get("Name").cloned()),
        "system_status": system.as_ref().ok().map(|answer| answer.status),
        "system_name": system
            .ok()
            .and_then(|answer| serde_json::from_slice::<Value>(&answer.body).ok())
            .and_then(|system| system.get("Name").cloned()),
        "missing_instance": describe(missing.map(|answer| answer.status)),
        "missing_dicom": describe(sdk::get_dicom_for_instance("does-not-exist").map(|buffer| buffer.len())),
    });
    json_response(StatusCode::OK, &body)
}

/// Answers an instance's DICOM file, read in-process.
fn dicom(request: RestRequest) -> Response<Bytes> {
    let id = request.groups.first().map(String::as_str).unwrap_or_default();
    match sdk::get_dicom_for_instance(id) {
        Ok(file) => {
            let mut response = Response::new(Bytes::from(file));
            response.headers_mut().insert(CONTENT_TYPE, http::HeaderValue::from_static("application/dicom"));
            response
        }
        Err(SdkError::NotFound { .. }) => json_response(StatusCode::NOT_FOUND, &json!({"error": "no such instance"})),
        Err(err) => json_response(StatusCode::INTERNAL_SERVER_ERROR, &json!({"error": err.to_string()})),
    }
}

fn describe<T: std::fmt::Debug>(result: Result<T, SdkError>) -> String {
    match result {
        Ok(value) => format!("ok: {value:?}"),
        Err(SdkError::NotFound { .. }) => "not found".to_owned(),
        Err(err) => format!("error: {err}"),
    }
}

fn json_response(status: StatusCode, body: &Value) -> Response<Bytes> {
    let mut response = Response::new(Bytes::from(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    response
}
