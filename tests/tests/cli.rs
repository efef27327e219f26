//! The `cohort` command line: configuration errors, `migrate`, `user add`, and a
//! graceful stop of `serve`.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use cohort_e2e::deploy::{sidecar_command, Sidecar};
use cohort_e2e::{per_backend, Backend, Client, TestDatabase};

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn a_bad_setting_stops_start_up_with_one_line_naming_it() {
    for (key, value) in [
        ("COHORT_BCRYPT_COST", "4"),
        ("COHORT_DATABASE_URL", "mysql://db"),
        ("COHORT_LISTEN", "not-an-address"),
        ("COHORT_COOKIE_SECURE", "maybe"),
        ("COHORT_ORTHANC_URL", "ftp://pacs"),
        ("COHORT_JWT_SECRET", "too-short"),
        ("COHORT_UNKNOWN_SETTING", "1"),
    ] {
        let out =
            sidecar_command("sqlite::memory:", "http://127.0.0.1:9", &env(&[(key, value)])).arg("serve").output().expect("run cohort");
        assert_eq!(out.status.code(), Some(2), "{key}={value}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.trim_end().lines().count(), 1, "{key}: {stderr}");
        assert!(stderr.contains(key), "{key}: {stderr}");
    }
    // A missing half of a pair names the missing key.
    let mut cmd = sidecar_command("sqlite::memory:", "http://127.0.0.1:9", &BTreeMap::new());
    cmd.env_remove("COHORT_ADMIN_PASSWORD");
    let out = cmd.arg("serve").output().expect("run cohort");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("COHORT_ADMIN_PASSWORD"));
}

async fn migrate_add_user_and_stop(backend: Backend) {
    let db = TestDatabase::create(backend).await;
    let out = sidecar_command(&db.url, "http://127.0.0.1:9", &BTreeMap::new()).arg("migrate").output().expect("migrate");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("database migrated"));
    // Idempotent.
    let again = sidecar_command(&db.url, "http://127.0.0.1:9", &BTreeMap::new()).arg("migrate").output().expect("migrate");
    assert!(again.status.success());

    let add = |email: &str, password: &str, extra: &[&str]| {
        let mut child = sidecar_command(&db.url, "http://127.0.0.1:9", &BTreeMap::new())
            .args(["user", "add", "--email", email, "--role", "user"])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("user add");
        writeln!(child.stdin.take().expect("stdin"), "{password}").expect("write password");
        child.wait_with_output().expect("user add output")
    };
    let out = add("cli.user@cohort.test", "cli-user-password", &["--first-name", "Cli"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("cli.user@cohort.test"));
    let short = add("short@cohort.test", "short", &[]);
    assert!(!short.status.success());
    assert!(String::from_utf8_lossy(&short.stderr).contains("password"));
    let no_group = add("grouped@cohort.test", "cli-user-password", &["--group", "Nope"]);
    assert!(!no_group.status.success());
    assert!(String::from_utf8_lossy(&no_group.stderr).contains("Nope"));
    let dup = add("cli.user@cohort.test", "cli-user-password", &[]);
    assert!(!dup.status.success());

    // The user added on the command line logs in through the server.
    let sidecar = Sidecar::start(&db.url, "http://127.0.0.1:9", &BTreeMap::new()).await;
    let c = Client::new(&sidecar.url);
    let me = c.login("cli.user@cohort.test", "cli-user-password").await.expect_status(200);
    assert_eq!(me["user"]["first_name"], "Cli");
    // Orthanc is not there: health says so, and the account side keeps working.
    let health = c.get("/api/health").await;
    assert_eq!(health.status.as_u16(), 503);
    assert_eq!(health.json()["orthanc"], "unavailable");
    assert_eq!(health.json()["database"], "ok");
    c.get("/api/auth/me").await.expect_status(200);
    drop(sidecar);
}
per_backend!(migrate_add_user_and_stop);

#[tokio::test]
async fn serve_stops_gracefully_on_sigterm() {
    let db = TestDatabase::create(Backend::Sqlite).await;
    let port = cohort_e2e::free_port();
    let mut child = sidecar_command(&db.url, "http://127.0.0.1:9", &env(&[("COHORT_LISTEN", &format!("127.0.0.1:{port}"))]))
        .arg("serve")
        .stderr(Stdio::piped())
        .spawn()
        .expect("serve");
    let c = Client::new(&format!("http://127.0.0.1:{port}"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while reqwest::get(format!("http://127.0.0.1:{port}/api/health")).await.is_err() {
        assert!(Instant::now() < deadline, "serve did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.login(cohort_e2e::ADMIN_EMAIL, cohort_e2e::ADMIN_PASSWORD).await.expect_status(200);
    let status = std::process::Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let exit = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "serve did not stop on SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "{exit:?}");
}
