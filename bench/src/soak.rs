//! The soak (`scripts/bench --only soak [--soak-seconds N] [--soak-clients N]`): many
//! signed-in clients for minutes on a mixed workload against one host at a time, to find
//! what only sustained load shows: 5xx answers, transport errors, memory or file
//! descriptors that keep growing.
//!
//! Each client is a user of its own (a loopback address of its own, so per-IP login
//! throttling sees one person per client), an admin or a user of the registry's 1% group,
//! signed in with a session cookie (sending `X-CSRF-Token` on its imports) or with a
//! personal API token. In a closed loop it lists patients, searches a common and a rare
//! name, fetches raw DICOM and rendered previews of 512×512 instances, exports a
//! patient as a ZIP and imports a small ZIP of new instances; about every two minutes it
//! signs in again, one time in five with a wrong password (a 401 that is expected, not an
//! error). Every 10 s the resident memory (`VmRSS`) and open file descriptors of the
//! Cohort process and of Orthanc are sampled. Any 5xx, transport error or other
//! unexpected status fails the run.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use cohort_e2e::deploy::Sidecar;
use cohort_e2e::dicom::{self, StudySpec, ZipOptions};
use cohort_e2e::{Backend, Client, Deployment, Host};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::{encode, machine, population};

/// How often each client signs in again (on average; each interval is drawn from
/// 0.5× to 1.5× of it), and which of its sign-ins use a wrong password.
const LOGIN_EVERY: Duration = Duration::from_secs(120);
const WRONG_PASSWORD_EVERY: u32 = 5;
/// How often memory and descriptors are sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// A request slower than this is a transport error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Clients per account: each account is shared by this many clients (half with its
/// session cookie, half with its API token).
const CLIENTS_PER_ACCOUNT: usize = 4;
/// The instances clients fetch and export: 512×512 16-bit, like a CT slice.
const IMAGE_PATIENTS: u32 = 10;
const IMAGE_INSTANCES_PER_SERIES: u32 = 10;
/// Instances in each small import.
const IMPORT_INSTANCES: u32 = 3;
/// The registry the lists and searches run on.
pub const REGISTRY: u32 = 100_000;

/// One deployment the soak runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Contender {
    PluginSqlite,
    SidecarSqlite,
    SidecarPostgres,
}

impl Contender {
    pub fn parse(s: &str) -> anyhow::Result<Contender> {
        Ok(match s {
            "plugin" => Contender::PluginSqlite,
            "sidecar" => Contender::SidecarSqlite,
            "sidecar-pg" => Contender::SidecarPostgres,
            other => bail!("--soak-hosts: unknown host {other:?} (plugin, sidecar, sidecar-pg)"),
        })
    }

    fn name(self) -> &'static str {
        match self {
            Contender::PluginSqlite => "Orthanc with the plugin, SQLite",
            Contender::SidecarSqlite => "sidecar beside Orthanc, SQLite",
            Contender::SidecarPostgres => "sidecar beside Orthanc, PostgreSQL",
        }
    }

    fn host(self) -> Host {
        if self == Contender::PluginSqlite {
            Host::Plugin
        } else {
            Host::Sidecar
        }
    }

    fn backend(self) -> Backend {
        if self == Contender::SidecarPostgres {
            Backend::Postgres
        } else {
            Backend::Sqlite
        }
    }
}

pub struct Options {
    pub seconds: u64,
    pub clients: usize,
    pub registry: u32,
    pub hosts: Vec<Contender>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    ListAdmin,
    ListGroup,
    SearchCommon,
    SearchRare,
    Image,
    Preview,
    Export,
    Import,
    Login,
    LoginWrong,
}

impl Op {
    fn label(self) -> &'static str {
        match self {
            Op::ListAdmin => "list patients (admin)",
            Op::ListGroup => "list patients (group user)",
            Op::SearchCommon => "search, common name",
            Op::SearchRare => "search, rare name",
            Op::Image => "raw DICOM (512×512)",
            Op::Preview => "preview PNG (512×512)",
            Op::Export => "patient export (ZIP)",
            Op::Import => "import (ZIP of 3 instances)",
            Op::Login => "sign-in",
            Op::LoginWrong => "sign-in, wrong password",
        }
    }

    /// The answer this operation must get.
    fn expected(self, status: u16) -> bool {
        match self {
            Op::Login => status == 200,
            Op::LoginWrong => status == 401,
            _ => (200..300).contains(&status),
        }
    }
}

