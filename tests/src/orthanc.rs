//! A real Orthanc (`/usr/sbin/Orthanc`, Debian's package) on free ports with a
//! temporary storage directory, killed when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub const ORTHANC_BIN: &str = "/usr/sbin/Orthanc";

#[derive(Debug)]
pub struct Orthanc {
    child: Option<Child>,
    config_path: PathBuf,
    env: Vec<(String, String)>,
    /// Log at info level (set when plugins are loaded, to see their messages).
    verbose: bool,
    pub http_port: u16,
    pub dicom_port: u16,
    pub aet: String,
    pub dir: tempfile::TempDir,
}

/// What to put in Orthanc's configuration besides the defaults of the harness.
#[derive(Debug, Default, Clone)]
pub struct OrthancOptions {
    /// Shared libraries to load as plugins.
    pub plugins: Vec<PathBuf>,
    /// Extra top-level configuration keys (e.g. the `"Cohort"` section).
    pub extra: serde_json::Map<String, Value>,
    /// Extra environment variables of the Orthanc process.
    pub env: Vec<(String, String)>,
}

impl Orthanc {
    /// Starts Orthanc with `options` and waits for it to exit on its own (a refused
    /// configuration); kills it after 30 s. Returns its exit status and log.
    pub async fn run_to_exit(options: OrthancOptions) -> (std::process::ExitStatus, String) {
        let (dir, config_path) = Self::write_config(&options);
        let log_path = dir.path().join("orthanc.log");
        let log = std::fs::File::create(&log_path).expect("log file");
        let mut child = Command::new(ORTHANC_BIN)
            .arg(&config_path)
            .envs(options.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start Orthanc");
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                break child.wait().expect("wait");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        (status, std::fs::read_to_string(&log_path).unwrap_or_default())
    }

    pub async fn start(options: OrthancOptions) -> Orthanc {
        let (dir, config_path) = Self::write_config(&options);
        let config: Value = serde_json::from_slice(&std::fs::read(&config_path).expect("config")).expect("json");
        let port = |key: &str| config[key].as_u64().and_then(|p| u16::try_from(p).ok()).expect("port");
        let (http_port, dicom_port) = (port("HttpPort"), port("DicomPort"));
        let aet = config["DicomAet"].as_str().unwrap_or_default().to_string();
        // Plugins log at info level; the benchmarks turn that off (it costs per request).
        let verbose = !options.plugins.is_empty() && std::env::var("COHORT_TEST_ORTHANC_QUIET").is_err();
        let mut orthanc = Orthanc { child: None, config_path, env: options.env, verbose, http_port, dicom_port, aet, dir };
        orthanc.spawn().await;
        orthanc
    }

    /// Writes a configuration on free ports into a new temporary directory.
    fn write_config(options: &OrthancOptions) -> (tempfile::TempDir, PathBuf) {
        assert!(Path::new(ORTHANC_BIN).exists(), "{ORTHANC_BIN} is missing: install Debian's orthanc package");
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = json!({
            "Name": "cohort-test",
            "StorageDirectory": dir.path().join("storage"),
            "IndexDirectory": dir.path().join("storage"),
            "HttpPort": crate::free_port(),
            "DicomPort": crate::free_port(),
            "DicomAet": "COHORTTEST",
            "DicomServerEnabled": true,
            "DicomAlwaysAllowStore": true,
            "DicomCheckCalledAet": false,
            "AuthenticationEnabled": false,
            "HttpCompressionEnabled": false,
            "StableAge": 1,
            "RemoteAccessAllowed": !options.plugins.is_empty(),
            "Plugins": options.plugins,
            "HttpTimeout": 30,
        });
        if let Some(obj) = config.as_object_mut() {
            obj.extend(options.extra.clone());
        }
        let config_path = dir.path().join("orthanc.json");
        std::fs::write(&config_path, serde_json::to_vec_pretty(&config).expect("json")).expect("write config");
        (dir, config_path)
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("orthanc.log")).expect("log file");
        let mut cmd = Command::new(ORTHANC_BIN);
        if self.verbose {
            // Info lines: the plugin's own log messages.
            cmd.arg("--verbose");
        }
        let child = cmd
            .arg(&self.config_path)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start Orthanc");
        self.child = Some(child);
        self.wait_until_up().await;
    }

    /// Kills Orthanc at once (a crash, as far as its clients can tell).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts Orthanc again on the same ports and storage after [`Orthanc::kill`] or
    /// [`Orthanc::stop`].
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "Orthanc is still running");
        self.spawn().await;
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("orthanc.log")).unwrap_or_default()
    }

    /// Waits until Orthanc's HTTP server answers (with any status: a plugin may guard
    /// `/system`).
    async fn wait_until_up(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let http = reqwest::Client::new();
        loop {
            if http.get(format!("{}/system", self.url())).send().await.is_ok() {
                return;
            }
            assert!(Instant::now() < deadline, "Orthanc did not start within 60 s; its log:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Asks Orthanc to stop (SIGTERM) and waits for it; returns its exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("Orthanc is running");
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("Orthanc did not stop within 30 s of SIGTERM; its log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether the process is still alive.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for Orthanc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- Orthanc log (last 60 lines) ----\n{}", tail(&self.log(), 60));
        }
    }
}

pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
