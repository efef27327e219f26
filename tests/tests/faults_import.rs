//! Issue 12, scenario 1: Cohort killed in the middle of a 500-instance ZIP import.
//!
//! A user of a research group imports a ZIP of 500 small instances; while Orthanc is
//! storing them (between 20 and 480 held), the process running the import is killed
//! with SIGKILL by its PID: the sidecar, or Orthanc with the plugin. Then, with no manual
//! step (a restart), or with `cohort reconcile` run by hand:
//! - every instance Orthanc holds is registered, under the importer's group;
//! - nothing is registered that Orthanc does not hold;
//! - the audit trail has one `RECONCILE` row by the system naming the import, the
//!   importer and the group, and counting what Orthanc held;
//! - importing the same ZIP again reports what was stored before as `already_stored` and
//!   the rest as `stored`, and the registry then holds all 500.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use cohort_e2e::deploy::sidecar_command;
use cohort_e2e::dicom::{self, StudySpec, ZipOptions};
use cohort_e2e::{Backend, Client, Deployment, Host};
use reqwest::Method;
use serde_json::{json, Value};

const INSTANCES: i64 = 500;
const PATIENTS: usize = 4 + 100;
const PASSWORD: &str = "crash-test-password";

/// 500 instances of 32×32 pixels, always the same: 4 patients × 2 studies × 2 series ×
/// 25 instances, and 100 patients of one single-instance study each, one of those after
/// every four of the others. Whenever the import dies, studies are stored in part, and
/// studies whose only instance Orthanc may have stored without the import registering
/// it are in flight.
fn archive() -> Vec<u8> {
    let large = dicom::study(&StudySpec::new("IPP-CRASH").patients(4).studies(2).series(2).instances(25).size(32, 32).seed(1201));
    let single = dicom::study(&StudySpec::new("IPP-ONE").patients(100).size(32, 32).seed(1202));
    let (large, single) = (large.paths(), single.paths());
    assert_eq!((large.len(), single.len()), (400, 100));
    let mut order = Vec::new();
    for (chunk, one) in large.chunks(4).zip(&single) {
        order.extend_from_slice(chunk);
        order.push(one.clone());
    }
    assert_eq!(order.len() as i64, INSTANCES);
    dicom::zip(&order, ZipOptions::default()).bytes()
}

/// A research group and a user in it; returns (group id, the user's client).
async fn importer(d: &Deployment, admin: &Client) -> (i64, Client) {
    let group = admin.post("/api/groups", &json!({"name": "crash-lab"})).await.expect_status(201)["id"].as_i64().expect("group id");
    admin
        .post("/api/users", &json!({"email": "importer@cohort.test", "password": PASSWORD, "role": "user", "group_id": group}))
        .await
        .expect_status(201);
    let user = d.client();
    user.login("importer@cohort.test", PASSWORD).await.expect_status(200);
    (group, user)
}

