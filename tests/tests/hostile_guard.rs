//! The hostile suite, guard half (issue 8): what an attacker without credentials, or with
//! a victim's browser, can do to Orthanc and Cohort. Bodies declared too large, method
//! faking, cross-site writes on Orthanc's own routes through every route family and URI
//! trick, forged, expired, replayed and tossed credentials.
//!
//! Requests go over raw TCP where the exact bytes matter (paths an HTTP library would
//! normalise, bodies declared but never sent).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use cohort_e2e::dicom::{StudySpec, ZipOptions};
use cohort_e2e::{dicom, per_deployment, Backend, Client, Deployment, Host, JWT_SECRET};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MIB: u64 = 1 << 20;

/// One answer read off a raw connection.
#[derive(Debug)]
struct Raw {
    status: u16,
    body: Vec<u8>,
}

impl Raw {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn error_code(&self) -> String {
        serde_json::from_slice::<Value>(&self.body).ok().and_then(|v| v["error"]["code"].as_str().map(str::to_string)).unwrap_or_default()
    }

    /// Orthanc's filter refusal: 403 with an empty body.
    fn is_filter_denial(&self) -> bool {
        self.status == 403 && self.body.is_empty()
    }
}

/// `host:port` of a base URL.
fn authority(url: &str) -> String {
    url.trim_start_matches("http://").trim_end_matches('/').to_string()
}

/// Sends a request as written (`head` is the request line and headers, without the
/// blank line) plus `body`, and reads the answer's status and body (by its
/// `Content-Length`, or to the end), within 20 s.
async fn raw(base: &str, head: &str, body: &[u8]) -> Raw {
    let addr = authority(base);
    let work = async {
        let mut stream = TcpStream::connect(&addr).await.expect("connect");
        let mut request = format!("{head}\r\nHost: {addr}\r\nConnection: close\r\n\r\n").into_bytes();
        request.extend_from_slice(body);
        // The server may answer and close before reading everything: that is fine.
        let _ = stream.write_all(&request).await;
        read_answer(&mut stream).await
    };
    tokio::time::timeout(Duration::from_secs(20), work).await.unwrap_or_else(|_| panic!("no answer to {head:?} within 20 s"))
}

async fn read_answer(stream: &mut TcpStream) -> Raw {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let header_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await.unwrap_or(0);
        assert!(n > 0, "the connection closed before a full answer: {:?}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).to_string();
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("status line");
    let length = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok());
    let mut body = buf[header_end..].to_vec();
    loop {
        if length.is_some_and(|n| body.len() >= n) {
            break;
        }
        let n = stream.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    if let Some(n) = length {
        body.truncate(n);
    }
    Raw { status, body }
}

/// Resident and peak memory of a process, in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{name} missing"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn sign(claims: &Value, secret: &[u8]) -> String {
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(secret)).expect("sign")
}

fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("JWT payload");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64")).expect("claims")
}

async fn add_user(admin: &Client, email: &str, password: &str) {
    admin.post("/api/users", &json!({"email": email, "password": password, "role": "user"})).await.expect_status(201);
}