/// The mix each client draws from between sign-ins, by weight (`List` is the admin's or
/// the group user's list, by the client's role).
const MIX: &[(Op, u32)] = &[
    (Op::ListAdmin, 20),
    (Op::SearchCommon, 10),
    (Op::SearchRare, 10),
    (Op::Image, 40),
    (Op::Preview, 6),
    (Op::Export, 2),
    (Op::Import, 4),
];

#[derive(Default)]
struct OpStats {
    requests: u64,
    statuses: BTreeMap<u16, u64>,
    transport: u64,
    latencies_ms: Vec<f32>,
    bytes: u64,
    /// The first few unexpected answers, for the report.
    examples: Vec<String>,
}

impl OpStats {
    fn merge(&mut self, other: OpStats) {
        self.requests += other.requests;
        for (s, n) in other.statuses {
            *self.statuses.entry(s).or_default() += n;
        }
        self.transport += other.transport;
        self.latencies_ms.extend(other.latencies_ms);
        self.bytes += other.bytes;
        for e in other.examples {
            if self.examples.len() < 5 {
                self.examples.push(e);
            }
        }
    }
}

/// What every client shares on one host.
struct Shared {
    base: String,
    images: Vec<String>,
    patients: Vec<i64>,
    /// The import template: each file's bytes, and the strings to replace in it.
    template: Vec<Vec<u8>>,
    replace: Vec<String>,
    imports: AtomicU64,
    requests: AtomicU64,
    unexpected: AtomicU64,
}

struct Account {
    email: String,
    password: String,
    admin: bool,
    token: String,
}

struct SoakClient {
    http: reqwest::Client,
    account: usize,
    /// `None`: signed in with a session cookie (and this CSRF token).
    bearer: Option<String>,
    csrf: String,
    logins: u32,
    next_login: Instant,
    /// The client's number.
    index: u32,
}

/// One sample of the processes' memory and descriptors.
#[derive(Clone, Debug)]
struct Sample {
    at_s: f64,
    procs: Vec<(u64, u64)>,
    load1: f64,
}

struct HostResult {
    name: &'static str,
    seconds: f64,
    stats: BTreeMap<Op, OpStats>,
    procs: Vec<&'static str>,
    samples: Vec<Sample>,
    /// Idle, a few seconds after the load stopped.
    after: Sample,
    load_before: String,
    failures: Vec<String>,
}

fn rss_fds(pid: u32) -> (u64, u64) {
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count() as u64).unwrap_or(0);
    (rss, fds)
}

fn load1() -> f64 {
    std::fs::read_to_string("/proc/loadavg").ok().and_then(|s| s.split_whitespace().next()?.parse().ok()).unwrap_or(0.0)
}

fn sample(pids: &[u32], started: Instant) -> Sample {
    Sample { at_s: started.elapsed().as_secs_f64(), procs: pids.iter().map(|p| rss_fds(*p)).collect(), load1: load1() }
}

/// The clients' own loopback addresses: 127.0.0.2, 127.0.0.3, …
fn address(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 0, 0, 2)) + i as u32))
}

fn http(i: usize, cookies: bool) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .local_address(address(i))
        .cookie_store(cookies)
        .user_agent(format!("cohort-soak/{i}"))
        // Below Orthanc's 1 s keep-alive timeout (see the e2e client).
        .pool_idle_timeout(Duration::from_millis(500))
        .timeout(REQUEST_TIMEOUT)
        .build()?)
}

/// Replaces every occurrence of `from` by `to` (same length) in `data`.
fn replace_all(data: &mut [u8], from: &[u8], to: &[u8]) {
    debug_assert_eq!(from.len(), to.len());
    let mut i = 0;
    while i + from.len() <= data.len() {
        if &data[i..i + from.len()] == from {
            data[i..i + from.len()].copy_from_slice(to);
            i += from.len();
        } else {
            i += 1;
        }
    }
}