/// Starts the import in its own task; returns when Orthanc holds between 20 and 480 of
/// its instances.
async fn import_until_half_way(d: &Deployment, user: &Client, zip: Vec<u8>) -> tokio::task::JoinHandle<()> {
    // Sent with a plain HTTP client: the harness's would panic when the answer never
    // comes (its server is killed under it).
    let request = reqwest::Client::new()
        .post(format!("{}/api/patients/import", d.url))
        .header("cookie", format!("access_token={}", user.cookie("access_token").expect("access token")))
        .header("x-csrf-token", user.cookie("csrf_token").expect("CSRF token"))
        .header("content-type", "application/zip")
        .body(zip);
    let upload = tokio::spawn(async move {
        let _ = request.send().await;
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let held = d.orthanc_instances().await;
        if (20..=480).contains(&held) {
            return upload;
        }
        assert!(held < 480, "the import stored {held} instances before it could be killed");
        assert!(Instant::now() < deadline, "the import did not start storing within 60 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn kill_9(pid: u32) {
    assert!(pid > 0, "no process to kill");
    let status = std::process::Command::new("kill").args(["-s", "KILL", &pid.to_string()]).status().expect("run kill");
    assert!(status.success(), "kill -s KILL {pid} failed");
}

/// The SOPInstanceUIDs Orthanc holds.
async fn orthanc_instances(d: &Deployment) -> BTreeSet<String> {
    let all = d.orthanc_client().await.get("/instances?expand").await.expect_status(200);
    all.as_array()
        .expect("instances")
        .iter()
        .map(|i| i["MainDicomTags"]["SOPInstanceUID"].as_str().expect("SOPInstanceUID").to_string())
        .collect()
}

/// The registry's patients (all of them, as an admin sees them: at most 200) and the
/// SOPInstanceUIDs registered under them.
async fn registry(admin: &Client) -> (Vec<Value>, BTreeSet<String>) {
    let page = admin.get("/api/patients?page_size=200").await.expect_status(200);
    let patients = page["items"].as_array().expect("items").clone();
    let mut instances = BTreeSet::new();
    for p in &patients {
        let id = p["id"].as_i64().expect("id");
        for i in admin.get(&format!("/api/patients/{id}/instances")).await.expect_status(200).as_array().expect("instances") {
            assert!(instances.insert(i["sop_instance_uid"].as_str().expect("uid").to_string()), "an instance registered twice");
        }
    }
    (patients, instances)
}

/// The `RECONCILE` rows of the audit trail, waiting up to `wait` for the first.
async fn reconcile_rows(admin: &Client, wait: Duration) -> Vec<Value> {
    let deadline = Instant::now() + wait;
    loop {
        let rows =
            admin.get("/api/audit?action=RECONCILE&page_size=200").await.expect_status(200)["items"].as_array().expect("items").clone();
        if !rows.is_empty() || Instant::now() >= deadline {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// What must hold once the dead import is reconciled, then after importing it again.
async fn assert_reconciled(d: &Deployment, admin: &Client, user: &Client, group: i64, zip: Vec<u8>) {
    let held = orthanc_instances(d).await;
    assert!((20..INSTANCES as usize).contains(&held.len()), "Orthanc holds {} instances", held.len());

    let rows = reconcile_rows(admin, Duration::from_secs(40)).await;
    assert_eq!(rows.len(), 1, "one RECONCILE row: {rows:#?}\nlog:\n{}", cohort_e2e::orthanc::tail(&d.log(), 40));
    // Every instance Orthanc holds is registered, under the importer's group, and
    // nothing else is.
    let (patients, registered) = registry(admin).await;
    let unregistered = held.difference(&registered).count();
    let phantom = registered.difference(&held).count();
    assert_eq!((unregistered, phantom), (0, 0), "instances in Orthanc not registered, and registered but not in Orthanc");
    assert!(!patients.is_empty());
    for p in &patients {
        assert_eq!(p["group_id"], group, "a patient outside the importer's group: {p}");
    }

    let row = &rows[0];
    assert_eq!((row["user_id"].clone(), row["actor_email"].clone()), (Value::Null, Value::Null), "by the system: {row}");
    assert_eq!(row["outcome"], "success");
    assert_eq!(row["resource_type"], "import");
    let details = &row["details"];
    eprintln!(
        "Orthanc held {} of {INSTANCES} instances; RECONCILE: {} studies registered, {} refreshed, {} never stored",
        held.len(),
        details["registered"],
        details["refreshed"],
        details["not_in_orthanc"]
    );
    assert_eq!(details["import"]["actor_email"], "importer@cohort.test", "{details}");
    assert_eq!(details["import"]["group_id"], group, "{details}");
    assert_eq!(details["instances"], held.len(), "it counts what Orthanc held: {details}");
    assert_eq!(details["refused"], 0, "{details}");
    let registered = details["registered"].as_u64().expect("registered") + details["refreshed"].as_u64().expect("refreshed");
    let orthanc_studies = d.orthanc_client().await.get("/studies").await.expect_status(200).as_array().expect("studies").len();
    assert_eq!(registered as usize, orthanc_studies, "every study Orthanc holds is in it: {details}");
    // The dead import itself never wrote its IMPORT row.
    let imports = admin.get("/api/audit?action=IMPORT&page_size=200").await.expect_status(200)["items"].as_array().expect("items").clone();
    assert!(imports.iter().all(|r| r["actor_email"] != "importer@cohort.test"), "{imports:#?}");

    // The importer sends the same archive again: what Orthanc held is already stored.
    let again = user.req(Method::POST, "/api/patients/import").body("application/zip", zip).send().await.expect_status(200);
    let counts = &again["instances"];
    assert_eq!(counts["received"], INSTANCES, "{again}");
    assert_eq!(counts["already_stored"], held.len(), "{again}");
    assert_eq!(counts["stored"], INSTANCES - held.len() as i64, "{again}");
    assert_eq!(counts["failed"], 0, "{again}");
    let (patients, registered) = registry(admin).await;
    assert_eq!(registered.len() as i64, INSTANCES);
    assert_eq!(registered, orthanc_instances(d).await);
    assert_eq!(patients.len(), PATIENTS);
    assert!(patients.iter().all(|p| p["group_id"] == group), "{patients:#?}");
    // The complete import is audited as such and left nothing to reconcile.
    let imports = admin.get("/api/audit?action=IMPORT&page_size=200").await.expect_status(200)["items"].as_array().expect("items").clone();
    let mine: Vec<&Value> = imports.iter().filter(|r| r["actor_email"] == "importer@cohort.test").collect();
    assert_eq!(mine.len(), 1, "{imports:#?}");
    assert_eq!(mine[0]["details"]["completed"], true);
    assert_eq!(reconcile_rows(admin, Duration::ZERO).await.len(), 1);
}

/// `POST /api/patients/import/reconcile` as `c`.
async fn reconcile(c: &Client) -> cohort_e2e::Resp {
    c.req(Method::POST, "/api/patients/import/reconcile").send().await
}

/// The sidecar killed mid-import, then started again: it reconciles by itself.
async fn sidecar_killed(backend: Backend) {
    let zip = archive();
    let mut d = Deployment::start(Host::Sidecar, backend).await;
    let admin = d.admin().await;
    let (group, user) = importer(&d, &admin).await;
    let upload = import_until_half_way(&d, &user, zip.clone()).await;
    let sidecar = d.sidecar.as_mut().expect("sidecar");
    kill_9(sidecar.pid());
    let _ = upload.await;
    d.restart_cohort().await;
    let admin = d.admin().await;
    let user = d.client();
    user.login("importer@cohort.test", PASSWORD).await.expect_status(200);
    assert_reconciled(&d, &admin, &user, group, zip).await;
}

mod sidecar_killed {
    use cohort_e2e::Backend;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::sidecar_killed(Backend::Sqlite).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        if cohort_e2e::postgres_skipped() {
            return;
        }
        super::sidecar_killed(Backend::Postgres).await;
    }
}

/// Orthanc killed with the plugin inside it, then started again on the same storage
/// and database: the plugin reconciles by itself, on its own runtime once Orthanc runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_killed() {
    let zip = archive();
    let mut d = Deployment::start(Host::Plugin, Backend::Sqlite).await;
    let admin = d.admin().await;
    let (group, user) = importer(&d, &admin).await;
    let upload = import_until_half_way(&d, &user, zip.clone()).await;
    kill_9(d.orthanc.pid());
    let _ = upload.await;
    d.orthanc.kill();
    d.orthanc.start_again().await;
    d.forget_orthanc_token();
    let admin = d.admin().await;
    let user = d.client();
    user.login("importer@cohort.test", PASSWORD).await.expect_status(200);
    // On demand (the plugin has no command line): an admin's route, which leaves an
    // import alone while its last sign of life is recent, and is the admin's only.
    reconcile(&user).await.expect_error(403, "forbidden");
    let first = reconcile(&admin).await.expect_status(200);
    let done = first["reconciled"].as_array().expect("reconciled").len();
    let seen = done + first["running"].as_u64().expect("running") as usize;
    if seen == 0 {
        // The plugin's own reconciler, started with Orthanc, got there first (a slow
        // restart on a loaded machine): then its RECONCILE row is already written.
        assert!(
            !reconcile_rows(&admin, Duration::from_secs(10)).await.is_empty(),
            "the import was neither reconciled nor running: {first}"
        );
    } else {
        assert_eq!(seen, 1, "{first}");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = reconcile(&admin).await.expect_status(200);
        if !now["reconciled"].as_array().expect("reconciled").is_empty() || !reconcile_rows(&admin, Duration::ZERO).await.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "never reconciled");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let after = reconcile(&admin).await.expect_status(200);
    assert_eq!(after, json!({"reconciled": [], "running": 0}));
    assert_reconciled(&d, &admin, &user, group, zip).await;
}

/// The sidecar killed mid-import and not started again: `cohort reconcile`, run by hand,
/// does the same work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_on_demand() {
    let zip = archive();
    let mut d = Deployment::start(Host::Sidecar, Backend::Sqlite).await;
    let admin = d.admin().await;
    let (group, user) = importer(&d, &admin).await;
    let upload = import_until_half_way(&d, &user, zip.clone()).await;
    kill_9(d.sidecar.as_ref().expect("sidecar").pid());
    let _ = upload.await;

    // The import's heartbeat is fresh: the command waits until it is stale, then works.
    let out = sidecar_command(&d.db.url, &d.orthanc_url(), &Default::default()).arg("reconcile").output().expect("run cohort reconcile");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "cohort reconcile failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("1 interrupted imports reconciled, 0 still running"), "{stdout}");
    assert!(stdout.contains("by importer@cohort.test"), "{stdout}");
    // Run again: nothing left.
    let out = sidecar_command(&d.db.url, &d.orthanc_url(), &Default::default()).arg("reconcile").output().expect("run cohort reconcile");
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 interrupted imports reconciled"));

    d.restart_cohort().await;
    let admin = d.admin().await;
    let user = d.client();
    user.login("importer@cohort.test", PASSWORD).await.expect_status(200);
    assert_reconciled(&d, &admin, &user, group, zip).await;
}
