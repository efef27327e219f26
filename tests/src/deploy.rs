//! A whole deployment under test: Orthanc plus Cohort (the sidecar beside it, or the
//! plugin inside it) on a throwaway database.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use std::sync::Arc;

use crate::client::Client;
use crate::db::{Backend, TestDatabase};
use crate::faults::PrivateTmpfs;
use crate::orthanc::{tail, Orthanc, OrthancOptions};

pub const ADMIN_EMAIL: &str = "admin@cohort.test";
pub const ADMIN_PASSWORD: &str = "bootstrap-admin-pw";
/// The production plugin, what the plugin deployments load.
pub const PLUGIN_LIBRARY: &str = "libcohort_orthanc.so";
/// The test library: the production plugin plus `GET /api/__test__/panic`, which panics
/// (and, with `COHORT_PLUGIN_SELFTEST=1`, the FFI layer's demo routes instead).
pub const TEST_PLUGIN_LIBRARY: &str = "libcohort_orthanc_testlib.so";
/// Known to the tests, so they can forge tokens signed with the right key.
pub const JWT_SECRET: &str = "e2e-secret-e2e-secret-e2e-secret-e2e-secret";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Host {
    /// `cohort serve` beside a stock, loopback-only Orthanc.
    Sidecar,
    /// `libcohort_orthanc.so` inside Orthanc.
    Plugin,
}

/// The environment variable of a configuration key (`MaxUploadBytes` →
/// `COHORT_MAX_UPLOAD_BYTES`), as the sidecar reads it.
pub fn env_name(json_name: &str) -> String {
    match json_name {
        "BootstrapAdminEmail" => "COHORT_ADMIN_EMAIL".into(),
        "BootstrapAdminPassword" => "COHORT_ADMIN_PASSWORD".into(),
        _ => {
            let mut out = String::from("COHORT");
            for c in json_name.chars() {
                if c.is_ascii_uppercase() {
                    out.push('_');
                }
                out.push(c.to_ascii_uppercase());
            }
            out
        }
    }
}

