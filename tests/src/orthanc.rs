//! A real Orthanc (`/usr/sbin/Orthanc`, Debian's package) with a temporary storage
//! directory, killed when dropped (and when the test binary dies, see
//! [`crate::process`]).
//!
//! Orthanc cannot listen on port 0 and report the port, so its ports are drawn at random
//! and a start that fails because a port is taken is retried on other ports. Start-up
//! waits for *this* process's own log to say "Orthanc has started" while it is alive,
//! then for its HTTP server to answer: an answer from another server on a reused port
//! never counts.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::process;

pub const ORTHANC_BIN: &str = "/usr/sbin/Orthanc";

/// How many times a start is retried on fresh ports when a port is taken.
const PORT_ATTEMPTS: u32 = 8;

#[derive(Debug)]
pub struct Orthanc {
    child: Option<Child>,
    config_path: PathBuf,
    env: Vec<(String, String)>,
    tmpfs: Option<std::sync::Arc<crate::faults::PrivateTmpfs>>,
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
    /// A tmpfs mounted in a mount namespace of Orthanc's own (for the plugin's files).
    pub tmpfs: Option<std::sync::Arc<crate::faults::PrivateTmpfs>>,
}

/// Why a start did not succeed.
enum StartError {
    /// Orthanc said a port is taken: try others.
    PortInUse,
}