/// A stored ZIP of the import template with a new PatientID and new UIDs (the last ten
/// digits of each replaced by the import's number and the UID's rank): a new patient,
/// study, series and instances each time.
fn import_zip(shared: &Shared, n: u64) -> Vec<u8> {
    let mut zip = cohort_core::zipstream::ZipStream::new();
    let mut out = Vec::new();
    for (i, file) in shared.template.iter().enumerate() {
        let mut data = file.clone();
        for (k, old) in shared.replace.iter().enumerate() {
            // Each UID keeps its prefix and gets a tail of its own per import.
            let new = if old.starts_with("SOAKIMP") {
                format!("SOAKIMP{n:09}")
            } else {
                format!("{}{:010}", &old[..old.len() - 10], n * 16 + k as u64)
            };
            replace_all(&mut data, old.as_bytes(), new.as_bytes());
        }
        out.extend_from_slice(&zip.entry_header(&format!("IM{i:04}.dcm"), &data));
        out.extend_from_slice(&data);
    }
    out.extend_from_slice(&zip.finish());
    out
}

/// Sends the client's next request (a sign-in when one is due, else one drawn from the
/// mix), reads the whole answer and records it.
async fn one(c: &mut SoakClient, accounts: &[Account], shared: &Shared, rng: &mut StdRng, stats: &mut BTreeMap<Op, OpStats>) {
    let account = &accounts[c.account];
    let now = Instant::now();
    let op = if now >= c.next_login {
        c.logins += 1;
        c.next_login = now + LOGIN_EVERY.mul_f64(rng.gen_range(0.5..1.5));
        // Offset by the client's number, so wrong passwords come from the first round on.
        if (c.logins + c.index) % WRONG_PASSWORD_EVERY == 0 {
            Op::LoginWrong
        } else {
            Op::Login
        }
    } else {
        let total: u32 = MIX.iter().map(|(_, w)| w).sum();
        let mut pick = rng.gen_range(0..total);
        let mut op = MIX[0].0;
        for (o, w) in MIX {
            if pick < *w {
                op = *o;
                break;
            }
            pick -= w;
        }
        if op == Op::ListAdmin && !account.admin {
            Op::ListGroup
        } else {
            op
        }
    };
    let base = &shared.base;
    let mut req = match op {
        Op::ListAdmin | Op::ListGroup => c.http.get(format!("{base}/api/patients?page_size=20")),
        Op::SearchCommon => c.http.get(format!("{base}/api/patients?q={}&page_size=20", population::COMMON_NAME)),
        Op::SearchRare => c.http.get(format!("{base}/api/patients?q={}&page_size=20", encode(population::RARE_NAME))),
        Op::Image => c.http.get(format!("{base}/api/patients/images/{}", shared.images[rng.gen_range(0..shared.images.len())])),
        Op::Preview => c.http.get(format!("{base}/api/patients/images/{}/preview", shared.images[rng.gen_range(0..shared.images.len())])),
        Op::Export => c.http.get(format!("{base}/api/patients/{}/export", shared.patients[rng.gen_range(0..shared.patients.len())])),
        Op::Import => {
            let n = shared.imports.fetch_add(1, Ordering::Relaxed);
            c.http.post(format!("{base}/api/patients/import")).header("content-type", "application/zip").body(import_zip(shared, n))
        }
        Op::Login | Op::LoginWrong => {
            let password = if op == Op::Login { account.password.clone() } else { format!("{}-wrong", account.password) };
            c.http.post(format!("{base}/api/auth/login")).json(&json!({"email": account.email, "password": password}))
        }
    };
    if !matches!(op, Op::Login | Op::LoginWrong) {
        req = match &c.bearer {
            Some(token) => req.bearer_auth(token),
            None if op == Op::Import => req.header("x-csrf-token", &c.csrf),
            None => req,
        };
    }
    let keep_body = matches!(op, Op::Login | Op::Import);
    let started = Instant::now();
    let result: Result<(u16, u64, Vec<u8>), reqwest::Error> = async {
        let mut resp = req.send().await?;
        let status = resp.status().as_u16();
        let (mut bytes, mut body) = (0u64, Vec::new());
        while let Some(chunk) = resp.chunk().await? {
            bytes += chunk.len() as u64;
            if keep_body || !(200..300).contains(&status) {
                body.extend_from_slice(&chunk);
            }
        }
        Ok((status, bytes, body))
    }
    .await;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    let s = stats.entry(op).or_default();
    s.requests += 1;
    shared.requests.fetch_add(1, Ordering::Relaxed);
    s.latencies_ms.push(ms as f32);
    let mut problem = None;
    match result {
        Err(e) => {
            s.transport += 1;
            problem = Some(format!("transport error after {ms:.0} ms: {e:?}"));
        }
        Ok((status, bytes, body)) => {
            *s.statuses.entry(status).or_default() += 1;
            s.bytes += bytes;
            if !op.expected(status) {
                problem = Some(format!("{status} after {ms:.0} ms: {}", String::from_utf8_lossy(&body[..body.len().min(300)])));
            } else if op == Op::Login && c.bearer.is_none() {
                // The session cookie is now the new one; so is its CSRF token.
                let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                match v["csrf_token"].as_str() {
                    Some(t) => c.csrf = t.to_string(),
                    None => problem = Some("sign-in without csrf_token".into()),
                }
            } else if op == Op::Import {
                let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                if v["instances"]["stored"] != json!(IMPORT_INSTANCES) {
                    problem = Some(format!("import stored {} instead of {IMPORT_INSTANCES}", v["instances"]));
                }
            }
        }
    }
    if let Some(p) = problem {
        shared.unexpected.fetch_add(1, Ordering::Relaxed);
        if s.examples.len() < 5 {
            s.examples.push(p);
        }
    }
}

