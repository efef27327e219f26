//! The `cohort` command line: configuration errors, `migrate`, `user add`, and a
//! graceful stop of `serve`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::time::{Duration, Instant};

use cohort_e2e::deploy::{listening_address, sidecar_command, Sidecar};
use cohort_e2e::{per_backend, Backend, Client, TestDatabase};
use sqlx::Connection;

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// The harness's start-up code runs in a test binary that links it (the harness is a
/// library: a start-up hook in it that the linker dropped would leave every temporary
/// directory of a killed run behind).
#[test]
fn temporary_files_go_to_the_process_directory() {
    let dir = cohort_e2e::scratch::own_dir().expect("TMPDIR set to this process's own directory before main");
    assert!(dir.is_dir(), "{}", dir.display());
    let made = tempfile::tempdir().expect("temp dir");
    assert!(made.path().starts_with(&dir), "{} outside {}", made.path().display(), dir.display());
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

/// How many migrations the database has applied (`None`: no migration table).
async fn applied_migrations(db: &TestDatabase) -> Option<i64> {
    let sql = "SELECT COUNT(*) FROM _sqlx_migrations WHERE success";
    match db.backend {
        Backend::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(&format!("{}?mode=rwc", db.url)).await.expect("open SQLite");
            sqlx::query_scalar(sql).fetch_one(&mut c).await.ok()
        }
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(&db.url).await.expect("connect PostgreSQL");
            sqlx::query_scalar(sql).fetch_one(&mut c).await.ok()
        }
    }
}

async fn migrate_then_add_users_then_log_in(backend: Backend) {
    let db = TestDatabase::empty(backend).await;
    let expected = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations/postgres")).expect("migrations").count() as i64;
    assert_eq!(applied_migrations(&db).await, None, "the database starts empty");
    let out = sidecar_command(&db.url, "http://127.0.0.1:9", &BTreeMap::new()).arg("migrate").output().expect("migrate");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("database migrated"));
    assert_eq!(applied_migrations(&db).await, Some(expected), "every migration applied");
    // Idempotent.
    let again = sidecar_command(&db.url, "http://127.0.0.1:9", &BTreeMap::new()).arg("migrate").output().expect("migrate");
    assert!(again.status.success());
    assert_eq!(applied_migrations(&db).await, Some(expected));

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
per_backend!(migrate_then_add_users_then_log_in);

#[tokio::test]
async fn serve_stops_gracefully_on_sigterm() {
    let db = TestDatabase::create(Backend::Sqlite).await;
    let mut child = sidecar_command(&db.url, "http://127.0.0.1:9", &env(&[("COHORT_LISTEN", "127.0.0.1:0")]))
        .arg("serve")
        .stderr(Stdio::piped())
        .spawn()
        .expect("serve");
    // The address it got is in its "cohort listening" line; the rest of stderr is kept.
    let stderr = child.stderr.take().expect("stderr");
    let (address_tx, address_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(address) = listening_address(&line) {
                let _ = address_tx.send(address);
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let address = address_rx.recv_timeout(Duration::from_secs(30)).expect("serve did not say where it listens");
    let c = Client::new(&format!("http://{address}"));
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
    let log = reader.join().expect("stderr reader");
    assert!(exit.success(), "{exit:?}\n{log}");
    // It stopped through its graceful path (the store closed after the server), not by
    // dying on the signal.
    assert!(log.contains("shutting down"), "{log}");
}