impl Orthanc {
    /// Starts Orthanc with `options` and waits for it to exit on its own (a refused
    /// configuration); returns its exit status and log. Panics if it is still running
    /// after 30 s: a refused configuration must stop Orthanc by itself.
    pub async fn run_to_exit(options: OrthancOptions) -> (std::process::ExitStatus, String) {
        let dir = tempfile::tempdir().expect("temp dir");
        let config_path = Self::write_config(dir.path(), &options, process::random_port(), process::random_port());
        let log_path = dir.path().join("orthanc.log");
        let log = std::fs::File::create(&log_path).expect("log file");
        let mut child = process::command(ORTHANC_BIN)
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
                let _ = child.wait();
                panic!(
                    "Orthanc was still running 30 s after start: it did not stop by itself; its log:\n{}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        (status, std::fs::read_to_string(&log_path).unwrap_or_default())
    }

    pub async fn start(options: OrthancOptions) -> Orthanc {
        let dir = tempfile::tempdir().expect("temp dir");
        let aet = options.extra.get("DicomAet").and_then(Value::as_str).unwrap_or("COHORTTEST").to_string();
        // Plugins log at info level; the benchmarks turn that off (it costs per request).
        let verbose = !options.plugins.is_empty() && std::env::var("COHORT_TEST_ORTHANC_QUIET").is_err();
        let mut orthanc = Orthanc {
            child: None,
            config_path: PathBuf::new(),
            env: options.env.clone(),
            tmpfs: options.tmpfs.clone(),
            verbose,
            http_port: 0,
            dicom_port: 0,
            aet,
            dir,
        };
        for attempt in 1..=PORT_ATTEMPTS {
            let (http_port, dicom_port) = (process::random_port(), process::random_port());
            if http_port == dicom_port {
                continue;
            }
            orthanc.config_path = Self::write_config(orthanc.dir.path(), &options, http_port, dicom_port);
            let config: Value = serde_json::from_slice(&std::fs::read(&orthanc.config_path).expect("config")).expect("json");
            let port = |key: &str| config[key].as_u64().and_then(|p| u16::try_from(p).ok()).expect("port");
            (orthanc.http_port, orthanc.dicom_port) = (port("HttpPort"), port("DicomPort"));
            match orthanc.spawn().await {
                Ok(()) => return orthanc,
                Err(StartError::PortInUse) => {
                    eprintln!("Orthanc: port {http_port} or {dicom_port} in use (attempt {attempt}), trying others");
                    // The log is the serving process's: a test reading it for errors must
                    // not find this attempt's (the port, its aborted start), kept aside.
                    let aside = orthanc.dir.path().join(format!("orthanc-attempt-{attempt}.log"));
                    std::fs::rename(orthanc.log_path(), &aside).expect("move the failed attempt's log aside");
                }
            }
        }
        let last = orthanc.dir.path().join(format!("orthanc-attempt-{PORT_ATTEMPTS}.log"));
        panic!(
            "Orthanc found no free ports in {PORT_ATTEMPTS} attempts; the last one's log:\n{}",
            std::fs::read_to_string(last).unwrap_or_default()
        );
    }

    /// Writes the configuration into `dir`.
    fn write_config(dir: &Path, options: &OrthancOptions, http_port: u16, dicom_port: u16) -> PathBuf {
        assert!(Path::new(ORTHANC_BIN).exists(), "{ORTHANC_BIN} is missing: install Debian's orthanc package");
        let mut config = json!({
            "Name": "cohort-test",
            "StorageDirectory": dir.join("storage"),
            "IndexDirectory": dir.join("storage"),
            "HttpPort": http_port,
            "DicomPort": dicom_port,
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
        let config_path = dir.join("orthanc.json");
        std::fs::write(&config_path, serde_json::to_vec_pretty(&config).expect("json")).expect("write config");
        config_path
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("orthanc.log")
    }

    async fn spawn(&mut self) -> Result<(), StartError> {
        let log_path = self.log_path();
        let from = process::file_len(&log_path);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path).expect("log file");
        let mut cmd = match &self.tmpfs {
            Some(tmpfs) => tmpfs.command(ORTHANC_BIN),
            None => process::command(ORTHANC_BIN),
        };
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
        self.wait_until_up(from).await
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
        if self.spawn().await.is_err() {
            panic!(
                "Orthanc could not start again: port {} or {} was taken meanwhile; its log:\n{}",
                self.http_port,
                self.dicom_port,
                self.log()
            );
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// Orthanc's `StorageDirectory` (its files, and its SQLite index).
    pub fn storage_directory(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Waits until this process logged (after byte `from` of the log) that it started,
    /// while alive, and its HTTP server answers (with any status: a plugin may guard
    /// `/system`). A process that exits first fails the start, or asks for other ports
    /// when one was taken.
    async fn wait_until_up(&mut self, from: u64) -> Result<(), StartError> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("HTTP client");
        let log_path = self.log_path();
        let mut started = false;
        loop {
            let exited = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                self.child = None;
                let log = process::read_from(&log_path, from);
                if log.contains("already in use") {
                    return Err(StartError::PortInUse);
                }
                panic!("Orthanc exited during start-up ({status}); its log:\n{log}");
            }
            if !started {
                started = process::read_from(&log_path, from).contains("Orthanc has started");
            }
            if started && http.get(format!("{}/system", self.url())).send().await.is_ok() {
                return Ok(());
            }
            assert!(Instant::now() < deadline, "Orthanc did not start within 60 s; its log:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Asks Orthanc to stop (SIGTERM) and waits for it; returns its exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("Orthanc is running");
        let _ = std::process::Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
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

/// The error and fatal lines of an Orthanc log. Orthanc logs through glog: a line starts
/// with its level letter and the date as `MMDD` (`E0315 10:04:01.663058 …`), so `E` then
/// four digits, whatever the month.
pub fn error_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| {
            let b = l.as_bytes();
            b.len() > 5 && matches!(b[0], b'E' | b'F') && b[1..5].iter().all(u8::is_ascii_digit) && b[5] == b' '
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn error_lines_are_found_in_every_month() {
        let log = "W0102 06:04:01.549346 main.cpp:1] fine\n\
                   E0315 10:04:01.663058 OrthancException.cpp:58] March\n\
                   E1202 06:04:03.158287 main.cpp:2074] December\n\
                   F0901 00:00:00.000000 main.cpp:1] fatal in September\n\
                   I0101 00:00:00.000000 x.cpp:1] Error in an info line is not an error line\n\
                   Ending without a level";
        assert_eq!(super::error_lines(log).len(), 3);
    }
}
