//! Loads the test library into a real Orthanc (`/usr/sbin/Orthanc`, Debian's 1.10.1) and
//! drives the temporary selftest routes (`src/selftest.rs`) over HTTP. The tests that
//! only read share one Orthanc ([`shared`]); a test that stops Orthanc starts its own.
//! Orthanc runs under `setpriv --pdeathsig KILL`, so it dies with the thread that
//! started it (the test binary at the latest), and its handle kills it on drop.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use reqwest::blocking::{Client, Response};
use reqwest::header::{ALLOW, CONTENT_TYPE, LOCATION, SET_COOKIE, WWW_AUTHENTICATE};
use serde_json::{json, Value};

const ORTHANC_BIN: &str = "/usr/sbin/Orthanc";
const SETPRIV: &str = "/usr/bin/setpriv";
const INTERNAL_ERROR: &str = r#"{"error":{"code":"internal_error","message":"internal error"}}"#;

/// A running Orthanc with the plugin loaded.
struct Orthanc {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    /// Removes `dir` on drop (`None` for the shared instance, whose directory is removed by
    /// the next run, see [`shared`]).
    _tmp: Option<tempfile::TempDir>,
    http: Client,
}

/// One Orthanc for the tests that only read: started on first use from a thread that
/// lives as long as the test binary (its death signal follows that thread).
fn shared() -> &'static Orthanc {
    static SHARED: OnceLock<Orthanc> = OnceLock::new();
    SHARED.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        // Directories of earlier runs whose process is gone.
        for e in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if let Some(pid) = name.strip_prefix("ffi-shared-") {
                if !Path::new("/proc").join(pid).exists() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let dir = root.join(format!("ffi-shared-{}", std::process::id()));
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(Orthanc::start_in(dir, None));
            loop {
                std::thread::park();
            }
        });
        rx.recv().expect("the shared Orthanc started")
    })
}

impl Orthanc {
    /// An Orthanc of this test's own, in a temporary directory.
    fn start() -> Orthanc {
        let tmp = tempfile::tempdir().expect("temp dir");
        Self::start_in(tmp.path().to_path_buf(), Some(tmp))
    }

    /// Starts Orthanc on a random port, another one when the port is taken.
    fn start_in(dir: PathBuf, tmp: Option<tempfile::TempDir>) -> Orthanc {
        assert!(Path::new(ORTHANC_BIN).exists(), "{ORTHANC_BIN} is missing: apt-get install orthanc");
        std::fs::create_dir_all(&dir).expect("Orthanc directory");
        let http =
            Client::builder().redirect(reqwest::redirect::Policy::none()).timeout(Duration::from_secs(20)).build().expect("HTTP client");
        let mut orthanc = Orthanc { child: None, port: 0, dir, _tmp: tmp, http };
        for _ in 0..8 {
            orthanc.port = random_port();
            if orthanc.spawn() {
                return orthanc;
            }
        }
        panic!("Orthanc found no free port in 8 attempts; its log:\n{}", orthanc.log());
    }

    /// Starts the process; false when its port was taken.
    fn spawn(&mut self) -> bool {
        let config = json!({
            "Name": "cohort-ffi-selftest",
            "HttpPort": self.port,
            "DicomServerEnabled": false,
            "AuthenticationEnabled": false,
            "RemoteAccessAllowed": true,
            "HttpCompressionEnabled": false,
            "StorageDirectory": self.dir.join("storage"),
            "IndexDirectory": self.dir.join("storage"),
            "Plugins": [plugin_path()],
        });
        let config_path = self.dir.join("orthanc.json");
        std::fs::write(&config_path, config.to_string()).expect("write config");
        let log = std::fs::File::create(self.dir.join("orthanc.log")).expect("log file");
        let mut cmd = if Path::new(SETPRIV).exists() {
            let mut cmd = Command::new(SETPRIV);
            cmd.args(["--pdeathsig", "KILL", "--", ORTHANC_BIN]);
            cmd
        } else {
            Command::new(ORTHANC_BIN)
        };
        let child = cmd
            // The FFI layer's demo routes instead of Cohort.
            .env("COHORT_PLUGIN_SELFTEST", "1")
            // Info lines show plugin messages written with LogInfo.
            .arg("--verbose")
            .arg(&config_path)
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("start Orthanc");
        self.child = Some(child);
        self.wait_until_up()
    }

    /// Waits for this process's own "Orthanc has started" line, then an answer; false
    /// when it exited because its port was taken.
    fn wait_until_up(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                if self.log().contains("already in use") {
                    return false;
                }
                panic!("Orthanc exited during start-up ({status}); its log:\n{}", self.log());
            }
            if self.log().contains("Orthanc has started") && self.get("/system").is_ok_and(|response| response.status() == 200) {
                return true;
            }
            assert!(Instant::now() < deadline, "Orthanc did not answer within 60 s; its log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn get(&self, path: &str) -> reqwest::Result<Response> {
        self.http.get(self.url(path)).send()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("orthanc.log")).unwrap_or_default()
    }

    /// Sends SIGTERM, as a service manager would, and waits for the exit.
    fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("Orthanc is running");
        let kill = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().expect("run kill");
        assert!(kill.success(), "kill -TERM failed");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("wait for Orthanc") {
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
}