pub async fn run(options: &Options) -> anyhow::Result<(String, bool)> {
    // The instances every host serves, and the template of the small imports.
    eprintln!("==> soak: generating the data");
    let images = dicom::study(
        &StudySpec::new("SOAK-IMG")
            .name("Martin^Soak")
            .patients(IMAGE_PATIENTS)
            .studies(1)
            .series(2)
            .instances(IMAGE_INSTANCES_PER_SERIES)
            .size(512, 512)
            .modalities(&["CT", "MR"])
            .seed(11),
    );
    let images_zip = dicom::zip(&images.paths(), ZipOptions { store: true, ..ZipOptions::default() });
    let images_bytes = std::fs::read(&images_zip.path)?;
    let image_count = images.files.len();
    let template = dicom::study(
        &StudySpec::new("SOAKIMP000000000").name("Soak^Import").studies(1).series(1).instances(IMPORT_INSTANCES).size(128, 128).seed(12),
    );
    let mut replace = vec!["SOAKIMP000000000".to_string()];
    for f in &template.files {
        for uid in [&f.study_instance_uid, &f.series_instance_uid, &f.sop_instance_uid].into_iter().flatten() {
            let last = uid.rsplit('.').next().unwrap_or_default();
            if last.len() <= 10 {
                bail!("template UID {uid}: its last component is too short to number imports in");
            }
            if !replace.contains(uid) {
                replace.push(uid.clone());
            }
            if replace.len() > 16 {
                bail!("the import template has more than 16 UIDs");
            }
        }
    }
    let template_bytes = template.files.iter().map(|f| std::fs::read(&f.path)).collect::<Result<Vec<_>, _>>()?;

    let mut results = Vec::new();
    for contender in &options.hosts {
        let r = soak_host(*contender, options, &images_bytes, image_count, &template_bytes, &replace).await?;
        results.push(r);
    }
    Ok(report(options, &results))
}