/// Bodies over 1 MiB (or of unknown size) are refused on every `/api` route before they
/// are read, except an authenticated import within `MaxUploadBytes`. The plugin can only
/// answer Orthanc's empty 403 from its filter; the sidecar answers 413 `too_large` (or
/// the route's own refusal of an unauthenticated caller).
async fn oversized_bodies_are_refused_before_reading(d: Deployment) {
    let base = d.url.clone();
    let plugin = d.host == Host::Plugin;
    let refused = |r: &Raw, what: &str| {
        if plugin {
            assert!(r.is_filter_denial(), "{what}: {} {}", r.status, r.text());
        } else {
            assert_eq!((r.status, r.error_code().as_str()), (413, "too_large"), "{what}: {}", r.text());
        }
    };
    // Declared, never sent: the answer must not wait for the body.
    for size in [MIB + 1, 24 * MIB, 1_500_000_000] {
        let head = format!("POST /api/auth/login HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {size}");
        refused(&raw(&base, &head, b"{").await, &format!("login declaring {size} bytes"));
    }
    for route in ["PUT /api/users/me/profile", "POST /api/groups", "POST /api/patients/export"] {
        let head = format!("{route} HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {}", 64 * MIB);
        refused(&raw(&base, &head, b"").await, route);
    }
    let head = "POST /api/auth/login HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 1e9";
    let r = raw(&base, head, b"").await;
    assert!(r.status == 400 || r.status == 403 || r.status == 413, "malformed length: {} {}", r.status, r.text());
    if plugin {
        // Orthanc would collect a body of unknown length whole before calling Cohort.
        let head = "POST /api/auth/login HTTP/1.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked";
        refused(&raw(&base, head, b"2\r\n{}\r\n0\r\n\r\n").await, "chunked login");
    }
    // A small body still works, and so does a body of exactly 1 MiB.
    d.client().login("nobody@e2e.test", "wrong-password-1").await.expect_error(401, "invalid_credentials");
    let mut padded = r#"{"email": "nobody@e2e.test", "password": "wrong-password-1"}"#.to_string();
    padded.push_str(&" ".repeat(MIB as usize - padded.len()));
    let head = format!("POST /api/auth/login HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {}", padded.len());
    let r = raw(&base, &head, padded.as_bytes()).await;
    assert_eq!((r.status, r.error_code().as_str()), (401, "invalid_credentials"), "1 MiB exactly: {}", r.text());

    // The import: 50 MiB declared is refused to strangers, read for a signed-in caller.
    let head = format!("POST /api/patients/import HTTP/1.1\r\nContent-Type: application/zip\r\nContent-Length: {}", 50 * MIB);
    let r = raw(&base, &head, b"").await;
    if plugin {
        assert!(r.is_filter_denial(), "anonymous import: {} {}", r.status, r.text());
    } else {
        assert_eq!((r.status, r.error_code().as_str()), (401, "not_authenticated"), "anonymous import");
    }
    let admin = d.admin().await;
    let token = admin.cookie("access_token").expect("access token");
    let csrf = admin.cookie("csrf_token").expect("csrf token");
    let junk = vec![b'j'; (2 * MIB) as usize];
    let import = |headers: &str| {
        format!("POST /api/patients/import HTTP/1.1\r\nContent-Type: application/octet-stream\r\nContent-Length: {}{headers}", junk.len())
    };
    // Read and judged (nothing DICOM in it): Bearer, and cookie with its CSRF token.
    let r = raw(&base, &import(&format!("\r\nAuthorization: Bearer {token}")), &junk).await;
    assert_eq!((r.status, r.error_code().as_str()), (400, "no_dicom"), "bearer import: {}", r.text());
    let r = raw(&base, &import(&format!("\r\nCookie: access_token={token}\r\nX-CSRF-Token: {csrf}")), &junk).await;
    assert_eq!((r.status, r.error_code().as_str()), (400, "no_dicom"), "cookie import: {}", r.text());
    // A cookie without the CSRF token, or from a foreign origin, does not get its body read.
    for extra in [
        format!("\r\nCookie: access_token={token}"),
        format!("\r\nCookie: access_token={token}\r\nX-CSRF-Token: {csrf}\r\nOrigin: https://evil.example"),
    ] {
        let r = raw(&base, &import(&extra), &junk).await;
        if plugin {
            assert!(r.is_filter_denial(), "{extra:?}: {} {}", r.status, r.text());
        } else {
            assert_eq!(r.status, 403, "{extra:?}: {}", r.text());
        }
    }
    // Over MaxUploadBytes (set to 8 MiB for this suite) nobody's body is read.
    let head = format!(
        "POST /api/patients/import HTTP/1.1\r\nContent-Type: application/zip\r\nAuthorization: Bearer {token}\r\nContent-Length: {}",
        9 * MIB
    );
    refused(&raw(&base, &head, b"").await, "import over MaxUploadBytes");
}

/// The deployments of this suite: `MaxUploadBytes` of 8 MiB and `MaxZipEntries` of 50,
/// to test the import's limits.
async fn deployment(host: Host, backend: Backend) -> Deployment {
    deployment_with(host, backend, &[]).await
}

async fn deployment_with(host: Host, backend: Backend, extra: &[(&str, Value)]) -> Deployment {
    let mut settings: BTreeMap<String, Value> =
        [("MaxUploadBytes".to_string(), json!(8 * MIB)), ("MaxZipEntries".to_string(), json!(MAX_ZIP_ENTRIES))].into();
    settings.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
    Deployment::start_with(host, backend, settings).await
}

const MAX_ZIP_ENTRIES: u64 = 50;