impl Drop for Orthanc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!("---- Orthanc log (last 40 lines) ----\n{}", lines[lines.len().saturating_sub(40)..].join("\n"));
        }
    }
}

/// `libcohort_orthanc_testlib.so` of the current build: the test binary lives in
/// `target/<profile>/deps/`, and so does the freshly built library.
fn plugin_path() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let deps = exe.parent().expect("deps directory");
    // `cargo test` rebuilds the copy in deps/ but only `cargo build` refreshes the one
    // next to it, which may be stale: prefer deps/.
    let candidates =
        [Some(deps.join("libcohort_orthanc_testlib.so")), deps.parent().map(|profile| profile.join("libcohort_orthanc_testlib.so"))];
    candidates
        .into_iter()
        .flatten()
        .find(|path| path.is_file())
        .unwrap_or_else(|| panic!("libcohort_orthanc_testlib.so not found near {}", deps.display()))
}

/// A port below the kernel's ephemeral range (32768 by default), so that no outgoing
/// connection holds it; not reserved, hence the retries in [`Orthanc::start_in`].
fn random_port() -> u16 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let mixed = nanos ^ std::process::id().rotate_left(16);
    10_000 + (mixed % 22_000) as u16
}

fn json_body(response: Response) -> Value {
    response.json().expect("JSON body")
}

#[test]
fn echo_route_copies_the_request_and_sets_both_cookies() {
    let orthanc = shared();
    let response = orthanc
        .http
        .get(orthanc.url("/cohort-ffi-selftest/a/b?x=1&name=%C3%A9"))
        .header("X-Test", "hello")
        .header("Cookie", "session=abc")
        .send()
        .expect("echo");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
    let cookies: Vec<_> = response.headers().get_all(SET_COOKIE).iter().map(|v| v.to_str().expect("ascii")).collect();
    assert_eq!(cookies, ["first=1; Path=/; HttpOnly", "second=2; Path=/; SameSite=Strict"]);
    let echo = json_body(response);
    assert_eq!(echo["method"], "GET");
    assert_eq!(echo["path"], "/cohort-ffi-selftest/a/b");
    assert_eq!(echo["groups"], json!(["/a/b"]));
    // Orthanc 1.10.1 does not decode GET arguments.
    assert_eq!(echo["query"], json!([["x", "1"], ["name", "%C3%A9"]]));
    let headers = echo["headers"].as_array().expect("headers");
    assert!(headers.contains(&json!(["x-test", "hello"])), "{headers:?}");
    assert!(headers.contains(&json!(["cookie", "session=abc"])), "{headers:?}");
    assert_eq!(echo["body_length"], 0);
}

#[test]
fn echo_route_receives_the_post_body() {
    let orthanc = shared();
    let response = orthanc.http.post(orthanc.url("/cohort-ffi-selftest")).body("hello").send().expect("echo");
    assert_eq!(response.status(), 200);
    let echo = json_body(response);
    assert_eq!(echo["method"], "POST");
    // The optional group did not match: Orthanc passes an empty string.
    assert_eq!(echo["groups"], json!([""]));
    assert_eq!(echo["body_length"], 5);
}

