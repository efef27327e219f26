//! Observability (DESIGN.md §6): `X-Request-Id` on every answer, one log line per
//! request, `/api/health/live` touching no dependency, and `/api/metrics` for admins in
//! the Prometheus text format, with counters that move.

use cohort_e2e::{postgres_skipped, Backend, Deployment, Host, ADMIN_PASSWORD};
use cohort_e2e::{sample, Client, Resp};
use reqwest::Method;
use serde_json::json;

fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

async fn with_id(c: &Client, path: &str, id: &str) -> Resp {
    c.req(Method::GET, path).header("x-request-id", id).send().await
}

#[track_caller]
fn request_id(r: &Resp) -> String {
    let id = r.header("x-request-id").unwrap_or_else(|| panic!("no X-Request-Id on a {} answer", r.status)).to_string();
    assert!(valid_id(&id), "generated id {id:?} is not 1-64 characters of [A-Za-z0-9._-]");
    id
}

async fn metrics_text(c: &Client) -> String {
    let r = c.get("/api/metrics").await;
    assert_eq!(r.status.as_u16(), 200, "{}", String::from_utf8_lossy(&r.body));
    let ct = r.header("content-type").unwrap_or_default().to_string();
    assert!(ct.starts_with("text/plain") && ct.contains("version=0.0.4"), "content type {ct}");
    let text = String::from_utf8(r.body.to_vec()).expect("utf-8");
    // Every sample belongs to a family announced by `# TYPE`.
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let name = line.split(['{', ' ']).next().unwrap_or_default();
        let family = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name);
        assert!(
            text.contains(&format!("# TYPE {name} ")) || text.contains(&format!("# TYPE {family} histogram")),
            "sample without a TYPE line: {line}"
        );
        let value = line.rsplit(' ').next().unwrap_or_default();
        assert!(value.parse::<f64>().is_ok(), "not a number: {line}");
    }
    text
}

/// One generated DICOM file, shared by the tests of this binary.
fn one_file() -> &'static cohort_e2e::dicom::Generated {
    static G: std::sync::OnceLock<cohort_e2e::dicom::Generated> = std::sync::OnceLock::new();
    G.get_or_init(|| cohort_e2e::dicom::study(&cohort_e2e::dicom::StudySpec::new("IPP-METRICS").studies(1).series(1).instances(1).seed(7)))
}

