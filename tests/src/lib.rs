//! The end-to-end harness: throwaway databases, a real Orthanc (Debian's `orthanc`
//! package) on free ports, the `cohort` sidecar or the Cohort plugin inside Orthanc, and
//! a browser-like HTTP client. Every process is killed when its handle drops.
//!
//! PostgreSQL comes from `COHORT_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`); each test gets its own database. A
//! PostgreSQL that cannot be reached fails the test, unless `COHORT_TEST_SKIP_POSTGRES=1`
//! is set, in which case each PostgreSQL variant says it was skipped on the terminal
//! (past libtest's output capture) and in `COHORT_TEST_SKIP_LOG` when set, which
//! `scripts/test` sums up at the end.

pub mod browser;
pub mod client;
pub mod db;
pub mod deploy;
pub mod dicom;
pub mod faults;
pub mod orthanc;
pub mod process;
pub mod scratch;

pub use client::{Client, Resp};
pub use db::{Backend, TestDatabase};
pub use deploy::{Deployment, Host, ADMIN_EMAIL, ADMIN_PASSWORD, JWT_SECRET};
pub use orthanc::Orthanc;

use std::io::Write;
use std::path::PathBuf;

/// The value of one sample line (`name{labels} value`) of a Prometheus text, if present;
/// a value that is not a number fails the test.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')).map(|v| v.trim().parse().expect("a number"))
}

/// `/api/metrics` as `c` reads it (an admin), as text.
pub async fn metrics_text(c: &Client) -> String {
    let r = c.get("/api/metrics").await;
    assert_eq!(r.status.as_u16(), 200, "{}", String::from_utf8_lossy(&r.body));
    String::from_utf8(r.body.to_vec()).expect("utf-8")
}

/// A port that was free a moment ago (bound, then closed): another process may take it
/// before the caller's server does. Only for servers that can neither listen on port 0
/// and say where, nor report a taken port (the harness's own children do one or the
/// other: see [`process`]).
/// Waits until `check` holds, polling every 100 ms; fails the test naming `what` after
/// `timeout` (for what happens asynchronously: the change follower, a drain).
pub async fn eventually<F, Fut>(what: &str, timeout: std::time::Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + timeout;
    while !check().await {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free local port")
}

/// The cargo profile directory of the running program (`target/debug` for tests,
/// `target/release` for the benchmarks), where the workspace's binaries and the plugin
/// library are built.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("executable path");
    let dir = exe.parent().expect("executable directory");
    // Test binaries live in target/<profile>/deps/.
    let dir = if dir.ends_with("deps") { dir.parent().expect("profile directory") } else { dir };
    dir.to_path_buf()
}

/// A workspace artefact that `cargo build --workspace` must have produced.
pub fn built(name: &str) -> PathBuf {
    let path = target_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace` before the tests (the README's test command does)",
        path.display()
    );
    path
}

/// Whether this PostgreSQL variant is skipped: only when the developer said so
/// (`COHORT_TEST_SKIP_POSTGRES=1`), and never silently. The line goes to the process's
/// stderr directly (libtest captures `eprintln!`, not the stream) and to the file named
/// by `COHORT_TEST_SKIP_LOG`. Skipping while `COHORT_TEST_POSTGRES_URL` names a server
/// is a contradiction and fails.
pub fn postgres_skipped() -> bool {
    if !std::env::var("COHORT_TEST_SKIP_POSTGRES").is_ok_and(|v| v == "1") {
        return false;
    }
    assert!(
        std::env::var_os("COHORT_TEST_POSTGRES_URL").is_none(),
        "COHORT_TEST_SKIP_POSTGRES=1 and COHORT_TEST_POSTGRES_URL are both set: run the PostgreSQL variants or skip them, not both"
    );
    log_skip("PostgreSQL variant; COHORT_TEST_SKIP_POSTGRES=1");
    true
}

/// Says that the running test is skipped, and why: on the process's stderr directly
/// (libtest captures `eprintln!`, not the stream) and in the file named by
/// `COHORT_TEST_SKIP_LOG`, which `scripts/test` sums up at the end. A test that cannot
/// run here says so through this, never by passing silently.
pub fn log_skip(reason: &str) {
    // libtest names each test's thread after the test.
    let test = std::thread::current().name().unwrap_or("a test").to_string();
    let line = format!("SKIPPED {test} ({reason})\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
    if let Some(path) = std::env::var_os("COHORT_TEST_SKIP_LOG") {
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
            let _ = f.write_all(line.as_bytes());
        }
    }
}

/// Declares one `#[tokio::test]` per deployment (host x database) for a scenario
/// `async fn(Deployment)`.
#[macro_export]
macro_rules! per_deployment {
    ($scenario:ident) => {
        mod $scenario {
            use $crate::{Backend, Deployment, Host};

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sidecar_sqlite() {
                super::$scenario(Deployment::start(Host::Sidecar, Backend::Sqlite).await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sidecar_postgres() {
                if $crate::postgres_skipped() {
                    return;
                }
                super::$scenario(Deployment::start(Host::Sidecar, Backend::Postgres).await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn plugin_sqlite() {
                super::$scenario(Deployment::start(Host::Plugin, Backend::Sqlite).await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn plugin_postgres() {
                if $crate::postgres_skipped() {
                    return;
                }
                super::$scenario(Deployment::start(Host::Plugin, Backend::Postgres).await).await;
            }
        }
    };
}

/// Declares one `#[tokio::test]` per database for an `async fn(Backend)`.
#[macro_export]
macro_rules! per_backend {
    ($scenario:ident) => {
        mod $scenario {
            use $crate::Backend;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$scenario(Backend::Sqlite).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if $crate::postgres_skipped() {
                    return;
                }
                super::$scenario(Backend::Postgres).await;
            }
        }
    };
}