fn env_value(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(env_value).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// The `cohort serve` process. It listens on port 0 and the harness reads the address it
/// got from its "cohort listening" log line, so no port is ever handed out in advance.
#[derive(Debug)]
pub struct Sidecar {
    child: Option<Child>,
    pub url: String,
    log: tempfile::NamedTempFile,
    /// How it was started, to start it again.
    db_url: String,
    orthanc_url: String,
    env: BTreeMap<String, String>,
    /// The private tmpfs the process runs with, if any.
    tmpfs: Option<Arc<PrivateTmpfs>>,
}

impl Sidecar {
    /// Starts `cohort serve` with the harness's settings plus `env`, and waits until it
    /// answers.
    pub async fn start(db_url: &str, orthanc_url: &str, env: &BTreeMap<String, String>) -> Sidecar {
        Self::start_in(db_url, orthanc_url, env, None).await
    }

    /// As [`Sidecar::start`], in a mount namespace of its own with `tmpfs` mounted.
    pub async fn start_in(db_url: &str, orthanc_url: &str, env: &BTreeMap<String, String>, tmpfs: Option<Arc<PrivateTmpfs>>) -> Sidecar {
        let log = tempfile::NamedTempFile::new().expect("log file");
        let mut sidecar = Sidecar {
            child: None,
            url: String::new(),
            log,
            db_url: db_url.to_string(),
            orthanc_url: orthanc_url.to_string(),
            env: env.clone(),
            tmpfs,
        };
        if let Err(log) = sidecar.spawn("127.0.0.1:0").await {
            panic!("the sidecar did not start; its log:\n{log}");
        }
        sidecar
    }

    /// Starts the process listening on `listen`; on failure, returns its log.
    async fn spawn(&mut self, listen: &str) -> Result<(), String> {
        let from = crate::process::file_len(self.log.path());
        let mut cmd = match &self.tmpfs {
            Some(tmpfs) => configure_sidecar(tmpfs.command(crate::built("cohort")), &self.db_url, &self.orthanc_url, &self.env),
            None => sidecar_command(&self.db_url, &self.orthanc_url, &self.env),
        };
        cmd.arg("serve").env("COHORT_LISTEN", listen);
        let log = std::fs::OpenOptions::new().append(true).open(self.log.path()).expect("log");
        self.child = Some(cmd.stdout(Stdio::null()).stderr(log).spawn().expect("start cohort serve"));
        self.wait_until_up(from).await
    }

    /// Kills the sidecar and starts it again on the same database, on the same port when
    /// it is still free (else on another: [`Sidecar::url`] says where).
    pub async fn restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let same = self.url.trim_start_matches("http://").to_string();
        if self.spawn(&same).await.is_err() {
            if let Err(log) = self.spawn("127.0.0.1:0").await {
                panic!("the sidecar did not start again; its log:\n{log}");
            }
        }
    }

    /// Kills the process (Cohort's side down; Orthanc keeps running).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the process again after [`Sidecar::kill`] or [`Sidecar::terminate`], on
    /// the same port when it is still free (else another: [`Sidecar::url`] says where).
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "the sidecar is still running");
        self.restart().await;
    }

    /// Sends SIGTERM and waits for the process to exit (at most `within`); returns its
    /// exit status and how long it took. Panics if it is still running then.
    pub fn terminate(&mut self, within: Duration) -> (std::process::ExitStatus, Duration) {
        let mut child = self.child.take().expect("the sidecar is running");
        let started = Instant::now();
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return (status, started.elapsed());
            }
            if started.elapsed() > within {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the sidecar did not exit within {within:?} of SIGTERM; its log:\n{}", tail(&self.log(), 60));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Waits until the process logs (after byte `from`) the address it listens on while
    /// alive, and its `/api/health` answers with the health document. A process that
    /// exits first is an error carrying its log.
    async fn wait_until_up(&mut self, from: u64) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("HTTP client");
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                self.child = None;
                return Err(format!("(exited with {status})\n{}", crate::process::read_from(self.log.path(), from)));
            }
            if let Some(address) = listening_address(&crate::process::read_from(self.log.path(), from)) {
                self.url = format!("http://{address}");
                let health = http.get(format!("{}/api/health", self.url)).send().await;
                if let Ok(answer) = health {
                    let body: Value = answer.json().await.unwrap_or(Value::Null);
                    if body.get("database").is_some() {
                        return Ok(());
                    }
                }
            }
            assert!(Instant::now() < deadline, "the sidecar did not start within 60 s; its log:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// The address in a `cohort serve` log's "cohort listening" line (text or JSON logs).
pub fn listening_address(log: &str) -> Option<String> {
    let line = crate::process::strip_ansi(log.lines().find(|l| l.contains("cohort listening"))?);
    let rest = match line.find("address=") {
        Some(i) => &line[i + "address=".len()..],
        None => {
            let i = line.find("\"address\":\"")?;
            &line[i + "\"address\":\"".len()..]
        }
    };
    let end = rest.find(|c: char| c.is_whitespace() || c == '"' || c == ',').unwrap_or(rest.len());
    Some(rest[..end].to_string())
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

/// A `cohort` command with a clean environment: only the harness's `COHORT_*` settings,
/// and `TMPDIR` (its upload spool in this process's own directory, [`crate::scratch`]).
pub fn sidecar_command(db_url: &str, orthanc_url: &str, env: &BTreeMap<String, String>) -> Command {
    configure_sidecar(crate::process::command(crate::built("cohort")), db_url, orthanc_url, env)
}

fn configure_sidecar(mut cmd: Command, db_url: &str, orthanc_url: &str, env: &BTreeMap<String, String>) -> Command {
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TMPDIR", std::env::temp_dir())
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

/// The prefix of a deployment setting that goes to Orthanc's configuration.
pub const ORTHANC_SETTING: &str = "Orthanc:";
/// A setting's value that stands for the deployment's Orthanc storage directory (known
/// only once Orthanc has started), e.g. for the sidecar's `OrthancStorageDirectory`.
pub const ORTHANC_STORAGE: &str = "<Orthanc's StorageDirectory>";

/// Orthanc and Cohort on one database.
#[derive(Debug)]
pub struct Deployment {
    pub host: Host,
    pub db: TestDatabase,
    pub orthanc: Orthanc,
    pub sidecar: Option<Sidecar>,
    /// Where the `/api` is served.
    pub url: String,
    /// The bootstrap admin's access token for Orthanc's own API behind the plugin, made
    /// once (a login costs a bcrypt verification).
    orthanc_token: std::sync::Mutex<Option<String>>,
}

impl Deployment {
    pub async fn start(host: Host, backend: Backend) -> Deployment {
        Self::start_with(host, backend, BTreeMap::new()).await
    }

    /// Starts a deployment with extra settings, given by their JSON names (the plugin's
    /// `"Cohort"` section; the sidecar gets the matching `COHORT_*` variables). A name
    /// starting with [`ORTHANC_SETTING`] is a top-level key of Orthanc's own configuration
    /// instead (e.g. `"Orthanc:HttpThreadsCount"`), on both hosts.
    pub async fn start_with(host: Host, backend: Backend, settings: BTreeMap<String, Value>) -> Deployment {
        Self::start_with_library(host, backend, settings, PLUGIN_LIBRARY).await
    }

    /// As [`Deployment::start_with`], the plugin deployment loading `library` (e.g.
    /// [`TEST_PLUGIN_LIBRARY`]) instead of the production plugin.
    pub async fn start_with_library(host: Host, backend: Backend, settings: BTreeMap<String, Value>, library: &str) -> Deployment {
        let db = TestDatabase::create(backend).await;
        Self::start_on(host, db, settings, library, None).await
    }

    /// Starts a deployment on `db`, the Cohort process (the sidecar, or Orthanc with the
    /// plugin) running with `tmpfs` mounted in a namespace of its own when given.
    pub async fn start_on(
        host: Host,
        db: TestDatabase,
        settings: BTreeMap<String, Value>,
        library: &str,
        tmpfs: Option<Arc<PrivateTmpfs>>,
    ) -> Deployment {
        let (orthanc_settings, settings): (BTreeMap<_, _>, BTreeMap<_, _>) =
            settings.into_iter().partition(|(k, _)| k.starts_with(ORTHANC_SETTING));
        let extra: serde_json::Map<String, Value> =
            orthanc_settings.into_iter().map(|(k, v)| (k[ORTHANC_SETTING.len()..].to_string(), v)).collect();
        match host {
            Host::Sidecar => {
                let orthanc = Orthanc::start(OrthancOptions { extra, ..OrthancOptions::default() }).await;
                let storage = Value::String(orthanc.storage_directory().display().to_string());
                let env = settings
                    .iter()
                    .map(|(k, v)| (env_name(k), env_value(if v.as_str() == Some(ORTHANC_STORAGE) { &storage } else { v })))
                    .collect();
                let sidecar = Sidecar::start_in(&db.url, &orthanc.url(), &env, tmpfs).await;
                let url = sidecar.url.clone();
                Deployment { host, db, orthanc, sidecar: Some(sidecar), url, orthanc_token: Default::default() }
            }
            Host::Plugin => {
                let mut section = json!({
                    "DatabaseUrl": db.url,
                    "CookieSecure": false,
                    "BcryptCost": 10,
                    "JwtSecret": JWT_SECRET,
                    "BootstrapAdminEmail": ADMIN_EMAIL,
                    "BootstrapAdminPassword": ADMIN_PASSWORD,
                });
                if let Some(obj) = section.as_object_mut() {
                    obj.extend(settings);
                }
                let mut extra = extra;
                extra.insert("Cohort".into(), section);
                let options = OrthancOptions { plugins: vec![crate::built(library)], extra, env: Vec::new(), tmpfs };
                let orthanc = Orthanc::start(options).await;
                let url = orthanc.url();
                Deployment { host, db, orthanc, sidecar: None, url, orthanc_token: Default::default() }
            }
        }
    }

    /// A client of Orthanc's own REST API: as is beside the sidecar, with the bootstrap
    /// admin's Bearer token where the plugin guards it (the token is cached: a test that
    /// ends the admin's sessions calls [`Deployment::forget_orthanc_token`]).
    pub async fn orthanc_client(&self) -> Client {
        let c = Client::new(&self.orthanc.url());
        if self.host != Host::Plugin {
            return c;
        }
        let cached = self.orthanc_token.lock().expect("token lock").clone();
        let token = match cached {
            Some(token) => token,
            None => {
                let cohort = Client::new(&self.url);
                cohort.login(ADMIN_EMAIL, ADMIN_PASSWORD).await.expect_status(200);
                let token = cohort.cookie("access_token").expect("access token");
                *self.orthanc_token.lock().expect("token lock") = Some(token.clone());
                token
            }
        };
        c.with_bearer(&token)
    }

    /// Forgets the cached admin token of [`Deployment::orthanc_client`].
    pub fn forget_orthanc_token(&self) {
        *self.orthanc_token.lock().expect("token lock") = None;
    }

    /// Orthanc's instance count, read from its own REST API.
    pub async fn orthanc_instances(&self) -> i64 {
        let mut stats = self.orthanc_client().await.get("/statistics").await;
        if stats.status == 401 || stats.status == 403 {
            // The cached token's session ended: log in again once.
            self.forget_orthanc_token();
            stats = self.orthanc_client().await.get("/statistics").await;
        }
        stats.expect_status(200)["CountInstances"].as_i64().expect("CountInstances")
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

    /// Restarts the Cohort side (the sidecar process; for the plugin, Orthanc itself).
    /// The sidecar may come back on another port: clients made before keep the old one.
    pub async fn restart_cohort(&mut self) {
        match &mut self.sidecar {
            Some(s) => {
                s.restart().await;
                self.url = s.url.clone();
            }
            None => {
                self.orthanc.stop();
                self.orthanc.start_again().await;
            }
        }
    }

    /// Where Orthanc's own REST API is reached.
    pub fn orthanc_url(&self) -> String {
        self.orthanc.url()
    }

    /// The Cohort process's id (the sidecar, or Orthanc with the plugin).
    pub fn cohort_pid(&self) -> u32 {
        match &self.sidecar {
            Some(s) => s.pid(),
            None => self.orthanc.pid(),
        }
    }

    /// The Cohort process's log (the sidecar's, or Orthanc's for the plugin).
    pub fn log(&self) -> String {
        match &self.sidecar {
            Some(s) => s.log(),
            None => self.orthanc.log(),
        }
    }
}

impl Drop for Deployment {
    /// The processes stop first, then the database is dropped (a field, dropped after
    /// this): no process sees its database vanish under it.
    fn drop(&mut self) {
        drop(self.sidecar.take());
        self.orthanc.kill();
    }
}
