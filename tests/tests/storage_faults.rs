//! Storage faults on the real processes (issue 12, scenarios 2 and 4).
//!
//! - PostgreSQL restarted, then stopped for [`OUTAGE`], under a load of logins, lists,
//!   patient creations and updates on both hosts at once (one cluster of the test's own,
//!   never the machine's shared server): every answer is a success or a 503
//!   `database_unavailable` with a JSON body, none slower than [`MAX_LATENCY`];
//!   `/api/health` says the database is down, then up; `/api/health/live` stays 200; the
//!   clients' sessions work afterwards without restarting anything; and in the database
//!   every patient has its audit row and every audit row its patient, each patient's
//!   last audited change being its state.
//! - A full disk, on the upload spool (`SpoolDir`) and on the SQLite volume, for each
//!   host: a tmpfs mounted in the Cohort process's own mount namespace, filled by the
//!   test: 507 `insufficient_storage`, the spool's space given back, nothing registered,
//!   reads still served; then space is freed and the same requests work.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cohort_e2e::deploy::PLUGIN_LIBRARY;
use cohort_e2e::dicom::{self, StudySpec, ZipOptions};
use cohort_e2e::faults::{PgCluster, PrivateTmpfs};
use cohort_e2e::{log_skip, postgres_skipped, Backend, Client, Deployment, Host, Resp, TestDatabase, ADMIN_EMAIL, ADMIN_PASSWORD};
use reqwest::Method;
use serde_json::{json, Value};

/// How long PostgreSQL stays stopped (issue 12: "a 30-second outage").
const OUTAGE: Duration = Duration::from_secs(30);
/// No answer may take longer, fault or not: a behaviour bound (no hang), not a benchmark.
const MAX_LATENCY: Duration = Duration::from_secs(5);
/// Concurrent clients per host.
const WORKERS: usize = 3;
/// How long a deployment may take to report a healthy database again.
const RECOVERY: Duration = Duration::from_secs(30);

/// One answer seen by the load.
#[derive(Debug)]
struct Seen {
    host: Host,
    what: &'static str,
    status: u16,
    code: Option<String>,
    started: Instant,
    took: Duration,
}

impl Seen {
    fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    fn unavailable(&self) -> bool {
        self.status == 503 && self.code.as_deref() == Some("database_unavailable")
    }
}

/// What one worker's client did that must be found in the database.
#[derive(Debug, Default)]
struct Acknowledged {
    /// Patient ids answered 201.
    created: BTreeSet<i64>,
    /// (patient id, first name) answered 200 to an update.
    updated: Vec<(i64, String)>,
}

/// Sends one request, timing it; a request that does not finish is a failure of its own.
async fn timed(host: Host, what: &'static str, seen: &Mutex<Vec<Seen>>, request: impl std::future::Future<Output = Resp>) -> Resp {
    let started = Instant::now();
    let resp = tokio::time::timeout(Duration::from_secs(60), request)
        .await
        .unwrap_or_else(|_| panic!("{host:?} {what}: no answer within 60 s (a hang)"));
    let code = serde_json::from_slice::<Value>(&resp.body).ok().and_then(|v| v["error"]["code"].as_str().map(str::to_string));
    if !(200..300).contains(&resp.status.as_u16()) {
        // Every refusal carries the JSON error shape.
        assert!(code.is_some(), "{host:?} {what}: {} without a JSON error body: {:?}", resp.status, String::from_utf8_lossy(&resp.body));
    }
    seen.lock().expect("lock").push(Seen { host, what, status: resp.status.as_u16(), code, started, took: started.elapsed() });
    resp
}