async fn soak_host(
    contender: Contender,
    options: &Options,
    images_zip: &[u8],
    image_count: usize,
    template: &[Vec<u8>],
    replace: &[String],
) -> anyhow::Result<HostResult> {
    let name = contender.name();
    eprintln!("==> soak on {name}: starting, building a {}-patient registry", options.registry);
    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split_whitespace().take(3).collect::<Vec<_>>().join(" ");
    // The bench's cost (bcrypt 12, the default); exports as large as the main bench's.
    let mut settings: BTreeMap<String, Value> =
        [("BcryptCost".to_string(), json!(12)), ("MaxExportBytes".to_string(), json!(u64::from(u32::MAX)))].into_iter().collect();
    if contender.host() == Host::Plugin {
        // Orthanc serves each open connection on one of its HTTP threads: the plugin's
        // clients each keep one, so it needs more threads than clients (README, "Many
        // concurrent clients"). The sidecar's Orthanc keeps its default 50: the sidecar
        // holds at most OrthancConnections (32) connections to it.
        settings.insert("Orthanc:HttpThreadsCount".to_string(), json!(plugin_http_threads(options)));
    }
    let d = Deployment::start_with(contender.host(), contender.backend(), settings).await;
    let built = population::build(&d.db.url, options.registry).await?;
    let group = built.groups.first().context("no group")?.0;
    let admin = d.admin().await;

    // Accounts: a quarter admins, the rest users of the 1% group.
    let n_accounts = options.clients.div_ceil(CLIENTS_PER_ACCOUNT).max(2);
    eprintln!("    {n_accounts} accounts, their API tokens, {} session sign-ins", options.clients / 2);
    let mut accounts = Vec::new();
    for k in 0..n_accounts {
        let is_admin = k % 4 == 0;
        let email = format!("soak{k}@bench.test");
        let password = format!("soak-password-{k:04}");
        let mut body = json!({"email": email, "password": password, "role": if is_admin { "admin" } else { "user" }});
        if !is_admin {
            body["group_id"] = json!(group);
        }
        admin.post("/api/users", &body).await.expect_status(201);
        let c = Client::new(&d.url);
        c.login(&email, &password).await.expect_status(200);
        let created = c
            .post("/api/users/me/tokens", &json!({"name": "soak", "scope": "write", "expires_in_days": 1, "current_password": password}))
            .await
            .expect_status(201);
        let token = created["token"].as_str().context("no token")?.to_string();
        accounts.push(Account { email, password, admin: is_admin, token });
    }

    // The images, imported by a user of the group (so that both roles see them).
    let uploader = Client::new(&d.url).with_bearer(&accounts[1].token);
    uploader
        .req(reqwest::Method::POST, "/api/patients/import")
        .body("application/zip", images_zip.to_vec())
        .send()
        .await
        .expect_status(200);
    let found = admin.get("/api/patients?q=SOAK-IMG&page_size=200").await.expect_status(200);
    let patients: Vec<i64> = found["items"].as_array().context("items")?.iter().filter_map(|p| p["id"].as_i64()).collect();
    let mut image_ids = Vec::new();
    for p in &patients {
        for i in admin.get(&format!("/api/patients/{p}/instances")).await.expect_status(200).as_array().context("instances")? {
            image_ids.push(i["id"].as_str().unwrap_or_default().to_string());
        }
    }
    if patients.len() != IMAGE_PATIENTS as usize || image_ids.len() != image_count {
        bail!("{name}: {} patients and {} instances registered from the image ZIP", patients.len(), image_ids.len());
    }

    // The clients; those with a session sign in now, one after the other.
    let shared = Arc::new(Shared {
        base: d.url.clone(),
        images: image_ids,
        patients,
        template: template.to_vec(),
        replace: replace.to_vec(),
        imports: AtomicU64::new(0),
        requests: AtomicU64::new(0),
        unexpected: AtomicU64::new(0),
    });
    let accounts = Arc::new(accounts);
    let mut clients = Vec::new();
    for i in 0..options.clients {
        let account = i % n_accounts;
        let with_token = (i / n_accounts) % 2 == 1;
        let http = http(i, !with_token)?;
        let mut csrf = String::new();
        if !with_token {
            let a = &accounts[account];
            let resp = http
                .post(format!("{}/api/auth/login", d.url))
                .json(&json!({"email": a.email, "password": a.password}))
                .send()
                .await
                .context("sign-in")?;
            if resp.status() != 200 {
                bail!("{name}: sign-in of client {i} answered {}", resp.status());
            }
            let v: Value = resp.json().await?;
            csrf = v["csrf_token"].as_str().context("no csrf_token")?.to_string();
        }
        clients.push(SoakClient {
            http,
            account,
            bearer: with_token.then(|| accounts[account].token.clone()),
            csrf,
            logins: 0,
            next_login: Instant::now(),
            index: i as u32,
        });
    }

    let (procs, pids): (Vec<&'static str>, Vec<u32>) = match &d.sidecar {
        Some(s) => (vec!["cohort serve", "Orthanc"], vec![Sidecar::pid(s), d.orthanc.pid()]),
        None => (vec!["Orthanc + plugin"], vec![d.orthanc.pid()]),
    };
    eprintln!("==> soak on {name}: {} clients for {} s", options.clients, options.seconds);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(options.seconds);
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (pids, shared, stop, procs) = (pids.clone(), shared.clone(), stop.clone(), procs.clone());
        tokio::spawn(async move {
            let mut samples = vec![sample(&pids, started)];
            let mut next = started + SAMPLE_EVERY;
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep_until(next.into()).await;
                next += SAMPLE_EVERY;
                let s = sample(&pids, started);
                let mut line = format!(
                    "    t={:>4.0} s  requests {:>8}  unexpected {:>4}  load {:.1}",
                    s.at_s,
                    shared.requests.load(Ordering::Relaxed),
                    shared.unexpected.load(Ordering::Relaxed),
                    s.load1
                );
                for (p, (rss, fds)) in procs.iter().zip(&s.procs) {
                    let _ = write!(line, "  {p}: {:.0} MB, {fds} fds", *rss as f64 / 1024.0);
                }
                eprintln!("{line}");
                samples.push(s);
            }
            samples
        })
    };
    let mut tasks = Vec::new();
    for (i, mut c) in clients.into_iter().enumerate() {
        let (accounts, shared) = (accounts.clone(), shared.clone());
        // The first sign-ins spread over the first interval.
        c.next_login = started + LOGIN_EVERY.mul_f64(i as f64 / options.clients as f64);
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(i as u64);
            let mut stats = BTreeMap::new();
            while Instant::now() < deadline {
                one(&mut c, &accounts, &shared, &mut rng, &mut stats).await;
            }
            stats
        }));
    }
    let mut stats: BTreeMap<Op, OpStats> = BTreeMap::new();
    for t in tasks {
        for (op, s) in t.await? {
            stats.entry(op).or_default().merge(s);
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let last = sample(&pids, started);
    stop.store(true, Ordering::Relaxed);
    let mut samples = sampler.await?;
    samples.push(last);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = sample(&pids, started);

    let mut failures = Vec::new();
    for (op, s) in &stats {
        let fives: u64 = s.statuses.iter().filter(|(st, _)| **st >= 500).map(|(_, n)| n).sum();
        let other: u64 = s.statuses.iter().filter(|(st, _)| **st < 500 && !op.expected(**st)).map(|(_, n)| n).sum();
        if fives + other + s.transport > 0 {
            failures.push(format!(
                "{}: {fives} 5xx, {other} other unexpected, {} transport errors; e.g. {}",
                op.label(),
                s.transport,
                s.examples.join(" | ")
            ));
        }
    }
    let imports = shared.imports.load(Ordering::Relaxed);
    eprintln!("==> soak on {name}: done, {imports} imports, {} failures", failures.len());
    drop(d);
    Ok(HostResult { name, seconds, stats, procs, samples, after, load_before, failures })
}

fn percentile(sorted: &[f32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    f64::from(sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)])
}

