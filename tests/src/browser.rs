//! A small WebDriver client: Debian's `chromedriver` driving headless `chromium`, over
//! reqwest. Enough to drive the web console as a person would: open pages, type, click,
//! upload files, read text, run a script, take screenshots.
//!
//! Each [`Browser`] owns its chromedriver, started in its own process group so that the
//! browser processes it spawns die with it when the handle drops.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// The key of an element reference in WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// How long `wait_*` helpers wait (debug builds on a busy 2-core machine are slow).
pub const WAIT: Duration = Duration::from_secs(30);

/// Whether Chromium and its driver are installed (scripts/lib.sh installs them).
pub fn available() -> bool {
    Path::new(CHROMEDRIVER).exists() && Path::new(CHROMIUM).exists()
}

/// A headless Chromium session.
#[derive(Debug)]
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::Client,
    /// Where downloads land.
    pub downloads: tempfile::TempDir,
    _profile: tempfile::TempDir,
}

/// An element found on the page.
#[derive(Debug, Clone)]
pub struct Element(String);

impl Browser {
    /// Starts chromedriver and a headless Chromium with an English UI.
    pub async fn start() -> Browser {
        Self::start_with_lang("en-US").await
    }

    pub async fn start_with_lang(lang: &str) -> Browser {
        assert!(available(), "{CHROMIUM} and {CHROMEDRIVER} are needed: install Debian's chromium and chromium-driver");
        let port = crate::free_port();
        let mut cmd = Command::new(CHROMEDRIVER);
        cmd.arg(format!("--port={port}")).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let driver = cmd.spawn().expect("start chromedriver");
        let http = reqwest::Client::builder().timeout(Duration::from_secs(120)).build().expect("HTTP client");
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = async { http.get(format!("{base}/status")).send().await.ok()?.json::<Value>().await.ok() }.await;
            if ready.is_some_and(|s| s["value"]["ready"] == true) {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not start within 30 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let downloads = tempfile::tempdir().expect("download dir");
        let profile = tempfile::tempdir().expect("profile dir");
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1280,900", format!("--lang={lang}"), format!("--user-data-dir={}", profile.path().display()),
                         "--no-first-run", "--disable-extensions", "--disable-background-networking",
                         "--renderer-process-limit=2", "--disable-features=Translate,MediaRouter,OptimizationHints"],
                "prefs": {
                    "download.default_directory": downloads.path(),
                    "download.prompt_for_download": false,
                    "intl.accept_languages": lang,
                }
            }
        }}});
        let answer: Value = http.post(format!("{base}/session")).json(&caps).send().await.expect("new session").json().await.expect("JSON");
        let session = answer["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no WebDriver session: {answer}")).to_string();
        Browser { driver, base, session, http, downloads, _profile: profile }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{}", self.base, self.session, path);
        let mut req = self.http.request(method.clone(), &url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "WebDriver {method} {path} answered {status}: {v}");
        v["value"].clone()
    }

    async fn try_call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value, Value> {
        let url = format!("{}/session/{}{}", self.base, self.session, path);
        let mut req = self.http.request(method, &url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.map_err(|e| Value::String(e.to_string()))?;
        let ok = resp.status().is_success();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        if ok {
            Ok(v["value"].clone())
        } else {
            Err(v["value"].clone())
        }
    }

    pub async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({ "url": url }))).await;
    }

    pub async fn url(&self) -> String {
        self.call(reqwest::Method::GET, "/url", None).await.as_str().unwrap_or_default().to_string()
    }

    /// Runs `script` (a function body; `arguments` holds `args`) and returns its value.
    pub async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.call(reqwest::Method::POST, "/execute/sync", Some(json!({ "script": script, "args": args }))).await
    }

    /// Runs an async script: it must call `arguments[arguments.length - 1](result)`.
    pub async fn js_async(&self, script: &str, args: Vec<Value>) -> Value {
        self.call(reqwest::Method::POST, "/execute/async", Some(json!({ "script": script, "args": args }))).await
    }

    pub async fn find(&self, css: &str) -> Option<Element> {
        let v = self.try_call(reqwest::Method::POST, "/element", Some(json!({"using": "css selector", "value": css}))).await.ok()?;
        v[ELEMENT].as_str().map(|id| Element(id.to_string()))
    }

    pub async fn find_all(&self, css: &str) -> Vec<Element> {
        let v = self.call(reqwest::Method::POST, "/elements", Some(json!({"using": "css selector", "value": css}))).await;
        v.as_array().map(|a| a.iter().filter_map(|e| e[ELEMENT].as_str()).map(|id| Element(id.to_string())).collect()).unwrap_or_default()
    }

    /// Waits until an element matching `css` is on the page and visible.
    #[track_caller]
    pub fn wait_for<'a>(&'a self, css: &'a str) -> impl std::future::Future<Output = Element> + 'a {
        let caller = std::panic::Location::caller();
        async move {
            let deadline = Instant::now() + WAIT;
            loop {
                if let Some(e) = self.find(css).await {
                    if self.try_call(reqwest::Method::GET, &format!("/element/{}/displayed", e.0), None).await == Ok(Value::Bool(true)) {
                        return e;
                    }
                }
                if Instant::now() > deadline {
                    let text = self.page_text().await;
                    panic!("{caller}: no visible `{css}` after {WAIT:?} at {}; page text:\n{text}", self.url().await);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// Waits until the text of `css` contains `needle`; returns the text.
    #[track_caller]
    pub fn wait_text<'a>(&'a self, css: &'a str, needle: &'a str) -> impl std::future::Future<Output = String> + 'a {
        let caller = std::panic::Location::caller();
        async move {
            let deadline = Instant::now() + WAIT;
            loop {
                if let Some(e) = self.find(css).await {
                    let text = self.text(&e).await;
                    if text.contains(needle) {
                        return text;
                    }
                }
                if Instant::now() > deadline {
                    let text = self.page_text().await;
                    panic!("{caller}: `{css}` never contained {needle:?} at {}; page text:\n{text}", self.url().await);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// Waits until `script` (an expression) is truthy.
    #[track_caller]
    pub fn wait_js<'a>(&'a self, what: &'a str, expression: &'a str) -> impl std::future::Future<Output = Value> + 'a {
        let caller = std::panic::Location::caller();
        async move {
            let deadline = Instant::now() + WAIT;
            loop {
                let v = self.js(&format!("return ({expression});"), vec![]).await;
                if !(v.is_null() || v == Value::Bool(false) || v == json!(0) || v == json!("")) {
                    return v;
                }
                if Instant::now() > deadline {
                    panic!("{caller}: {what} did not happen within {WAIT:?}; page text:\n{}", self.page_text().await);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// The visible text of the whole page.
    pub async fn page_text(&self) -> String {
        self.js("return document.body ? document.body.innerText : '';", vec![]).await.as_str().unwrap_or_default().to_string()
    }

    pub async fn text(&self, e: &Element) -> String {
        self.try_call(reqwest::Method::GET, &format!("/element/{}/text", e.0), None)
            .await
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    }

    pub async fn click(&self, e: &Element) {
        self.call(reqwest::Method::POST, &format!("/element/{}/click", e.0), Some(json!({}))).await;
    }

    /// Clicks the first visible element matching `css`, waiting for it.
    pub async fn click_on(&self, css: &str) {
        let e = self.wait_for(css).await;
        self.click(&e).await;
    }

    pub async fn clear(&self, e: &Element) {
        self.call(reqwest::Method::POST, &format!("/element/{}/clear", e.0), Some(json!({}))).await;
    }

    /// Types into an element (a file input takes a local path).
    pub async fn type_into(&self, e: &Element, text: &str) {
        self.call(reqwest::Method::POST, &format!("/element/{}/value", e.0), Some(json!({ "text": text }))).await;
    }

    /// Clears the field matching `css`, then types `text`.
    pub async fn fill(&self, css: &str, text: &str) {
        let e = self.wait_for(css).await;
        self.clear(&e).await;
        self.type_into(&e, text).await;
    }

    /// Hands a local file to an `<input type=file>` (which may be visually hidden).
    pub async fn upload(&self, css: &str, path: &Path) {
        let e = self.find(css).await.unwrap_or_else(|| panic!("no file input `{css}`"));
        self.type_into(&e, &path.display().to_string()).await;
    }

    /// Selects the `<option>` of value `value` in the `<select>` matching `css`.
    pub async fn choose(&self, css: &str, value: &str) {
        self.wait_for(css).await;
        let option = format!("{css} option[value=\"{value}\"]");
        self.click_on(&option).await;
    }

    pub async fn screenshot(&self, path: &Path) {
        let b64 = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD.decode(b64.as_str().unwrap_or_default()).expect("base64 PNG");
        std::fs::write(path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    pub async fn set_size(&self, width: u32, height: u32) {
        self.call(reqwest::Method::POST, "/window/rect", Some(json!({"width": width, "height": height}))).await;
    }

    /// Deletes a cookie of the current page (httpOnly ones too), as if it had expired.
    pub async fn delete_cookie(&self, name: &str) {
        self.call(reqwest::Method::DELETE, &format!("/cookie/{name}"), None).await;
    }

    /// Cookies this browser holds for the current page.
    pub async fn cookies(&self) -> Vec<Value> {
        self.call(reqwest::Method::GET, "/cookie", None).await.as_array().cloned().unwrap_or_default()
    }

    /// Waits for a finished download (no `.crdownload` left) and returns its path.
    pub async fn wait_download(&self, suffix: &str) -> PathBuf {
        let deadline = Instant::now() + WAIT;
        loop {
            let files: Vec<PathBuf> =
                std::fs::read_dir(self.downloads.path()).map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect()).unwrap_or_default();
            if let Some(f) = files.iter().find(|f| f.to_string_lossy().ends_with(suffix)) {
                return f.clone();
            }
            assert!(Instant::now() < deadline, "no download ending in {suffix} within {WAIT:?}; found {files:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ends the session (chromedriver stops its Chromium), then the driver's own process
        // group (Chromium included, should the session not end), then the driver.
        if let Some(addr) = self.base.strip_prefix("http://") {
            if let Ok(mut s) = std::net::TcpStream::connect(addr) {
                use std::io::{Read, Write};
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let request =
                    format!("DELETE /session/{} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", self.session);
                if s.write_all(request.as_bytes()).is_ok() {
                    let mut sink = Vec::new();
                    let _ = s.read_to_end(&mut sink);
                }
            }
        }
        // `--` first: procps-ng 4.0.2's `kill -KILL -12345` reads `-12345` as options and
        // calls kill(-1, SIGKILL), which kills every process of the machine.
        let _ = Command::new("kill").args(["-s", "KILL", "--"]).arg(format!("-{}", self.driver.id())).status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