async fn observability(d: Deployment) {
    let c = d.client();

    // Liveness: 200 {"status":"ok"} without a session.
    let r = with_id(&c, "/api/health/live", "abc.DEF_1-2").await;
    assert_eq!(r.expect_status(200), json!({"status": "ok"}));
    assert_eq!(r.header("x-request-id"), Some("abc.DEF_1-2"), "a valid caller id is echoed");

    // Ids the contract refuses are replaced by a new one.
    let long = "a".repeat(65);
    for bad in ["has space", "slash/inside", "quote\"d", long.as_str()] {
        let r = with_id(&c, "/api/health/live", bad).await;
        let id = request_id(&r);
        assert_ne!(id, bad, "an invalid id is not echoed");
    }
    let exactly_64 = "b".repeat(64);
    assert_eq!(with_id(&c, "/api/health/live", &exactly_64).await.header("x-request-id"), Some(exactly_64.as_str()));
    let first = request_id(&c.get("/api/health/live").await);
    let second = request_id(&c.get("/api/health/live").await);
    assert_ne!(first, second, "each request gets its own id");

    // Every answer carries it: errors, unknown routes, the console.
    let r = with_id(&c, "/api/users/1", "unauth-1").await;
    r.expect_error(401, "not_authenticated");
    assert_eq!(r.header("x-request-id"), Some("unauth-1"));
    let r = with_id(&c, "/api/no-such-route", "missing-1").await;
    assert_eq!(r.status.as_u16(), 404);
    assert_eq!(r.header("x-request-id"), Some("missing-1"));
    request_id(&c.get("/ui/").await);
    request_id(&c.get("/api/health").await);

    // Metrics: admins only (401 anonymous, 403 for a user, session or token).
    c.get("/api/metrics").await.expect_error(401, "not_authenticated");
    let admin = d.admin().await;
    let body = json!({"email": "user@example.org", "password": "a-user-password-1", "role": "user"});
    admin.post("/api/users", &body).await.expect_status(201);
    let user = d.client();
    user.login("user@example.org", "a-user-password-1").await.expect_status(200);
    user.get("/api/metrics").await.expect_error(403, "forbidden");

    let before = metrics_text(&admin).await;
    let live_ok = "cohort_http_requests_total{route=\"/api/health/live\",status=\"200\"}";
    let live_count = "cohort_http_request_duration_seconds_count{route=\"/api/health/live\"}";
    let failed = "cohort_logins_total{outcome=\"failed\"}";
    let unmatched = "cohort_http_requests_total{route=\"unmatched\",status=\"404\"}";
    let n_live = sample(&before, live_ok).expect("live counted");
    assert!(n_live >= 8.0, "{n_live} live requests counted; text:\n{before}");
    assert!(sample(&before, unmatched).is_some_and(|n| n >= 1.0), "{before}");
    assert!(sample(&before, "cohort_logins_total{outcome=\"succeeded\"}").is_some_and(|n| n >= 2.0), "{before}");
    assert!(sample(&before, "cohort_db_pool_connections").is_some(), "{before}");
    assert!(before.contains("cohort_http_request_duration_seconds_bucket{route=\"/api/health/live\",le=\"+Inf\"}"), "{before}");

    for _ in 0..3 {
        c.get("/api/health/live").await.expect_status(200);
    }
    c.login("user@example.org", "wrong-password-here").await.expect_status(401);
    // An admin API token (read scope) may scrape too.
    let token = admin
        .post(
            "/api/users/me/tokens",
            &json!({"name": "scraper", "scope": "read", "expires_in_days": 1, "current_password": ADMIN_PASSWORD}),
        )
        .await
        .expect_status(201)["token"]
        .as_str()
        .expect("token")
        .to_string();
    // An import (admins may import without a group) and an export of its patient.
    let file = one_file().paths()[0].clone();
    let report = admin
        .req(Method::POST, "/api/patients/import")
        .body("application/dicom", std::fs::read(&file).expect("read DICOM"))
        .send()
        .await
        .expect_status(200);
    let patient = report["patients"][0]["id"].as_i64().expect("patient id");
    let zip = admin.get(&format!("/api/patients/{patient}/export")).await;
    assert_eq!(zip.status.as_u16(), 200);
    let scraper = d.client().with_bearer(&token);
    // The registry is counted at most once per `RegistryCountSeconds` (1 s here).
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let after = metrics_text(&scraper).await;
    assert_eq!(sample(&after, live_ok), Some(n_live + 3.0), "three more live answers counted:\n{after}");
    assert_eq!(sample(&after, live_count), sample(&before, live_count).map(|n| n + 3.0), "{after}");
    assert_eq!(sample(&after, failed), sample(&before, failed).map(|n| n + 1.0), "one failed login counted:\n{after}");
    for (series, more) in [
        ("cohort_imports_total", 1.0),
        ("cohort_import_instances_total{outcome=\"stored\"}", 1.0),
        ("cohort_import_instances_total{outcome=\"already_stored\"}", 0.0),
        ("cohort_exports_total", 1.0),
    ] {
        let was = sample(&before, series).unwrap_or_else(|| panic!("{series} missing:\n{before}"));
        assert_eq!(sample(&after, series), Some(was + more), "{series}:\n{after}");
    }
    assert_eq!(sample(&after, "cohort_password_hashing_queue"), Some(0.0), "{after}");
    // Bytes: the instance as sent to Orthanc, the archive as sent to the client.
    let size = std::fs::metadata(&file).expect("size").len() as f64;
    let grew = |series: &str| sample(&after, series).unwrap_or(f64::NAN) - sample(&before, series).unwrap_or(f64::NAN);
    assert_eq!(grew("cohort_import_bytes_total"), size, "{after}");
    assert_eq!(grew("cohort_export_bytes_total"), zip.body.len() as f64, "{after}");
    // The registry's sizes (one patient, study and instance) and how old that count is.
    for kind in ["patients", "studies", "instances"] {
        assert_eq!(sample(&after, &format!("cohort_registry_size{{kind=\"{kind}\"}}")), Some(1.0), "{kind}:\n{after}");
    }
    assert!(sample(&after, "cohort_registry_size_age_seconds").is_some_and(|s| s <= 1.0), "{after}");
    // The change follower runs in both hosts: its cursor, lag and last success.
    assert!(sample(&after, "cohort_change_follower_cursor").is_some_and(|c| c >= 1.0), "{after}");
    assert!(sample(&after, "cohort_change_follower_lag").is_some_and(|l| l >= 0.0), "{after}");
    assert!(sample(&after, "cohort_change_follower_seconds_since_success").is_some_and(|s| s < 30.0), "{after}");
    assert_eq!(sample(&after, "cohort_change_follower_skipped_total"), Some(0.0), "{after}");
    assert!(sample(&after, "cohort_db_pool_idle_connections").is_some(), "{after}");
    assert!(sample(&after, "cohort_http_requests_total{route=\"/api/metrics\",status=\"403\"}").is_some_and(|n| n >= 1.0), "{after}");

    // The plugin publishes its main figures in Orthanc's own metrics.
    if d.host == Host::Plugin {
        let r = d.orthanc_client().await.get("/tools/metrics-prometheus").await;
        assert_eq!(r.status.as_u16(), 200);
        let text = String::from_utf8_lossy(&r.body).to_string();
        let published = |name: &str| text.lines().find(|l| l.starts_with(&format!("{name} "))).map(str::to_string);
        for name in [
            "cohort_http_requests",
            "cohort_logins_failed",
            "cohort_imports",
            "cohort_exports",
            "cohort_import_bytes",
            "cohort_export_bytes",
            "cohort_change_follower_lag",
            "cohort_registry_patients",
            "cohort_password_hashing_queue",
            "cohort_db_pool_connections",
        ] {
            assert!(published(name).is_some(), "{name} not in Orthanc's metrics:\n{text}");
        }
        let imports: f64 = published("cohort_imports").and_then(|l| l.split(' ').nth(1)?.parse().ok()).expect("value");
        assert!(imports >= 1.0, "{text}");
    }

    // One log line per request, with the id, the route template, status and duration
    // (the tests run the plugin's Orthanc with `--verbose`).
    let lines_of = |id: &str| {
        let log = cohort_e2e::process::strip_ansi(&d.log());
        log.lines().filter(|l| l.contains(id)).map(str::to_string).collect::<Vec<_>>()
    };
    admin.req(Method::GET, "/api/users/424242").header("x-request-id", "trace-me-42").send().await.expect_status(404);
    let lines = lines_of("trace-me-42");
    assert_eq!(lines.len(), 1, "one line for the request: {lines:?}");
    for needle in ["route=/api/users/{id}", "status=404", "duration_ms="] {
        assert!(lines[0].contains(needle), "{needle} missing from {}", lines[0]);
    }

    // The plugin follows Orthanc's log level: while Orthanc hides information lines it
    // does not produce one per request, and it does again once they are shown.
    if d.host == Host::Plugin {
        let orthanc = d.orthanc_client().await;
        for (level, state, id) in [("default", "off", "hidden-43"), ("verbose", "on", "shown-44")] {
            orthanc.req(Method::PUT, "/tools/log-level-plugins").body("text/plain", level).send().await.expect_status(200);
            let switched = format!("information lines are {state}");
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            while !cohort_e2e::process::strip_ansi(&d.log()).contains(&switched) {
                assert!(std::time::Instant::now() < deadline, "no {switched:?} line within 20 s of log level {level}");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            c.req(Method::GET, "/api/health/live").header("x-request-id", id).send().await.expect_status(200);
            let lines = lines_of(id);
            let expected = usize::from(state == "on");
            assert_eq!(lines.len(), expected, "log level {level}: {lines:?}");
        }
    }
}

/// `/api/health/live` answers while Orthanc is down (readiness says degraded).
async fn live_without_orthanc(mut d: Deployment) {
    let c = d.client();
    d.orthanc.stop();
    c.get("/api/health/live").await.expect_status(200);
    assert_eq!(c.get("/api/health").await.status.as_u16(), 503);
}

/// A deployment whose registry count is at most 1 s old.
async fn deployment(host: Host, backend: Backend) -> Deployment {
    let settings = [("RegistryCountSeconds".to_string(), json!(1))].into_iter().collect();
    Deployment::start_with(host, backend, settings).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_sqlite() {
    observability(deployment(Host::Sidecar, Backend::Sqlite).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_sqlite() {
    observability(deployment(Host::Plugin, Backend::Sqlite).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_postgres() {
    if postgres_skipped() {
        return;
    }
    observability(deployment(Host::Sidecar, Backend::Postgres).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_answers_with_orthanc_stopped() {
    live_without_orthanc(Deployment::start(Host::Sidecar, Backend::Sqlite).await).await;
}

/// `RequestMetrics: false` (for measuring what counting costs) stops the per-request
/// figures only; the request id, the log line and the other figures stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_metrics_can_be_turned_off() {
    let settings = [("RequestMetrics".to_string(), json!(false))].into_iter().collect();
    let d = Deployment::start_with(Host::Sidecar, Backend::Sqlite, settings).await;
    let c = d.client();
    request_id(&c.get("/api/health/live").await);
    let admin = d.admin().await;
    let text = metrics_text(&admin).await;
    assert!(!text.contains("cohort_http_requests_total{"), "{text}");
    assert!(!text.contains("cohort_http_request_duration_seconds_bucket{"), "{text}");
    assert_eq!(sample(&text, "cohort_logins_total{outcome=\"succeeded\"}"), Some(1.0), "{text}");
    assert!(sample(&text, "cohort_registry_size{kind=\"patients\"}").is_some(), "{text}");
}