#[test]
fn orthanc_started_event_with_null_id_reaches_the_change_callback() {
    let orthanc = shared();
    // OrthancStarted may be signalled just after the HTTP server answers.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let echo = json_body(orthanc.get("/cohort-ffi-selftest").expect("echo"));
        if echo["started_without_id"] == true {
            assert!(echo["changes_seen"].as_u64() >= Some(1));
            return;
        }
        assert!(Instant::now() < deadline, "no OrthancStarted event: {echo}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn json_401_keeps_its_body_and_has_no_www_authenticate() {
    let orthanc = shared();
    let response = orthanc.get("/cohort-ffi-selftest-status/401").expect("401");
    assert_eq!(response.status(), 401);
    assert!(response.headers().get(WWW_AUTHENTICATE).is_none());
    assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
    assert_eq!(json_body(response), json!({"status": 401}));
}

#[test]
fn each_status_goes_out_through_the_sdk_call_it_needs() {
    let orthanc = shared();
    for code in [201, 403, 404, 409, 422, 503] {
        let response = orthanc.get(&format!("/cohort-ffi-selftest-status/{code}")).expect("status");
        assert_eq!(response.status(), code);
        assert_eq!(json_body(response), json!({"status": code}));
    }

    let no_content = orthanc.get("/cohort-ffi-selftest-status/204").expect("204");
    assert_eq!(no_content.status(), 204);
    assert_eq!(no_content.bytes().expect("body").len(), 0);

    let moved = orthanc.get("/cohort-ffi-selftest-status/301").expect("301");
    assert_eq!(moved.status(), 301);
    assert_eq!(moved.headers()[LOCATION], "/cohort-ffi-selftest/moved");

    let not_allowed = orthanc.get("/cohort-ffi-selftest-status/405").expect("405");
    assert_eq!(not_allowed.status(), 405);
    assert_eq!(not_allowed.headers()[ALLOW], "GET, POST");
}

#[test]
fn statuses_orthanc_does_not_know_are_substituted_or_become_500() {
    let orthanc = shared();
    let too_many = orthanc.get("/cohort-ffi-selftest-status/429").expect("429");
    assert_eq!(too_many.status(), 503);
    assert_eq!(json_body(too_many), json!({"status": 429}));

    let teapot = orthanc.get("/cohort-ffi-selftest-status/418").expect("418");
    assert_eq!(teapot.status(), 500);
    assert_eq!(teapot.text().expect("body"), INTERNAL_ERROR);
}

#[test]
fn panicking_handler_answers_json_500_and_orthanc_keeps_serving() {
    let orthanc = shared();
    let response = orthanc.get("/cohort-ffi-selftest-panic").expect("panic route");
    assert_eq!(response.status(), 500);
    assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
    assert_eq!(response.text().expect("body"), INTERNAL_ERROR);
    assert_eq!(orthanc.get("/system").expect("system").status(), 200);
    assert!(orthanc.log().contains("deliberate panic in the selftest route"));
}

#[test]
fn filter_denies_with_403_and_lets_other_requests_through() {
    let orthanc = shared();
    assert_eq!(orthanc.get("/cohort-ffi-selftest-denied").expect("denied").status(), 403);
    assert_eq!(orthanc.get("/cohort-ffi-selftest").expect("allowed").status(), 200);
    // The filter also sees GET arguments, undecoded like the route's.
    assert_eq!(orthanc.get("/cohort-ffi-selftest?deny=yes").expect("denied by argument").status(), 403);
    assert_eq!(orthanc.get("/cohort-ffi-selftest?deny=y%65s").expect("encoded argument").status(), 200);
}

#[test]
fn in_process_calls_reach_orthanc_and_report_missing_resources_as_not_found() {
    let orthanc = shared();
    let report = json_body(orthanc.get("/cohort-ffi-selftest-in-process").expect("in-process"));
    assert_eq!(report["orthanc_version"], "1.10.1");
    assert_eq!(report["configured_name"], "cohort-ffi-selftest");
    assert_eq!(report["system_status"], 200);
    assert_eq!(report["system_name"], "cohort-ffi-selftest");
    assert_eq!(report["missing_instance"], "not found");
    assert_eq!(report["missing_dicom"], "not found");
}

#[test]
fn dicom_file_read_in_process_matches_orthancs_own() {
    let orthanc = shared();
    let created = orthanc
        .http
        .post(orthanc.url("/tools/create-dicom"))
        .json(&json!({"Tags": {"PatientName": "FFI^TEST", "PatientID": "ffi-1"}}))
        .send()
        .expect("create DICOM");
    assert_eq!(created.status(), 200);
    let id = json_body(created)["ID"].as_str().expect("instance ID").to_owned();
    let native = orthanc.get(&format!("/instances/{id}/file")).expect("native file").bytes().expect("bytes");

    let response = orthanc.get(&format!("/cohort-ffi-selftest-dicom/{id}")).expect("plugin file");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()[CONTENT_TYPE], "application/dicom");
    assert_eq!(response.bytes().expect("bytes"), native);

    let missing = orthanc.get("/cohort-ffi-selftest-dicom/0000-missing").expect("missing");
    assert_eq!(missing.status(), 404);
}

#[test]
fn tracing_events_land_in_orthancs_log() {
    let orthanc = shared();
    assert!(orthanc.log().contains("cohort plugin initialised"), "{}", orthanc.log());
}

#[test]
fn orthanc_stops_cleanly_on_sigterm() {
    let mut orthanc = Orthanc::start();
    assert_eq!(orthanc.get("/cohort-ffi-selftest").expect("echo").status(), 200);
    let status = orthanc.stop();
    let log = orthanc.log();
    assert!(status.success(), "Orthanc exited with {status}; its log:\n{log}");
    assert!(!log.contains("Segmentation"), "{log}");
    assert!(log.contains("cohort plugin finalised"), "{log}");
}

#[test]
fn only_the_four_entry_points_are_exported() {
    let output =
        Command::new("nm").args(["-D", "--defined-only"]).arg(plugin_path()).stderr(Stdio::inherit()).output().expect("run nm (binutils)");
    assert!(output.status.success());
    let exported: BTreeSet<String> =
        String::from_utf8_lossy(&output.stdout).lines().filter_map(|line| line.split_whitespace().nth(2).map(str::to_owned)).collect();
    let expected: BTreeSet<String> =
        ["OrthancPluginFinalize", "OrthancPluginGetName", "OrthancPluginGetVersion", "OrthancPluginInitialize"].map(str::to_owned).into();
    assert_eq!(exported, expected);
}
