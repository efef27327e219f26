//! What only the plugin deployment does: guarding Orthanc's own routes, surviving a
//! panic, starting and stopping cleanly inside Orthanc, refusing bad configuration, and
//! the in-memory export limit.

use std::collections::BTreeMap;

use cohort_e2e::deploy::{PLUGIN_LIBRARY, TEST_PLUGIN_LIBRARY};
use cohort_e2e::dicom::{self, StudySpec, ZipOptions};
use cohort_e2e::orthanc::{Orthanc, OrthancOptions};
use cohort_e2e::{Backend, Client, Deployment, Host, ADMIN_EMAIL, ADMIN_PASSWORD};
use reqwest::Method;
use serde_json::{json, Value};

async fn plugin(settings: &[(&str, Value)]) -> Deployment {
    let settings: BTreeMap<String, Value> = settings.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
    Deployment::start_with(Host::Plugin, Backend::Sqlite, settings).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_routes_need_an_admin_session() {
    let d = plugin(&[]).await;
    let orthanc = Client::new(&d.orthanc.url());
    // Without a session nothing of Orthanc's own answers with data.
    for path in ["/patients", "/studies", "/instances", "/system", "/statistics", "/changes", "/tools/find", "/app/explorer.html"] {
        let r = orthanc.get(path).await;
        assert_eq!(r.status.as_u16(), 403, "{path}: {}", String::from_utf8_lossy(&r.body));
        assert!(!String::from_utf8_lossy(&r.body).contains("Version"), "{path} leaked data");
    }
    orthanc.req(Method::POST, "/tools/find").json(&json!({"Level": "Patient", "Query": {}})).send().await.expect_status(403);
    // A forged token does not help.
    orthanc.req(Method::GET, "/patients").bearer("not.a.token").send().await.expect_status(403);

    // A plain user is not enough.
    let admin = d.admin().await;
    admin.post("/api/users", &json!({"email": "user@e2e.test", "password": "user-password-1", "role": "user"})).await.expect_status(201);
    let user = Client::new(&d.url);
    user.login("user@e2e.test", "user-password-1").await.expect_status(200);
    user.get("/patients").await.expect_status(403);

    // An admin session opens them: cookie (as Orthanc Explorer in the same browser) or Bearer.
    assert_eq!(admin.get("/patients").await.expect_status(200), json!([]));
    let system = admin.get("/system").await.expect_status(200);
    assert_eq!(system["Version"], "1.10.1");
    admin.get("/app/explorer.html").await.expect_status(200);
    let token = admin.cookie("access_token").expect("access token");
    orthanc.req(Method::GET, "/statistics").bearer(&token).send().await.expect_status(200);
    // Cookie-authenticated writes from a foreign page are refused (no CSRF header exists
    // for Orthanc Explorer, so the Origin check does the work).
    let file = std::fs::read(&dicom::pydicom_samples().files[0].path).expect("read");
    admin
        .req(Method::POST, "/instances")
        .body("application/dicom", file.clone())
        .header("origin", "https://evil.example")
        .send()
        .await
        .expect_status(403);
    // Without any Origin or Referer too: browsers always send one on such requests.
    admin.req(Method::POST, "/instances").body("application/dicom", file.clone()).send().await.expect_status(403);
    let own_origin = d.orthanc.url();
    admin.req(Method::POST, "/instances").body("application/dicom", file).header("origin", &own_origin).send().await.expect_status(200);
    // Logging out closes Orthanc again.
    admin.req(Method::POST, "/api/auth/logout").send().await.expect_status(204);
    admin.get("/patients").await.expect_status(403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protection_can_be_turned_off() {
    let d = plugin(&[("ProtectOrthancApi", json!(false))]).await;
    Client::new(&d.orthanc.url()).get("/patients").await.expect_status(200);
    // The /api keeps its own checks.
    d.client().get("/api/patients").await.expect_error(401, "not_authenticated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_is_a_500_and_orthanc_keeps_serving() {
    // The test library: the production plugin has no route that panics.
    let mut d = Deployment::start_with_library(Host::Plugin, Backend::Sqlite, BTreeMap::new(), TEST_PLUGIN_LIBRARY).await;
    let admin = d.admin().await;
    for _ in 0..3 {
        let r = admin.get("/api/__test__/panic").await;
        assert_eq!(r.status.as_u16(), 500);
        assert_eq!(r.json(), json!({"error": {"code": "internal_error", "message": "internal error"}}));
    }
    assert!(d.orthanc.is_running());
    admin.get("/api/auth/me").await.expect_status(200);
    admin.get("/system").await.expect_status(200);
    d.client().get("/api/health").await.expect_status(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orthanc_starts_and_stops_cleanly_with_the_plugin() {
    let mut d = plugin(&[]).await;
    let admin = d.admin().await;
    let files = dicom::study(&StudySpec::new("IPP-STOP").studies(1).series(1).instances(2).seed(31));
    let zip = dicom::zip(&files.paths(), ZipOptions::default());
    admin.req(Method::POST, "/api/patients/import").body("application/zip", zip.bytes()).send().await.expect_status(200);
    for _ in 0..2 {
        let status = d.orthanc.stop();
        assert!(status.success(), "Orthanc exited with {status:?}");
        let log = d.orthanc.log();
        for bad in ["Segmentation", "panicked", "core dumped"] {
            assert!(!log.lines().any(|l| l.contains(bad)), "{bad} in Orthanc's log:\n{log}");
        }
        let errors = cohort_e2e::orthanc::error_lines(&log);
        assert!(errors.is_empty(), "error lines in Orthanc's log: {errors:#?}");
        d.orthanc.start_again().await;
        // Same database: the session and the registry are still there.
        admin.get("/api/auth/me").await.expect_status(200);
        assert_eq!(admin.get("/api/patients").await.expect_status(200)["total"], 1);
    }
    // The plugin's log lines reach Orthanc's log.
    assert!(d.orthanc.log().contains("cohort serves /api inside Orthanc"), "{}", d.orthanc.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_configuration_stops_orthanc_with_a_clear_log_line() {
    let dir = tempfile::tempdir().expect("tmp");
    for (key, value) in [("BcryptCost", json!(4)), ("DatabaseUrl", json!("mysql://x")), ("CookieSecur", json!(false))] {
        let mut extra = serde_json::Map::new();
        let mut section = json!({"DatabaseUrl": format!("sqlite://{}/c.db", dir.path().display())});
        section[key] = value;
        extra.insert("Cohort".into(), section);
        let options = OrthancOptions { plugins: vec![cohort_e2e::built(PLUGIN_LIBRARY)], extra, env: Vec::new(), tmpfs: None };
        let (status, log) = Orthanc::run_to_exit(options).await;
        assert!(!status.success(), "{key}: Orthanc started with a bad setting");
        let line = log.lines().find(|l| l.contains("invalid configuration")).unwrap_or_else(|| panic!("{key}: no clear line in\n{log}"));
        assert!(line.contains(key), "{key}: {line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_beyond_max_export_bytes_are_refused() {
    let d = plugin(&[("MaxExportBytes", json!(30_000))]).await;
    let admin = d.admin().await;
    let files = dicom::study(&StudySpec::new("IPP-BIG").studies(1).series(1).instances(6).seed(32));
    let zip = dicom::zip(&files.paths(), ZipOptions::default());
    let r = admin.req(Method::POST, "/api/patients/import").body("application/zip", zip.bytes()).send().await.expect_status(200);
    let id = r["patients"][0]["id"].as_i64().expect("id");
    admin.get(&format!("/api/patients/{id}/export")).await.expect_error(413, "too_large");
    let audit = admin.get("/api/audit?action=EXPORT").await.expect_status(200);
    assert_eq!(audit["total"], 0, "a refused export is not recorded as done");
    let small = dicom::study(&StudySpec::new("IPP-SMALL").studies(1).series(1).instances(1).seed(33));
    let r = admin
        .req(Method::POST, "/api/patients/import")
        .body("application/dicom", std::fs::read(&small.files[0].path).expect("read"))
        .send()
        .await
        .expect_status(200);
    let id = r["patients"][0]["id"].as_i64().expect("id");
    let ok = admin.get(&format!("/api/patients/{id}/export")).await;
    assert_eq!(ok.status.as_u16(), 200);
    assert!(ok.header("content-length").is_some(), "the plugin answers a built archive, with its length");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_logins_keep_retry_after() {
    let d = plugin(&[("LoginMaxFailuresPerAccount", json!(2))]).await;
    let c = d.client();
    for _ in 0..2 {
        c.login(ADMIN_EMAIL, "wrong-password-x").await.expect_error(401, "invalid_credentials");
    }
    let r = c.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    // Orthanc 1.10.1 cannot send 429 from a plugin: the plugin answers 503 with the same
    // body and Retry-After (see ARCHITECTURE.md).
    assert_eq!(r.status.as_u16(), 503, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["error"]["code"], "too_many_attempts");
    assert!(r.header("retry-after").and_then(|v| v.parse::<u64>().ok()).is_some_and(|s| s > 0));
}

/// The production library carries no test hook: none of the test library's names are in
/// it, and the environment variables that once switched them on change nothing (the
/// guard stays, no route panics, no demo route answers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_production_plugin_has_no_test_hooks() {
    let library = std::fs::read(cohort_e2e::built(PLUGIN_LIBRARY)).expect("read the plugin");
    let test_library = std::fs::read(cohort_e2e::built(TEST_PLUGIN_LIBRARY)).expect("read the test library");
    let contains = |haystack: &[u8], needle: &str| haystack.windows(needle.len()).any(|w| w == needle.as_bytes());
    for hook in ["COHORT_PLUGIN_SELFTEST", "COHORT_TEST_PANIC_ROUTE", "/api/__test__/panic", "cohort-ffi-selftest", "deliberate panic"] {
        assert!(!contains(&library, hook), "the production plugin contains {hook:?}");
    }
    assert!(contains(&test_library, "/api/__test__/panic"), "the needles are right: the test library has its hook");

    let dir = tempfile::tempdir().expect("tmp");
    let section = json!({
        "DatabaseUrl": format!("sqlite://{}/c.db", dir.path().display()),
        "BootstrapAdminEmail": ADMIN_EMAIL,
        "BootstrapAdminPassword": ADMIN_PASSWORD,
        "BcryptCost": 10,
        "CookieSecure": false,
    });
    let mut extra = serde_json::Map::new();
    extra.insert("Cohort".into(), section);
    let env = vec![("COHORT_PLUGIN_SELFTEST".to_string(), "1".to_string()), ("COHORT_TEST_PANIC_ROUTE".to_string(), "1".to_string())];
    let orthanc = Orthanc::start(OrthancOptions { plugins: vec![cohort_e2e::built(PLUGIN_LIBRARY)], extra, env, tmpfs: None }).await;
    let client = Client::new(&orthanc.url());
    // Cohort is there, and its guard: no allow-all filter, no demo routes.
    client.get("/api/health").await.expect_status(200);
    client.get("/patients").await.expect_status(403);
    client.get("/cohort-ffi-selftest/x").await.expect_status(403);
    client.login(ADMIN_EMAIL, ADMIN_PASSWORD).await.expect_status(200);
    client.get("/api/__test__/panic").await.expect_error(404, "not_found");
    client.get("/cohort-ffi-selftest/x").await.expect_status(404);
}
