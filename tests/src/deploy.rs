//! A whole deployment under test: Orthanc plus Cohort (the sidecar beside it, or the
//! plugin inside it) on a throwaway database.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::client::Client;
use crate::db::{Backend, TestDatabase};
use crate::orthanc::{tail, Orthanc, OrthancOptions};

pub const ADMIN_EMAIL: &str = "admin@cohort.test";
pub const ADMIN_PASSWORD: &str = "bootstrap-admin-pw";
/// Known to the tests, so they can forge tokens signed with the right key.
pub const JWT_SECRET: &str = "e2e-secret-e2e-secret-e2e-secret-e2e-secret";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Host {
    Sidecar,
}

/// The `cohort serve` process.
#[derive(Debug)]
pub struct Sidecar {
    child: Option<Child>,
    pub url: String,
    log: tempfile::NamedTempFile,
}

impl Sidecar {
    /// Starts `cohort serve` with the harness's settings plus `env`, and waits until it
    /// answers.
    pub async fn start(db_url: &str, orthanc_url: &str, env: &BTreeMap<String, String>) -> Sidecar {
        let port = crate::free_port();
        let log = tempfile::NamedTempFile::new().expect("log file");
        let mut cmd = sidecar_command(db_url, orthanc_url, env);
        cmd.arg("serve").env("COHORT_LISTEN", format!("127.0.0.1:{port}"));
        let child = cmd.stdout(Stdio::null()).stderr(log.reopen().expect("log")).spawn().expect("start cohort serve");
        let sidecar = Sidecar { child: Some(child), url: format!("http://127.0.0.1:{port}"), log };
        sidecar.wait_until_up().await;
        sidecar
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    async fn wait_until_up(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let http = reqwest::Client::new();
        loop {
            if http.get(format!("{}/api/health", self.url)).send().await.is_ok() {
                return;
            }
            assert!(Instant::now() < deadline, "the sidecar did not start within 60 s; its log:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- sidecar log (last 60 lines) ----\n{}", tail(&self.log(), 60));
        }
    }
}

/// A `cohort` command with a clean environment: only the harness's `COHORT_*` settings.
pub fn sidecar_command(db_url: &str, orthanc_url: &str, env: &BTreeMap<String, String>) -> Command {
    let mut cmd = Command::new(crate::built("cohort"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info,sqlx=warn".into()))
        .env("COHORT_DATABASE_URL", db_url)
        .env("COHORT_ORTHANC_URL", orthanc_url)
        .env("COHORT_COOKIE_SECURE", "false")
        .env("COHORT_BCRYPT_COST", "10")
        .env("COHORT_JWT_SECRET", JWT_SECRET)
        .env("COHORT_ADMIN_EMAIL", ADMIN_EMAIL)
        .env("COHORT_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .stdin(Stdio::null());
    cmd.envs(env);
    cmd
}

/// Orthanc and Cohort on one database.
#[derive(Debug)]
pub struct Deployment {
    pub host: Host,
    pub db: TestDatabase,
    pub orthanc: Orthanc,
    pub sidecar: Option<Sidecar>,
    /// Where the `/api` is served.
    pub url: String,
}

impl Deployment {
    pub async fn start(host: Host, backend: Backend) -> Deployment {
        Self::start_with(host, backend, BTreeMap::new()).await
    }

    /// Starts a deployment with extra settings, given as `COHORT_*` names.
    pub async fn start_with(host: Host, backend: Backend, settings: BTreeMap<String, String>) -> Deployment {
        let db = TestDatabase::create(backend).await;
        match host {
            Host::Sidecar => {
                let orthanc = Orthanc::start(OrthancOptions::default()).await;
                let sidecar = Sidecar::start(&db.url, &orthanc.url(), &settings).await;
                let url = sidecar.url.clone();
                Deployment { host, db, orthanc, sidecar: Some(sidecar), url }
            }
        }
    }

    /// A fresh browser-like client of this deployment.
    pub fn client(&self) -> Client {
        Client::new(&self.url)
    }

    /// A client logged in as the bootstrap admin.
    pub async fn admin(&self) -> Client {
        let c = self.client();
        c.login(ADMIN_EMAIL, ADMIN_PASSWORD).await.expect_status(200);
        c
    }

    /// Where Orthanc's own REST API is reached.
    pub fn orthanc_url(&self) -> String {
        self.orthanc.url()
    }

    /// The Cohort process's log (the sidecar's, or Orthanc's for the plugin).
    pub fn log(&self) -> String {
        match &self.sidecar {
            Some(s) => s.log(),
            None => self.orthanc.log(),
        }
    }
}