/// One client of `url`, logged in before the faults, working until `stop`: lists,
/// searches, creations, updates, detail reads and a fresh login now and then.
async fn worker(host: Host, url: String, n: usize, stop: Arc<AtomicBool>, seen: Arc<Mutex<Vec<Seen>>>) -> Acknowledged {
    let client = Client::new(&url);
    client.login(ADMIN_EMAIL, ADMIN_PASSWORD).await.expect_status(200);
    let mut done = Acknowledged::default();
    let mut mine: Vec<i64> = Vec::new();
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        match i % 6 {
            0 => {
                let other = Client::new(&url);
                timed(host, "login", &seen, other.login(ADMIN_EMAIL, ADMIN_PASSWORD)).await;
            }
            1 | 4 => {
                let body = json!({"external_id": format!("{host:?}-{n}-{i}"), "first_name": format!("c{i}"), "last_name": "Outage"});
                let resp = timed(host, "create", &seen, client.post("/api/patients", &body)).await;
                if resp.status == 201 {
                    let id = resp.json()["id"].as_i64().expect("id");
                    done.created.insert(id);
                    mine.push(id);
                }
            }
            2 if !mine.is_empty() => {
                let id = mine[(i as usize / 6) % mine.len()];
                let name = format!("u{n}-{i}");
                let resp = timed(host, "update", &seen, client.put(&format!("/api/patients/{id}"), &json!({"first_name": name}))).await;
                if resp.status == 200 {
                    done.updated.push((id, name));
                }
            }
            3 if !mine.is_empty() => {
                let id = mine[mine.len() - 1];
                timed(host, "detail", &seen, client.get(&format!("/api/patients/{id}"))).await;
            }
            5 => {
                timed(host, "search", &seen, client.get("/api/patients?q=outage&page_size=10")).await;
            }
            _ => {
                timed(host, "list", &seen, client.get("/api/patients?page_size=20")).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The same session works once the database is back, without logging in again.
    client.get("/api/patients?page_size=5").await.expect_status(200);
    let body = json!({"external_id": format!("{host:?}-{n}-after"), "first_name": "c-after"});
    let id = client.post("/api/patients", &body).await.expect_status(201)["id"].as_i64().expect("id");
    done.created.insert(id);
    done
}

/// `GET /api/health` of each deployment: (status, the `database` field).
async fn health(deployments: &[&Deployment]) -> Vec<(u16, String)> {
    let mut out = Vec::new();
    for d in deployments {
        let started = Instant::now();
        let resp = d.client().get("/api/health").await;
        assert!(started.elapsed() < MAX_LATENCY, "{:?}: /api/health took {:?}", d.host, started.elapsed());
        let live = d.client().get("/api/health/live").await;
        assert_eq!(live.status, 200, "{:?}: /api/health/live must not depend on the database", d.host);
        out.push((resp.status.as_u16(), resp.json()["database"].as_str().unwrap_or_default().to_string()));
    }
    out
}

/// Polls until every deployment reports its database as `want` ("ok" with 200,
/// "unavailable" with 503); returns how long it took.
async fn until_health(deployments: &[&Deployment], want: &str, within: Duration) -> Duration {
    let started = Instant::now();
    let status = if want == "ok" { 200 } else { 503 };
    loop {
        let now = health(deployments).await;
        if now.iter().all(|(s, db)| *s == status && db == want) {
            return started.elapsed();
        }
        assert!(started.elapsed() < within, "health did not report the database {want} within {within:?}: {now:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Checks one deployment's database: every patient has exactly one `CREATE` audit row
/// and every `CREATE` row its patient; each patient's first name is the one its last
/// audited `UPDATE` gave it (or the one it was created with); and everything the clients
/// were told was done is there.
async fn check_consistency(host: Host, url: &str, acknowledged: &[Acknowledged]) {
    use sqlx::{ConnectOptions, Connection, Row};
    let options: sqlx::postgres::PgConnectOptions = url.parse().expect("url");
    let mut conn = options.connect().await.expect("connect to the test cluster");
    let patients: BTreeMap<i64, Option<String>> = sqlx::query("SELECT id, first_name FROM patients")
        .fetch_all(&mut conn)
        .await
        .expect("patients")
        .iter()
        .map(|r| (r.get::<i64, _>(0), r.get::<Option<String>, _>(1)))
        .collect();
    let rows = sqlx::query(
        "SELECT action, resource_id, details FROM audit_logs WHERE resource_type = 'patient' AND action IN ('CREATE', 'UPDATE') ORDER BY id",
    )
    .fetch_all(&mut conn)
    .await
    .expect("audit rows");
    let _ = conn.close().await;
    let mut creates: HashMap<i64, usize> = HashMap::new();
    let mut last_name_given: HashMap<i64, Value> = HashMap::new();
    let mut names_given: BTreeSet<(i64, String)> = BTreeSet::new();
    for row in &rows {
        let action: String = row.get(0);
        let id: i64 = row.get::<Option<String>, _>(1).and_then(|s| s.parse().ok()).expect("patient id in resource_id");
        let details: Value = serde_json::from_str(&row.get::<String, _>(2)).expect("details JSON");
        if action == "CREATE" {
            *creates.entry(id).or_default() += 1;
        } else if let Some(change) = details["changes"].get("first_name") {
            last_name_given.insert(id, change[1].clone());
            if let Some(name) = change[1].as_str() {
                names_given.insert((id, name.to_string()));
            }
        }
    }
    for (id, first_name) in &patients {
        assert_eq!(creates.get(id), Some(&1), "{host:?}: patient {id} without exactly one CREATE audit row");
        match last_name_given.get(id) {
            Some(given) => assert_eq!(&json!(first_name), given, "{host:?}: patient {id} is not what its last audited UPDATE says"),
            None => {
                assert!(first_name.as_deref().is_some_and(|n| n.starts_with('c')), "{host:?}: patient {id} changed without an UPDATE row")
            }
        }
    }
    for id in creates.keys() {
        assert!(patients.contains_key(id), "{host:?}: a CREATE audit row names patient {id}, which does not exist");
    }
    for done in acknowledged {
        for id in &done.created {
            assert!(patients.contains_key(id), "{host:?}: patient {id} was answered 201 but is not in the database");
        }
        for (id, name) in &done.updated {
            assert!(
                names_given.contains(&(*id, name.clone())),
                "{host:?}: the update of {id} to {name} was answered 200 but is not audited"
            );
        }
    }
    assert!(!patients.is_empty(), "{host:?}: the load created nothing");
}

/// Scenario 2: PostgreSQL restarted (`pg_ctl stop -m fast`, then started), then stopped
/// for [`OUTAGE`], under load, against the sidecar and the plugin at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_and_outage_under_load() {
    if postgres_skipped() {
        return;
    }
    let mut cluster = PgCluster::start().await;
    let sidecar_db = cluster.create_database("cohort_sidecar").await;
    let plugin_db = cluster.create_database("cohort_plugin").await;
    let sidecar =
        Deployment::start_on(Host::Sidecar, TestDatabase::external(&sidecar_db, Backend::Postgres), BTreeMap::new(), PLUGIN_LIBRARY, None)
            .await;
    let plugin =
        Deployment::start_on(Host::Plugin, TestDatabase::external(&plugin_db, Backend::Postgres), BTreeMap::new(), PLUGIN_LIBRARY, None)
            .await;
    let both = [&sidecar, &plugin];
    assert!(health(&both).await.iter().all(|(s, db)| *s == 200 && db == "ok"));

    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut workers = Vec::new();
    for d in both {
        for n in 0..WORKERS {
            workers.push(tokio::spawn(worker(d.host, d.url.clone(), n, stop.clone(), seen.clone())));
        }
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // A restart, as an operator's `pg_ctl restart -m fast`: sessions are cut mid-request.
    let mark = seen.lock().expect("lock").len();
    tokio::task::block_in_place(|| cluster.stop());
    cluster.start_again().await;
    let back = until_health(&both, "ok", RECOVERY).await;
    eprintln!("after the restart, both hosts reported the database up within {back:?}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let restart_answers = seen.lock().expect("lock").len() - mark;

    // The outage.
    let mark = seen.lock().expect("lock").len();
    tokio::task::block_in_place(|| cluster.stop());
    let down_at = Instant::now();
    let noticed = until_health(&both, "unavailable", Duration::from_secs(10)).await;
    eprintln!("health reported the database down {noticed:?} after it stopped");
    while down_at.elapsed() < OUTAGE {
        let now = health(&both).await;
        assert!(now.iter().all(|(s, db)| *s == 503 && db == "unavailable"), "during the outage: {now:?}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let during: Vec<(u16, Option<String>)> = seen.lock().expect("lock")[mark..].iter().map(|s| (s.status, s.code.clone())).collect();
    cluster.start_again().await;
    let back = until_health(&both, "ok", RECOVERY).await;
    eprintln!("after the outage, both hosts reported the database up within {back:?}");
    let recovered = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    // Workers 0..WORKERS drove the sidecar, the others the plugin.
    let mut acknowledged: [Vec<Acknowledged>; 2] = Default::default();
    for (i, w) in workers.into_iter().enumerate() {
        acknowledged[i / WORKERS].push(w.await.expect("worker"));
    }

    let seen = std::mem::take(&mut *seen.lock().expect("lock"));
    let bad: Vec<&Seen> = seen.iter().filter(|s| !s.ok() && !s.unavailable()).collect();
    assert!(bad.is_empty(), "answers other than a success or 503 database_unavailable: {bad:#?}");
    let slowest = seen.iter().max_by_key(|s| s.took).expect("answers");
    assert!(slowest.took < MAX_LATENCY, "an answer took {:?}: {slowest:?}", slowest.took);
    let unavailable = during.iter().filter(|(s, _)| *s == 503).count();
    assert!(unavailable > 0, "no request met the outage ({} answers during it)", during.len());
    // Requests sent once health said the database is back (an earlier one may end after).
    let after: Vec<&Seen> = seen.iter().filter(|s| s.started >= recovered).collect();
    for host in [Host::Sidecar, Host::Plugin] {
        assert!(after.iter().any(|s| s.host == host && s.ok()), "{host:?}: no success after the outage");
        assert!(
            after.iter().filter(|s| s.host == host).all(|s| s.ok()),
            "{host:?}: failures after recovery: {:?}",
            after.iter().filter(|s| s.host == host && !s.ok()).collect::<Vec<_>>()
        );
    }
    eprintln!(
        "{} answers ({} around the restart, {} during the outage, {unavailable} of them 503); slowest {:?} ({:?} {})",
        seen.len(),
        restart_answers,
        during.len(),
        slowest.took,
        slowest.host,
        slowest.what
    );
    check_consistency(Host::Sidecar, &sidecar_db, &acknowledged[0]).await;
    check_consistency(Host::Plugin, &plugin_db, &acknowledged[1]).await;
    drop(sidecar);
    drop(plugin);
}

/// The size of the tmpfs under test: room for the SQLite database and a few uploads.
const TMPFS_BYTES: u64 = 24 << 20;
/// What is left free when the spool's disk is "full": less than any upload below.
const SPOOL_LEFT: u64 = 256 << 10;

async fn import(c: &Client, content_type: &str, body: Vec<u8>) -> Resp {
    c.req(Method::POST, "/api/patients/import").body(content_type, body).send().await
}

/// Scenario 4 for one host: the spool's disk, then the SQLite volume, full and freed.
async fn disk_full(host: Host) {
    if let Err(why) = PrivateTmpfs::available() {
        log_skip(&why);
        return;
    }
    let tmpfs = Arc::new(PrivateTmpfs::new(TMPFS_BYTES, &["spool"]));
    let db_url = format!("sqlite://{}/cohort.db", tmpfs.path().display());
    let spool_dir = tmpfs.path().join("spool");
    let settings = BTreeMap::from([("SpoolDir".to_string(), json!(spool_dir))]);
    let d =
        Deployment::start_on(host, TestDatabase::external(&db_url, Backend::Sqlite), settings, PLUGIN_LIBRARY, Some(tmpfs.clone())).await;
    let pid = d.cohort_pid();
    let admin = d.admin().await;
    let before = admin.post("/api/patients", &json!({"external_id": "DF-BEFORE", "first_name": "Before"})).await.expect_status(201);
    let before_id = before["id"].as_i64().expect("id");

    // A ZIP whose nested archive must be spooled (both hosts), larger than the space left.
    let study = dicom::study(&StudySpec::new("DISKFULL").instances(3).size(512, 512));
    let archive = dicom::zip(&study.paths(), ZipOptions { nested: true, store: true, ..Default::default() });
    assert!(archive.size > 2 * SPOOL_LEFT, "the archive ({} bytes) must not fit in {SPOOL_LEFT}", archive.size);
    tmpfs.fill(pid, SPOOL_LEFT);
    let free_before = tmpfs.free_bytes(pid);
    let mut refusals = vec![("nested ZIP", import(&admin, "application/zip", archive.bytes()).await)];
    if host == Host::Sidecar {
        // A body of unknown length is spooled whole (the plugin's are in memory).
        let body = reqwest::Body::from(tokio::fs::File::open(&archive.path).await.expect("archive"));
        refusals.push(("chunked body", admin.req(Method::POST, "/api/patients/import").body("application/dicom", body).send().await));
    }
    for (what, resp) in &refusals {
        let body = resp.expect_error(507, "insufficient_storage");
        assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("full")), "{what}: {body}");
        // The partial spool file is gone: its space is back and the directory is empty.
        assert!(tmpfs.free_bytes(pid) + (64 << 10) >= free_before, "{what}: the spool's space was not given back");
        assert!(tmpfs.list(pid, "spool").is_empty(), "{what}: files left in the spool: {:?}", tmpfs.list(pid, "spool"));
    }
    // Nothing half-registered: no new patient, nothing in Orthanc.
    assert_eq!(admin.get("/api/patients").await.expect_status(200)["total"], 1);
    assert_eq!(d.orthanc_instances().await, 0);
    // Space back: the same upload works.
    tmpfs.free(pid);
    let report = import(&admin, "application/zip", archive.bytes()).await.expect_status(200);
    assert!(report["instances"]["stored"].as_u64().is_some_and(|n| n >= 3), "{report}");
    assert_eq!(admin.get("/api/patients").await.expect_status(200)["total"], 2);

    // The SQLite volume full. The sessions' last activity is made old, so that the next
    // authentication read from the database wants to record it (a write on a read).
    tmpfs.sqlite(pid, "cohort.db", "UPDATE user_sessions SET last_seen_at = replace(last_seen_at, substr(last_seen_at, 1, 4), '2000')");
    // The WAL is emptied first, so that the next write must grow it.
    let deadline = Instant::now() + Duration::from_secs(10);
    // (busy, WAL frames, frames checkpointed): busy 0 means done.
    while tmpfs.sqlite(pid, "cohort.db", "PRAGMA wal_checkpoint(TRUNCATE)")[0][0] != 0 {
        assert!(Instant::now() < deadline, "the WAL could not be checkpointed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tmpfs.fill(pid, 0);
    // Past the session cache's 2 s: the next request reads the session again.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let list = admin.get("/api/patients").await.expect_status(200);
    assert_eq!(list["total"], 2, "{list}");
    let refused = admin.post("/api/patients", &json!({"external_id": "DF-FULL", "first_name": "Full"})).await;
    refused.expect_error(507, "insufficient_storage");
    admin.put(&format!("/api/patients/{before_id}"), &json!({"first_name": "Changed"})).await.expect_error(507, "insufficient_storage");
    // Reads keep working (an admin's detail leaves out the pseudonym it cannot record).
    assert_eq!(admin.get(&format!("/api/patients/{before_id}")).await.expect_status(200)["first_name"], "Before");
    // Space back: writes work again, on the same session.
    tmpfs.free(pid);
    admin.post("/api/patients", &json!({"external_id": "DF-FULL", "first_name": "Full"})).await.expect_status(201);
    admin.put(&format!("/api/patients/{before_id}"), &json!({"first_name": "Changed"})).await.expect_status(200);
    // Nothing half-applied: each patient has its CREATE row, and the refused writes left none.
    let count = |sql: &str| tmpfs.sqlite(pid, "cohort.db", sql)[0][0].as_i64().expect("a count");
    let orphans = count(
        "SELECT COUNT(*) FROM patients p WHERE p.external_id LIKE 'DF-%' AND NOT EXISTS (SELECT 1 FROM audit_logs a \
         WHERE a.action = 'CREATE' AND a.resource_type = 'patient' AND a.resource_id = CAST(p.id AS TEXT))",
    );
    assert_eq!(orphans, 0, "patients without their CREATE audit row");
    let created = count("SELECT COUNT(*) FROM audit_logs WHERE action = 'CREATE' AND resource_type = 'patient'");
    assert_eq!(created, 2, "DF-BEFORE and DF-FULL, once each");
    let updates = count("SELECT COUNT(*) FROM audit_logs WHERE action = 'UPDATE' AND resource_type = 'patient'");
    assert_eq!(updates, 1, "only the update made once space was back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_sidecar() {
    disk_full(Host::Sidecar).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_plugin() {
    disk_full(Host::Plugin).await;
}

/// Scenario 4 on PostgreSQL (the sidecar; the plugin runs the same core): the database's
/// tablespace on a tmpfs of the server's own, filled. PostgreSQL's `53100 disk_full` is
/// the same 507 as SQLite's `SQLITE_FULL`; reads go on; freeing space is enough.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_postgres() {
    if postgres_skipped() {
        return;
    }
    if let Err(why) = PrivateTmpfs::available() {
        log_skip(&why);
        return;
    }
    let tmpfs = Arc::new(PrivateTmpfs::new(48 << 20, &[]));
    let cluster = PgCluster::start_in(Some(tmpfs.clone())).await;
    let url = cluster.database_on_tmpfs("full_ts", "ts", "cohort_full").await;
    let d =
        Deployment::start_on(Host::Sidecar, TestDatabase::external(&url, Backend::Postgres), BTreeMap::new(), PLUGIN_LIBRARY, None).await;
    let admin = d.admin().await;
    admin.post("/api/patients", &json!({"external_id": "PG-0", "first_name": "c0"})).await.expect_status(201);
    let pid = cluster.pid();
    tmpfs.fill(pid, 0);
    // Rows go into free room in existing pages until a table or an index must grow.
    let mut refused = None;
    for i in 1..=400 {
        let resp = admin.post("/api/patients", &json!({"external_id": format!("PG-{i}"), "first_name": format!("c{i}")})).await;
        if resp.status != 201 {
            eprintln!("the tablespace full, creation {i} was refused: {} {}", resp.status, String::from_utf8_lossy(&resp.body));
            refused = Some(resp);
            break;
        }
    }
    let refused = refused.expect("400 patients fitted in a full tablespace");
    refused.expect_error(507, "insufficient_storage");
    let total = admin.get("/api/patients").await.expect_status(200)["total"].as_i64().expect("total");
    tmpfs.free(pid);
    admin.post("/api/patients", &json!({"external_id": "PG-after", "first_name": "c-after"})).await.expect_status(201);
    assert_eq!(admin.get("/api/patients").await.expect_status(200)["total"].as_i64(), Some(total + 1));
    check_consistency(Host::Sidecar, &url, &[]).await;
    drop(d);
    drop(cluster);
}