macro_rules! per_deployment_limited {
    ($scenario:ident) => {
        mod $scenario {
            use cohort_e2e::{Backend, Host};

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sidecar_sqlite() {
                super::$scenario(super::deployment(Host::Sidecar, Backend::Sqlite).await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sidecar_postgres() {
                if cohort_e2e::postgres_skipped() {
                    return;
                }
                super::$scenario(super::deployment(Host::Sidecar, Backend::Postgres).await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn plugin_sqlite() {
                super::$scenario(super::deployment(Host::Plugin, Backend::Sqlite).await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn plugin_postgres() {
                if cohort_e2e::postgres_skipped() {
                    return;
                }
                super::$scenario(super::deployment(Host::Plugin, Backend::Postgres).await).await;
            }
        }
    };
}

per_deployment_limited!(oversized_bodies_are_refused_before_reading);

/// 50 unauthenticated connections declaring 24 MiB to 1.5 GB bodies, held open, leave
/// Orthanc's memory within 100 MB of idle (before the fix Orthanc allocated each
/// declared body whole, before any plugin code ran).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orthanc_memory_stays_flat_under_oversized_requests() {
    let d = deployment(Host::Plugin, Backend::Sqlite).await;
    let pid = d.orthanc.pid();
    d.client().get("/api/health").await.expect_status(200);
    let (idle, hwm_before) = memory_kib(pid);
    let addr = authority(&d.url);
    let mut held = Vec::new();
    for i in 0..50u64 {
        let size = if i == 49 { 1_500_000_000 } else { 24 * MIB + i * MIB / 2 };
        let mut stream = TcpStream::connect(&addr).await.expect("connect");
        let head =
            format!("POST /api/auth/login HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {size}\r\n\r\n");
        stream.write_all(head.as_bytes()).await.expect("send headers");
        stream.write_all(&[b'{'; 4096]).await.expect("send a little body");
        held.push(stream);
    }
    // Memory is sampled while the connections stay open; then each must have had its
    // refusal without sending its body.
    let mut peak = idle;
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        peak = peak.max(memory_kib(pid).0);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, hwm_after) = memory_kib(pid);
    // 100 MB (10^8 bytes) in KiB.
    let limit = 97_656;
    eprintln!("Orthanc RSS: idle {idle} KiB, peak {peak} KiB, VmHWM {hwm_before} -> {hwm_after} KiB");
    assert!(peak - idle < limit, "RSS grew from {idle} KiB to {peak} KiB");
    assert!(hwm_after.saturating_sub(hwm_before.max(idle)) < limit, "peak RSS grew from {hwm_before} KiB to {hwm_after} KiB");
    for stream in &mut held {
        let r = tokio::time::timeout(Duration::from_secs(30), read_answer(stream)).await.expect("an answer while the body is pending");
        assert!(r.is_filter_denial(), "{} {}", r.status, r.text());
    }
    drop(held);
    // Orthanc still serves.
    d.client().get("/api/health").await.expect_status(200);
}

/// `_method` and the method-override headers never turn a request into another method
/// on `/api`: 400 `method_override_refused`, nothing changed.
async fn method_faking_is_refused_on_api(d: Deployment) {
    let admin = d.admin().await;
    let patient = admin.post("/api/patients", &json!({"external_id": "FAKED-1"})).await.expect_status(201);
    let path = format!("/api/patients/{}", patient["id"]);
    for query in ["_method=delete", "_method=DELETE", "_METHOD=delete", "%5Fmethod=delete"] {
        let r = admin.get(&format!("{path}?{query}")).await;
        r.expect_error(400, "method_override_refused");
    }
    for header in ["X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override"] {
        let r = admin.req(Method::GET, &path).header(header, "DELETE").send().await;
        r.expect_error(400, "method_override_refused");
        let r = admin.req(Method::POST, "/api/groups").json(&json!({"name": "faked"})).header(header, "PUT").send().await;
        r.expect_error(400, "method_override_refused");
    }
    if d.host == Host::Sidecar {
        // (Orthanc drops the query string of a POST before anyone sees it.)
        admin
            .req(Method::POST, "/api/groups?_method=put")
            .json(&json!({"name": "faked"}))
            .send()
            .await
            .expect_error(400, "method_override_refused");
    }
    admin.get(&path).await.expect_status(200);
    assert_eq!(admin.get("/api/groups").await.expect_status(200)["total"], 0);
}

per_deployment!(method_faking_is_refused_on_api);

/// The callers of the native-route matrix.
struct Caller {
    name: &'static str,
    headers: String,
    /// May read (GET) Orthanc's own routes.
    reads: bool,
    /// May write (POST, PUT, DELETE) them.
    writes: bool,
}

/// Orthanc's own routes through the plugin's guard: every route family and URI trick ×
/// every kind of caller. Only an admin gets through; a cookie-authenticated write also
/// needs Orthanc's own origin; method faking is refused to everyone; nothing a refused
/// request asked for happens.
async fn native_routes_hold_against_every_caller(backend: Backend) {
    let d = deployment(Host::Plugin, backend).await;
    let base = d.orthanc_url();
    let own = base.clone();
    let admin = d.admin().await;
    let admin_token = admin.cookie("access_token").expect("admin token");
    add_user(&admin, "user@e2e.test", "user-password-1").await;
    let user = d.client();
    user.login("user@e2e.test", "user-password-1").await.expect_status(200);
    let user_token = user.cookie("access_token").expect("user token");
    // A session that was logged out: its token is replayed.
    let gone = d.admin().await;
    let gone_token = gone.cookie("access_token").expect("token");
    gone.req(Method::POST, "/api/auth/logout").send().await.expect_status(204);
    let refresh = admin.refresh_token().expect("refresh token");
    let claims = claims_of(&admin_token);
    let now = chrono::Utc::now().timestamp();
    let mut expired = claims.clone();
    expired["iat"] = json!(now - 3600);
    expired["exp"] = json!(now - 1800);
    let unsigned =
        format!("{}.{}.", URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#), admin_token.split('.').nth(1).unwrap_or_default());

    // Something to attack: one instance in Orthanc.
    let orthanc = d.orthanc_client().await;
    let file = std::fs::read(&dicom::pydicom_samples().files[0].path).expect("read sample");
    let stored = orthanc.req(Method::POST, "/instances").body("application/dicom", file).send().await.expect_status(200);
    let (pid, iid) = (stored["ParentPatient"].as_str().expect("patient").to_string(), stored["ID"].as_str().expect("instance").to_string());

    let cookie = |t: &str| format!("\r\nCookie: access_token={t}");
    let bearer = |t: &str| format!("\r\nAuthorization: Bearer {t}");
    let c = |name, headers: String, reads, writes| Caller { name, headers, reads, writes };
    let callers = [
        c("nobody", String::new(), false, false),
        c("user cookie, own origin", format!("{}\r\nOrigin: {own}", cookie(&user_token)), false, false),
        c("user bearer", bearer(&user_token), false, false),
        c("admin cookie, no origin", cookie(&admin_token), true, false),
        c("admin cookie, own origin", format!("{}\r\nOrigin: {own}", cookie(&admin_token)), true, true),
        c("admin cookie, own referer", format!("{}\r\nReferer: {own}/app/explorer.html", cookie(&admin_token)), true, true),
        c("admin cookie, foreign origin", format!("{}\r\nOrigin: https://evil.example", cookie(&admin_token)), true, false),
        c("admin cookie, foreign referer", format!("{}\r\nReferer: https://evil.example/{own}", cookie(&admin_token)), true, false),
        c("admin cookie, null origin", format!("{}\r\nOrigin: null", cookie(&admin_token)), true, false),
        c("admin cookie, lookalike origin", format!("{}\r\nOrigin: {own}.evil.example", cookie(&admin_token)), true, false),
        c("admin bearer", bearer(&admin_token), true, true),
        c("admin bearer, foreign origin", format!("{}\r\nOrigin: https://evil.example", bearer(&admin_token)), true, true),
        c("tossed cookie", format!("\r\nCookie: access_token={user_token}; access_token={admin_token}\r\nOrigin: {own}"), false, false),
        c(
            "tossed cookie after",
            format!("\r\nCookie: access_token={admin_token}; access_token={user_token}\r\nOrigin: {own}"),
            false,
            false,
        ),
        c("forged bearer", bearer(&sign(&claims, b"not-the-server-secret-not-the-server-secret")), false, false),
        c("expired bearer", bearer(&sign(&expired, JWT_SECRET.as_bytes())), false, false),
        c("unsigned bearer", bearer(&unsigned), false, false),
        c("refresh token as bearer", bearer(&refresh), false, false),
        c("refresh token as cookie", format!("{}\r\nOrigin: {own}", cookie(&refresh)), false, false),
        c("logged-out session", format!("{}\r\nOrigin: {own}", cookie(&gone_token)), false, false),
        c("logged-out bearer", bearer(&gone_token), false, false),
    ];
    let bogus = "0000000a-0000000b-0000000c-0000000d-0000000e";
    // (method, path, body); DELETEs aim at ids that do not exist, so allowed callers
    // get Orthanc's 404 and nothing is lost.
    let routes: Vec<(&str, String, &str)> = vec![
        ("GET", "/patients".into(), ""),
        ("GET", format!("/instances/{iid}/file"), ""),
        ("GET", "/wado?requestType=WADO".into(), ""),
        ("GET", "/plugins".into(), ""),
        ("GET", "/app/explorer.html".into(), ""),
        ("POST", "/tools/find".into(), r#"{"Level":"Patient","Query":{}}"#),
        ("POST", format!("/patients/{bogus}/anonymize"), "{}"),
        ("POST", "/instances".into(), "not dicom"),
        ("POST", "/tools/lookup".into(), "nothing"),
        ("PUT", format!("/patients/{pid}/protected"), "0"),
        ("DELETE", format!("/patients/{bogus}"), ""),
        ("DELETE", format!("/instances/{bogus}"), ""),
    ];
    let mut failures = Vec::new();
    for caller in &callers {
        for (method, path, body) in &routes {
            let head = format!("{method} {path} HTTP/1.1{}\r\nContent-Length: {}", caller.headers, body.len());
            let r = raw(&base, &head, body.as_bytes()).await;
            let allowed = if *method == "GET" { caller.reads } else { caller.writes };
            if allowed == r.is_filter_denial() {
                failures.push(format!(
                    "{}: {method} {path} -> {} {} (expected {})",
                    caller.name,
                    r.status,
                    r.text().chars().take(80).collect::<String>(),
                    if allowed { "through" } else { "403" }
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{} wrong answers:\n{}", failures.len(), failures.join("\n"));

    // URI tricks aimed at the real patient, by every caller that may not write: none
    // deletes it (Orthanc refuses the path, routes it to Cohort's /api, or the guard
    // denies it).
    let tricks = [
        format!("/patients/{pid}"),
        format!("/patients/{pid}/"),
        format!("/PATIENTS/{pid}"),
        format!("/patients/./{pid}"),
        format!("/tools/../patients/{pid}"),
        format!("/patients/{pid}."),
        format!("/patients%2F{pid}"),
        format!("/%70atients/{pid}"),
        format!("//patients/{pid}"),
        format!("/api/../patients/{pid}"),
        format!("/api/%2e%2e/patients/{pid}"),
        format!("/api/..%2Fpatients/{pid}"),
    ];
    for caller in callers.iter().filter(|c| !c.writes) {
        for path in &tricks {
            let r = raw(&base, &format!("DELETE {path} HTTP/1.1{}", caller.headers), b"").await;
            assert!(!(200..300).contains(&r.status), "{}: DELETE {path} -> {} {}", caller.name, r.status, r.text());
        }
    }
    // Method faking, even by an admin, even with a Bearer token.
    for caller in &callers {
        for (head, what) in [
            (format!("GET /patients/{pid}?_method=DELETE HTTP/1.1{}", caller.headers), "_method"),
            (format!("GET /patients/{pid}?_method=delete&x=1 HTTP/1.1{}", caller.headers), "_method"),
            (format!("GET /patients/{pid} HTTP/1.1{}\r\nX-HTTP-Method-Override: DELETE", caller.headers), "override header"),
            (
                format!("POST /patients/{pid} HTTP/1.1{}\r\nX-HTTP-Method-Override: DELETE\r\nContent-Length: 0", caller.headers),
                "override header on POST",
            ),
            (format!("GET /patients/{pid} HTTP/1.1{}\r\nX-HTTP-Method: DELETE", caller.headers), "X-HTTP-Method"),
            (format!("GET /patients/{pid} HTTP/1.1{}\r\nX-Method-Override: DELETE", caller.headers), "X-Method-Override"),
        ] {
            let r = raw(&base, &head, b"").await;
            assert!(r.is_filter_denial(), "{}: {what}: {} {}", caller.name, r.status, r.text());
        }
    }
    let patient = orthanc.get(&format!("/patients/{pid}")).await.expect_status(200);
    assert_eq!(patient["ID"], pid.as_str(), "the patient survived every attempt");
    assert_eq!(d.orthanc_instances().await, 1);
}

cohort_e2e::per_backend!(native_routes_hold_against_every_caller);

/// A stored (uncompressed) ZIP written byte by byte. With `dicm_in_extra`, the first
/// entry's local header carries an extra field that puts `DICM` at offset 128: the
/// archive then also looks like a DICOM file (issue 8, item 4).
fn stored_zip(entries: &[(&str, Vec<u8>)], dicm_in_extra: bool) -> Vec<u8> {
    let u16le = |v: usize| u16::try_from(v).expect("u16").to_le_bytes();
    let u32le = |v: usize| u32::try_from(v).expect("u32").to_le_bytes();
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (i, (name, data)) in entries.iter().enumerate() {
        let offset = out.len();
        let crc = crc32fast::hash(data);
        let mut extra = Vec::new();
        if dicm_in_extra && i == 0 {
            let extra_start = 30 + name.len();
            let payload = 132 + 16 - (extra_start + 4);
            extra.extend_from_slice(&[0xfe, 0xca]);
            extra.extend_from_slice(&u16le(payload));
            extra.resize(4 + payload, 0);
            extra[128 - extra_start..132 - extra_start].copy_from_slice(b"DICM");
        }
        let fields = |sig: &[u8]| {
            let mut h = sig.to_vec();
            h.extend_from_slice(&[20, 0, 0, 0, 0, 0, 0, 0, 0x21, 0]); // version, flags, stored, time, 1980-01-01
            h.extend_from_slice(&crc.to_le_bytes());
            h.extend_from_slice(&u32le(data.len()));
            h.extend_from_slice(&u32le(data.len()));
            h.extend_from_slice(&u16le(name.len()));
            h
        };
        out.extend(fields(b"PK\x03\x04"));
        out.extend_from_slice(&u16le(extra.len()));
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&extra);
        out.extend_from_slice(data);
        let mut c = b"PK\x01\x02".to_vec();
        c.extend_from_slice(&[20, 0]); // made by
        c.extend(fields(b"")[..].iter().copied());
        c.extend_from_slice(&[0; 12]); // extra and comment lengths, disk, attributes
        c.extend_from_slice(&u32le(offset));
        c.extend_from_slice(name.as_bytes());
        central.extend(c);
    }
    let (cd_offset, cd_len) = (out.len(), central.len());
    out.extend(central);
    out.extend_from_slice(b"PK\x05\x06\0\0\0\0");
    out.extend_from_slice(&u16le(entries.len()));
    out.extend_from_slice(&u16le(entries.len()));
    out.extend_from_slice(&u32le(cd_len));
    out.extend_from_slice(&u32le(cd_offset));
    out.extend_from_slice(&[0, 0]);
    out
}

/// A ZIP whose first entry's extra field makes it look like DICOM is a ZIP to Cohort:
/// imported entry by entry, registered in the importer's name and audited; never handed
/// to Orthanc whole (Orthanc would unzip it itself, behind Cohort's back). Nested too.
async fn a_zip_that_looks_like_dicom_is_imported_as_a_zip(d: Deployment) {
    let admin = d.admin().await;
    let group = admin.post("/api/groups", &json!({"name": "pk"})).await.expect_status(201);
    let body = json!({"email": "pk@e2e.test", "password": "user-password-1", "role": "user", "group_id": group["id"]});
    admin.post("/api/users", &body).await.expect_status(201);
    let user = d.client();
    user.login("pk@e2e.test", "user-password-1").await.expect_status(200);

    let first = dicom::study(&StudySpec::new("IPP-PK-1").seed(81));
    let second = dicom::study(&StudySpec::new("IPP-PK-2").seed(82));
    let crafted = |g: &dicom::Generated| stored_zip(&[("a.dcm", std::fs::read(&g.files[0].path).expect("read"))], true);
    let looks_like_dicom = crafted(&first);
    assert_eq!(&looks_like_dicom[128..132], b"DICM");
    for content_type in ["application/dicom", "application/octet-stream"] {
        let r = user.req(Method::POST, "/api/patients/import").body(content_type, looks_like_dicom.clone()).send().await;
        let report = r.expect_status(200);
        assert_eq!(report["instances"]["received"], 1, "{content_type}: {report}");
        assert_eq!(report["patients"][0]["external_id"], "IPP-PK-1", "{report}");
    }
    // The same trick one level down, inside an ordinary archive.
    let outer = stored_zip(&[("inner.zip", crafted(&second))], false);
    let report = user.req(Method::POST, "/api/patients/import").body("application/zip", outer).send().await.expect_status(200);
    assert_eq!(
        (report["instances"]["stored"].as_u64(), report["patients"][0]["external_id"].as_str()),
        (Some(1), Some("IPP-PK-2")),
        "{report}"
    );

    let mine = user.get("/api/patients").await.expect_status(200);
    let mut ids: Vec<&str> = mine["items"].as_array().expect("items").iter().filter_map(|p| p["external_id"].as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["IPP-PK-1", "IPP-PK-2"], "both patients are in the importer's group");
    let audit = admin.get("/api/audit?action=IMPORT").await.expect_status(200);
    assert_eq!(audit["total"], 3, "every import is audited: {audit}");
    assert_eq!(d.orthanc_instances().await, 2);
}

per_deployment_limited!(a_zip_that_looks_like_dicom_is_imported_as_a_zip);

/// The entry count is read from the end of the archive before its central directory is
/// parsed: a directory claiming 65,535 entries is refused for the claim alone.
async fn zip_entry_count_is_checked_first(d: Deployment) {
    let admin = d.admin().await;
    let files = dicom::study(&StudySpec::new("IPP-COUNT").seed(83));
    let data = std::fs::read(&files.files[0].path).expect("read");
    let mut forged = stored_zip(&[("a.dcm", data.clone())], false);
    let eocd = forged.len() - 22;
    forged[eocd + 8..eocd + 12].copy_from_slice(&[0xff, 0xfe, 0xff, 0xfe]);
    let r = admin.req(Method::POST, "/api/patients/import").body("application/zip", forged).send().await;
    r.expect_error(413, "too_large");
    // Over MaxZipEntries for real, and just within it.
    let many: Vec<(String, Vec<u8>)> = (0..=MAX_ZIP_ENTRIES).map(|i| (format!("junk{i}.txt"), b"junk".to_vec())).collect();
    let many: Vec<(&str, Vec<u8>)> = many.iter().map(|(n, d)| (n.as_str(), d.clone())).collect();
    admin
        .req(Method::POST, "/api/patients/import")
        .body("application/zip", stored_zip(&many, false))
        .send()
        .await
        .expect_error(413, "too_large");
    let mut fits = many[..(MAX_ZIP_ENTRIES - 1) as usize].to_vec();
    fits.push(("a.dcm", data));
    let report =
        admin.req(Method::POST, "/api/patients/import").body("application/zip", stored_zip(&fits, false)).send().await.expect_status(200);
    assert_eq!(report["instances"]["stored"], 1, "{report}");
    assert_eq!(d.orthanc_instances().await, 1, "nothing of the refused archives was stored");
}

per_deployment_limited!(zip_entry_count_is_checked_first);

/// `multipart/form-data` imports (sidecar only: Orthanc swallows them): part headers and
/// skipped fields are bounded, and so is the number of parts.
async fn multipart_imports_are_bounded(backend: Backend) {
    let d = deployment(Host::Sidecar, backend).await;
    let admin = d.admin().await;
    let files = dicom::study(&StudySpec::new("IPP-FORM").seed(84));
    let data = std::fs::read(&files.files[0].path).expect("read");
    let part = |headers: &str, body: &[u8]| {
        let mut v = format!("--XB\r\nContent-Disposition: form-data; name=\"files\"; filename=\"a.dcm\"\r\n{headers}Content-Type: application/dicom\r\n\r\n").into_bytes();
        v.extend_from_slice(body);
        v.extend_from_slice(b"\r\n");
        v
    };
    let token = admin.cookie("access_token").expect("token");
    let url = format!("{}/api/patients/import", d.url);
    let send = |body: Vec<u8>| {
        reqwest::Client::new().post(&url).bearer_auth(&token).header("content-type", "multipart/form-data; boundary=XB").body(body).send()
    };
    // A refusal may cut the upload short: then the client sees the connection close
    // instead of the 413 (the answer is lost to the TCP reset), and nothing is stored.
    let refused = |what: &str, r: Result<reqwest::Response, reqwest::Error>| match r {
        Ok(resp) => assert_eq!(resp.status().as_u16(), 413, "{what}"),
        Err(e) => assert!(e.is_request(), "{what}: {e}"),
    };
    let mut ok = part("", &data);
    ok.extend_from_slice(b"--XB--\r\n");
    let r = send(ok).await.expect("form import");
    assert_eq!(r.status().as_u16(), 200);

    let mut huge_headers = part(&format!("X-Junk: {}\r\n", "j".repeat(2 * MIB as usize)), &data);
    huge_headers.extend_from_slice(b"--XB--\r\n");
    refused("huge part headers", send(huge_headers).await);

    let mut endless = b"--XB\r\nContent-Disposition: form-data; name=\"files\"; filename=\"a.dcm\"\r\nX-Junk: ".to_vec();
    endless.extend(vec![b'j'; 4 * MIB as usize]);
    refused("endless headers", send(endless).await);

    let mut skipped = b"--XB\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\n".to_vec();
    skipped.extend(vec![b'n'; 3 * MIB as usize]);
    skipped.extend_from_slice(b"\r\n");
    skipped.extend(part("", &data));
    skipped.extend_from_slice(b"--XB--\r\n");
    refused("huge skipped field", send(skipped).await);

    let mut many = Vec::new();
    for i in 0..=MAX_ZIP_ENTRIES {
        many.extend(format!("--XB\r\nContent-Disposition: form-data; name=\"n{i}\"\r\n\r\nx\r\n").into_bytes());
    }
    many.extend(part("", &data));
    many.extend_from_slice(b"--XB--\r\n");
    let r = send(many).await.expect("small form");
    assert_eq!(r.status().as_u16(), 413, "too many parts");
    let audit = admin.get("/api/audit?action=IMPORT").await.expect_status(200);
    assert_eq!(audit["total"], 1, "only the valid form imported anything: {audit}");
}

cohort_e2e::per_backend!(multipart_imports_are_bounded);

/// The plugin builds exports in memory (Orthanc 1.10.1 cannot stream them): all those
/// in memory at once share `MaxExportBytes`, and the ones beyond wait for a 503 `busy`
/// with `Retry-After`, rather than adding up to many times the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_plugin_exports_share_max_export_bytes() {
    let d = deployment_with(Host::Plugin, Backend::Sqlite, &[("MaxExportBytes", json!(6 * MIB))]).await;
    let admin = d.admin().await;
    // About 4 MiB of DICOM: one export fits, two at once do not.
    let files = dicom::study(&StudySpec::new("IPP-EXPORT").instances(8).size(512, 512).seed(85));
    let zip = dicom::zip(&files.paths(), ZipOptions::default());
    let report = admin.req(Method::POST, "/api/patients/import").body("application/zip", zip.bytes()).send().await.expect_status(200);
    let id = report["patients"][0]["id"].clone();
    let path = format!("/api/patients/{id}/export");
    let one = admin.get(&path).await;
    assert_eq!(one.status.as_u16(), 200, "{}", String::from_utf8_lossy(&one.body));
    assert!(one.body.len() as u64 > 3 * MIB, "the export is {} bytes", one.body.len());

    let mut busy = 0;
    for _round in 0..5 {
        let calls: Vec<_> = (0..6)
            .map(|_| {
                let (admin, path) = (admin.clone(), path.clone());
                tokio::spawn(async move { admin.get(&path).await })
            })
            .collect();
        let mut answers = Vec::new();
        for call in calls {
            answers.push(call.await.expect("export task"));
        }
        for r in &answers {
            match r.status.as_u16() {
                200 => assert_eq!(r.body.len(), one.body.len()),
                503 => {
                    r.expect_error(503, "busy");
                    assert!(r.header("retry-after").is_some_and(|s| s.parse::<u64>().is_ok_and(|s| s >= 1)), "{:?}", r.headers);
                    busy += 1;
                }
                other => panic!("unexpected {other}: {}", String::from_utf8_lossy(&r.body)),
            }
        }
        if busy > 0 {
            break;
        }
    }
    assert!(busy > 0, "six exports of 4 MiB at once never met the 6 MiB limit");
    // The memory is given back: one at a time, they all work.
    for _ in 0..3 {
        admin.get(&path).await.expect_status(200);
    }
}

/// The SQLite file holds the JWT secret and the session ids: 0600, and so are its WAL
/// and shared-memory files, whichever host created them.
async fn sqlite_files_are_private(host: Host) {
    use std::os::unix::fs::PermissionsExt;
    let d = deployment(host, Backend::Sqlite).await;
    d.admin().await;
    let path = d.db.url.trim_start_matches("sqlite://").to_string();
    for file in [path.clone(), format!("{path}-wal"), format!("{path}-shm")] {
        let mode = std::fs::metadata(&file).unwrap_or_else(|e| panic!("{file}: {e}")).permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{file} has mode {mode:o}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_files_are_private_sidecar() {
    sqlite_files_are_private(Host::Sidecar).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_files_are_private_plugin() {
    sqlite_files_are_private(Host::Plugin).await;
}

fn repository_file(path: &str) -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repository root").to_path_buf();
    std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The compose files ship no admin password and publish nothing beyond loopback.
#[test]
fn compose_files_publish_on_loopback_and_ship_no_admin_password() {
    for file in ["docker/compose.plugin.yml", "docker/compose.sidecar.yml"] {
        let text = repository_file(file);
        assert!(!text.contains("ADMIN_PASSWORD"), "{file} sets an admin password");
        for line in text.lines().filter(|l| l.trim_start().starts_with("ports:")) {
            let mappings: Vec<&str> = line.split('"').skip(1).step_by(2).collect();
            assert!(!mappings.is_empty(), "{file}: {line}");
            for m in mappings {
                assert!(m.starts_with("127.0.0.1:"), "{file} publishes {m} beyond loopback");
            }
        }
    }
    let config: Value = serde_json::from_str(&repository_file("docker/orthanc-cohort.json")).expect("JSON");
    assert_eq!(config["Cohort"]["BootstrapAdminPassword"], "${COHORT_ADMIN_PASSWORD}");
}

/// The images' entry point generates the admin password on first start, prints it once,
/// keeps it private, and reads it back afterwards; a password given by the operator wins.
#[test]
fn the_entrypoint_generates_a_private_admin_password_once() {
    use std::os::unix::fs::PermissionsExt;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("root").to_path_buf();
    let secrets = tempfile::tempdir().expect("temp dir");
    let run = |given: Option<&str>| {
        let mut cmd = std::process::Command::new("sh");
        cmd.arg(root.join("docker/entrypoint.sh")).args(["sh", "-c", "printf %s \"$COHORT_ADMIN_PASSWORD\""]);
        cmd.env("COHORT_SECRETS_DIR", secrets.path()).env_remove("COHORT_ADMIN_PASSWORD");
        if let Some(p) = given {
            cmd.env("COHORT_ADMIN_PASSWORD", p);
        }
        let out = cmd.output().expect("run entrypoint.sh");
        assert!(out.status.success(), "{out:?}");
        (String::from_utf8_lossy(&out.stdout).to_string(), String::from_utf8_lossy(&out.stderr).to_string())
    };
    let (first, log) = run(None);
    assert!(first.len() >= 20 && first.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{first:?}");
    assert!(log.contains(&first), "the first start prints the password: {log}");
    let file = secrets.path().join("admin-password");
    assert_eq!(std::fs::metadata(&file).expect("kept").permissions().mode() & 0o777, 0o600);
    let (again, log) = run(None);
    assert_eq!(again, first, "later starts read it back");
    assert!(log.is_empty(), "and do not print it again: {log}");
    assert_eq!(run(Some("operator-chosen-password")).0, "operator-chosen-password");
}

/// Encoded and hostile ids on `/api`: never another route of Cohort's or Orthanc's, never
/// a 5xx, never someone else's data. The image routes take Orthanc ids, which reach
/// Orthanc's REST API only once the registry knows them as visible to the caller. (NUL
/// bytes are `hostile_input.rs`'s: Orthanc cuts a plugin's path at a `%00`.)
async fn encoded_ids_reach_nothing(d: Deployment) {
    let admin = d.admin().await;
    let files = dicom::study(&StudySpec::new("IPP-IDS").seed(86));
    let zip = dicom::zip(&files.paths(), ZipOptions::default());
    let report = admin.req(Method::POST, "/api/patients/import").body("application/zip", zip.bytes()).send().await.expect_status(200);
    let id = report["patients"][0]["id"].as_i64().expect("patient id");
    let instance =
        admin.get(&format!("/api/patients/{id}/instances")).await.expect_status(200)[0]["id"].as_str().expect("instance").to_string();
    admin.get(&format!("/api/patients/images/{instance}")).await.expect_status(200);
    let base = d.url.clone();
    // A user of no group: nothing here is theirs. (In the plugin, Orthanc decodes `%2F`
    // and drops dot segments before any plugin code sees the path, so
    // `/api/patients/1%2F..%2F..%2Fusers` *is* `/api/users` there; that route's own
    // check then applies, as it does to everyone.)
    add_user(&admin, "ids@e2e.test", "user-password-1").await;
    let user = d.client();
    user.login("ids@e2e.test", "user-password-1").await.expect_status(200);
    let token = user.cookie("access_token").expect("token");
    let paths = [
        format!("/api/patients/%{id:02x}"),
        format!("/api/patients/{id}%2F..%2F..%2Fusers"),
        format!("/api/patients/-{id}"),
        "/api/patients/99999999999999999999999".to_string(),
        format!("/api/patients/{id}.0"),
        "/api/patients/images/..%2F..%2Fsystem".to_string(),
        "/api/patients/images/..%2F..%2Fpatients".to_string(),
        format!("/api/patients/images/{instance}%2F..%2F..%2F..%2Fsystem"),
        format!("/api/patients/images/{instance}%2Ffile"),
        format!("/api/patients/images/{instance}%3Fx=1"),
        "/api/patients/images/%2e%2e".to_string(),
        "/api/patients/images/..".to_string(),
        format!("/api/patients/images/{}", instance.to_uppercase()),
        "/api/users/%2e%2e/groups".to_string(),
    ];
    for path in &paths {
        let r = raw(&base, &format!("GET {path} HTTP/1.1\r\nAuthorization: Bearer {token}"), b"").await;
        let text = r.text();
        assert!(r.status < 500, "{path}: {} {text}", r.status);
        if d.host == Host::Sidecar {
            assert!(r.status >= 400, "{path} answered {}: {}", r.status, text.chars().take(200).collect::<String>());
        }
        for secret in ["\"Version\"", "MainDicomTags", "ParentPatient", "IPP-IDS", cohort_e2e::ADMIN_EMAIL, &instance] {
            assert!(!text.contains(secret), "{path} leaked {secret}: {}", text.chars().take(200).collect::<String>());
        }
    }
}

per_deployment_limited!(encoded_ids_reach_nothing);