fn mb(kib: u64) -> String {
    format!("{:.0}", kib as f64 / 1024.0)
}

/// Orthanc's HTTP threads in the plugin's deployment: one per client, and some to spare.
fn plugin_http_threads(options: &Options) -> usize {
    options.clients + 16
}

fn report(options: &Options, results: &[HostResult]) -> (String, bool) {
    let mut md = String::new();
    let minutes = options.seconds as f64 / 60.0;
    let _ = writeln!(md, "## Soak: {} clients for {}\n", options.clients, format_minutes(minutes));
    let _ = writeln!(md, "{}.\n", machine());
    let _ = writeln!(
        md,
        "`scripts/bench --only soak --soak-seconds {} --soak-clients {}`. One host at a time on a registry of {} patients \
         (`population::build`) plus {IMAGE_PATIENTS} patients of {} instances of 512×512 16-bit CT/MR. Each client has its own \
         loopback address and shares its account with {} others (a quarter of the accounts admins, the rest users of the 1% group); \
         half the clients use the account's session cookie (and `X-CSRF-Token` on imports), half its API token. Closed loop, no \
         think time, drawing by weight: list patients 20 (the admin's or the group user's), search a common name (`{}`) 10, a rare \
         one 10, raw DICOM 40, preview PNG 6, patient export 2, import of a new 3-instance ZIP (128×128) 4; about every {} s a \
         client signs in again (bcrypt cost 12), one time in {WRONG_PASSWORD_EVERY} with a wrong password (401 expected). \
         Memory is `VmRSS`, descriptors the entries of `/proc/PID/fd`, sampled every {} s; \"1 min\" is the sample after the first \
         minute, \"after\" the idle process 5 s after the load. Orthanc with the plugin runs {} HTTP threads (`HttpThreadsCount`: \
         one per open connection, so more than the clients); the sidecar's Orthanc its default 50, the sidecar keeping at most \
         `OrthancConnections` (32) connections to it.\n",
        options.seconds,
        options.clients,
        options.registry,
        2 * IMAGE_INSTANCES_PER_SERIES,
        CLIENTS_PER_ACCOUNT - 1,
        population::COMMON_NAME,
        LOGIN_EVERY.as_secs(),
        SAMPLE_EVERY.as_secs(),
        plugin_http_threads(options)
    );
    let mut failed = false;
    for r in results {
        let total: u64 = r.stats.values().map(|s| s.requests).sum();
        let loads: Vec<f64> = r.samples.iter().skip(1).map(|s| s.load1).collect();
        let max_load = loads.iter().copied().fold(0.0, f64::max);
        let _ = writeln!(
            md,
            "### {}\n\n{total} requests in {:.0} s ({:.0}/s). Load average before the host started: {}; 1-minute load during the run: {:.1} to {:.1} (the clients and the server share the 2 cores).\n",
            r.name,
            r.seconds,
            total as f64 / r.seconds,
            r.load_before,
            loads.iter().copied().fold(f64::INFINITY, f64::min),
            max_load
        );
        let _ = writeln!(md, "| operation | requests | per s | p50 ms | p99 ms | max ms | MB received | answers other than 2xx | transport errors |\n|---|---|---|---|---|---|---|---|---|");
        for (op, s) in &r.stats {
            let mut lat = s.latencies_ms.clone();
            lat.sort_by(f32::total_cmp);
            let non2xx: Vec<String> =
                s.statuses.iter().filter(|(st, _)| !(200..300).contains(*st)).map(|(st, n)| format!("{n} × {st}")).collect();
            let _ = writeln!(
                md,
                "| {} | {} | {:.1} | {:.1} | {:.1} | {:.0} | {:.0} | {} | {} |",
                op.label(),
                s.requests,
                s.requests as f64 / r.seconds,
                percentile(&lat, 0.5),
                percentile(&lat, 0.99),
                lat.last().copied().unwrap_or(0.0),
                s.bytes as f64 / 1e6,
                if non2xx.is_empty() { "–".to_string() } else { non2xx.join(", ") },
                s.transport
            );
        }
        md.push('\n');
        let one_min = r.samples.iter().find(|s| s.at_s >= 59.0).unwrap_or(&r.samples[0]);
        let end = r.samples.last().unwrap_or(&r.samples[0]);
        let _ = writeln!(md, "| process | RSS MB: start | 1 min | end | max | after | fds: start | 1 min | end | max | after |\n|---|---|---|---|---|---|---|---|---|---|---|");
        for (k, p) in r.procs.iter().enumerate() {
            let max_rss = r.samples.iter().map(|s| s.procs[k].0).max().unwrap_or(0);
            let max_fds = r.samples.iter().map(|s| s.procs[k].1).max().unwrap_or(0);
            let _ = writeln!(
                md,
                "| {p} | {} | {} | {} | {} | {} | {} | {} | {} | {max_fds} | {} |",
                mb(r.samples[0].procs[k].0),
                mb(one_min.procs[k].0),
                mb(end.procs[k].0),
                mb(max_rss),
                mb(r.after.procs[k].0),
                r.samples[0].procs[k].1,
                one_min.procs[k].1,
                end.procs[k].1,
                r.after.procs[k].1
            );
        }
        md.push('\n');
        for (k, p) in r.procs.iter().enumerate() {
            let per_minute: Vec<String> = r
                .samples
                .iter()
                .filter(|s| (s.at_s / 60.0).fract() < SAMPLE_EVERY.as_secs_f64() / 60.0)
                .map(|s| mb(s.procs[k].0))
                .collect();
            let _ = writeln!(md, "RSS of {p} each minute (MB): {}.  ", per_minute.join(", "));
        }
        md.push('\n');
        if r.failures.is_empty() {
            let _ = writeln!(md, "PASSED: no 5xx, no transport error, no unexpected status.\n");
        } else {
            failed = true;
            let _ = writeln!(md, "FAILED:\n");
            for f in &r.failures {
                let _ = writeln!(md, "- {f}");
            }
            md.push('\n');
        }
    }
    (md, failed)
}

/// "1 minute", "10 minutes", "1.5 minutes".
fn format_minutes(m: f64) -> String {
    if (m - 1.0).abs() < 0.01 {
        "1 minute".into()
    } else if (m - m.round()).abs() < 0.01 {
        format!("{m:.0} minutes")
    } else {
        format!("{m:.1} minutes")
    }
}
