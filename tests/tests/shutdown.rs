//! Graceful stop with work in flight (issue 12, scenario 5): on SIGTERM the sidecar stops
//! accepting, lets what is in flight finish within `ShutdownDrainSeconds`, then cuts the
//! imports still running, which are registered and audited with how far they got; it
//! exits 0 and the database is consistent. Orthanc with the plugin exits 0 too.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use cohort_e2e::deploy::Sidecar;
use cohort_e2e::dicom::{self, Generated, StudySpec, ZipOptions};
use cohort_e2e::{eventually, Backend, Client, Deployment, Host};
use reqwest::Method;
use serde_json::{json, Value};

const BOUNDARY: &str = "cohort-e2e-shutdown-5b2e";
/// The drain deadline the tests configure.
const DRAIN: Duration = Duration::from_secs(2);
/// `serve::ABORT_GRACE`.
const ABORT_GRACE: Duration = Duration::from_secs(5);

fn part_head(filename: &str) -> String {
    format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
    )
}

async fn registry_count(admin: &Client, patient: i64) -> usize {
    let registered = admin.get(&format!("/api/patients/{patient}/instances")).await.expect_status(200);
    registered.as_array().expect("instances").len()
}

/// Orthanc's instances of a registered patient.
async fn orthanc_count(d: &Deployment, admin: &Client, patient: i64) -> usize {
    let detail = admin.get(&format!("/api/patients/{patient}")).await.expect_status(200);
    let external = detail["external_id"].as_str().expect("external id").to_string();
    let orthanc = d.orthanc_client().await;
    let found = orthanc
        .req(Method::POST, "/tools/find")
        .json(&json!({"Level": "Instance", "Query": {"PatientID": external}}))
        .without_csrf()
        .send()
        .await
        .expect_status(200);
    found.as_array().expect("ids").len()
}

/// The registry's instances of a patient and Orthanc's, which must agree.
async fn registry_matches_orthanc(d: &Deployment, admin: &Client, patient: i64) -> usize {
    let registered = registry_count(admin, patient).await;
    assert_eq!(registered, orthanc_count(d, admin, patient).await, "registry and Orthanc disagree on patient {patient}");
    registered
}

async fn sidecar_drains_then_cuts(backend: Backend) {
    let settings = [("ShutdownDrainSeconds".to_string(), json!(DRAIN.as_secs()))].into_iter().collect();
    let mut d = Deployment::start_with(Host::Sidecar, backend, settings).await;
    let admin = d.admin().await;
    let token = admin.cookie("access_token").expect("access token");
    let http = reqwest::Client::new();

    // A patient large enough that its export is still being sent when SIGTERM comes
    // (the client pauses reading).
    let big = dicom::study(&StudySpec::new("IPP-DRAIN-EXPORT").studies(1).series(1).instances(24).size(512, 512).seed(71));
    let zip = dicom::zip(&big.paths(), ZipOptions::default());
    let r = admin.req(Method::POST, "/api/patients/import").body("application/zip", zip.bytes()).send().await.expect_status(200);
    let exported = r["patients"][0]["id"].as_i64().expect("id");
    let mut export = http.get(format!("{}/api/patients/{exported}/export", d.url)).bearer_auth(&token).send().await.expect("export answer");
    assert_eq!(export.status().as_u16(), 200);
    let mut received = export.chunk().await.expect("first chunk").map_or(0, |c| c.len());

    // An import in flight: two DICOM parts sent, a third begun, and the client silent.
    let files: Generated = dicom::study(&StudySpec::new("IPP-DRAIN-IMPORT").studies(1).series(1).instances(3).seed(72));
    let read = |i: usize| std::fs::read(&files.files[i].path).expect("read DICOM");
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(8);
    let mut head = Vec::new();
    for i in 0..2 {
        head.extend_from_slice(part_head(&format!("{i}.dcm")).as_bytes());
        head.extend_from_slice(&read(i));
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(part_head("2.dcm").as_bytes());
    head.extend_from_slice(&read(2)[..200]);
    tx.send(Ok(Bytes::from(head))).await.expect("send");
    let body = reqwest::Body::wrap_stream(futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) }));
    let import = tokio::spawn(
        http.post(format!("{}/api/patients/import", d.url))
            .bearer_auth(&token)
            .header("content-type", format!("multipart/form-data; boundary={BOUNDARY}"))
            .body(body)
            .send(),
    );
    eventually("the import stored its first two instances", Duration::from_secs(20), || async { d.orthanc_instances().await == 24 + 2 })
        .await;

    let address = d.url.trim_start_matches("http://").to_string();
    let mut sidecar = d.sidecar.take().expect("sidecar");
    let stopping = std::thread::spawn(move || {
        let (status, took) = sidecar.terminate(DRAIN + ABORT_GRACE + Duration::from_secs(10));
        (status, took, sidecar)
    });

    // Stopped accepting at once, while still draining.
    eventually("new connections refused", Duration::from_secs(2), || async { tokio::net::TcpStream::connect(&address).await.is_err() })
        .await;
    // The export in flight finishes: the client reads the rest, a whole ZIP.
    let mut tail = Vec::new();
    while let Some(chunk) = export.chunk().await.expect("the export is sent to its end") {
        received += chunk.len();
        tail = chunk.to_vec();
    }
    let sizes: u64 = big.files.iter().map(|f| f.size).sum();
    assert!(received as u64 > sizes, "{received} bytes exported for {sizes} bytes of DICOM");
    assert!(tail.windows(4).any(|w| w == b"PK\x05\x06"), "the archive ends with its central directory");

    let (status, took, sidecar) = stopping.join().expect("terminate");
    assert!(status.success(), "the sidecar exited with {status:?}");
    assert!(took >= DRAIN, "it waited {took:?}, less than the drain deadline, with an import in flight");
    assert!(took < DRAIN + ABORT_GRACE + Duration::from_secs(3), "it took {took:?} to stop");
    let log = cohort_e2e::process::strip_ansi(&sidecar.log());
    assert!(log.contains("drain_deadline_s=2"), "{log}");
    assert!(log.contains("the drain deadline passed with requests in flight"), "{log}");
    drop(tx);
    // The client of the cut import heard 503 `shutting_down`, or lost the connection.
    if let Ok(Ok(answer)) = import.await {
        assert_eq!(answer.status().as_u16(), 503);
        let body: Value = answer.json().await.unwrap_or(Value::Null);
        assert_eq!(body["error"]["code"], "shutting_down", "{body}");
    }

    // After a restart: the cut import is registered and audited with how far it got.
    let mut sidecar = sidecar;
    sidecar.start_again().await;
    d.url = sidecar.url.clone();
    d.sidecar = Some(sidecar);
    let admin = d.admin().await;
    let audit = admin.get("/api/audit?action=IMPORT").await.expect_status(200);
    let cut: Vec<&Value> = audit["items"].as_array().expect("items").iter().filter(|e| e["details"]["completed"] == false).collect();
    assert_eq!(cut.len(), 1, "{audit}");
    let details = &cut[0]["details"];
    assert_eq!(details["interrupted_by"]["code"], "shutting_down", "{details}");
    assert_eq!(details["instances"]["received"], 2, "{details}");
    assert_eq!(details["instances"]["stored"], 2, "{details}");
    assert_eq!(cut[0]["outcome"], "failure");
    let patient = details["patients"][0]["id"].as_i64().expect("patient");
    assert_eq!(registry_matches_orthanc(&d, &admin, patient).await, 2);
    assert_eq!(registry_matches_orthanc(&d, &admin, exported).await, 24);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_sqlite() {
    sidecar_drains_then_cuts(Backend::Sqlite).await;
}

/// Without the key, the deadline is 30 s; an idle sidecar stops at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_drain_deadline_is_30_seconds() {
    let db = cohort_e2e::TestDatabase::create(Backend::Sqlite).await;
    let orthanc = cohort_e2e::Orthanc::start(Default::default()).await;
    let mut sidecar = Sidecar::start(&db.url, &orthanc.url(), &BTreeMap::new()).await;
    let (status, took) = sidecar.terminate(Duration::from_secs(30));
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_secs(5), "an idle sidecar took {took:?} to stop");
    let log = cohort_e2e::process::strip_ansi(&sidecar.log());
    assert!(log.contains("drain_deadline_s=30"), "{log}");
    assert!(log.contains("drained: every connection finished"), "{log}");
}

/// Orthanc with the plugin, SIGTERM with an import and an export in flight: Orthanc
/// exits 0, nothing crashes, and after a restart the import is audited (to its end, or
/// with how far it got) and the registry agrees with Orthanc. (Orthanc 1.10.1 signals
/// `OrthancStopped` about a second after SIGTERM, before its HTTP server stops: the
/// import is seen both to complete and to be cut, depending on timing.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_exits_0_with_work_in_flight() {
    let mut d = Deployment::start(Host::Plugin, Backend::Sqlite).await;
    let admin = d.admin().await;
    let token = admin.cookie("access_token").expect("access token");
    let exported = dicom::study(&StudySpec::new("IPP-STOP-EXPORT").studies(1).series(1).instances(8).size(256, 256).seed(73));
    let zip = dicom::zip(&exported.paths(), ZipOptions::default());
    let r = admin.req(Method::POST, "/api/patients/import").body("application/zip", zip.bytes()).send().await.expect_status(200);
    let exported_id = r["patients"][0]["id"].as_i64().expect("id");
    let many = dicom::study(&StudySpec::new("IPP-STOP-IMPORT").studies(1).series(4).instances(60).seed(74));
    let many_zip = dicom::zip(&many.paths(), ZipOptions::default()).bytes();

    let http = reqwest::Client::new();
    let import = tokio::spawn(
        http.post(format!("{}/api/patients/import", d.url))
            .bearer_auth(&token)
            .header("content-type", "application/zip")
            .body(many_zip)
            .send(),
    );
    // SIGTERM once the import is storing, with an export asked for at the same moment.
    eventually("the import started storing", Duration::from_secs(30), || async { d.orthanc_instances().await > 8 }).await;
    let export = tokio::spawn(http.get(format!("{}/api/patients/{exported_id}/export", d.url)).bearer_auth(&token).send());
    tokio::time::sleep(Duration::from_millis(50)).await;
    let status = tokio::task::block_in_place(|| d.orthanc.stop());
    assert!(status.success(), "Orthanc exited with {status:?}");
    let log = d.orthanc.log();
    for bad in ["Segmentation", "panicked", "core dumped"] {
        assert!(!log.lines().any(|l| l.contains(bad)), "{bad} in Orthanc's log:\n{log}");
    }
    // The clients got an answer or lost the connection; neither hangs.
    let _ = tokio::time::timeout(Duration::from_secs(5), import).await.expect("the import client is released");
    let _ = tokio::time::timeout(Duration::from_secs(5), export).await.expect("the export client is released");

    d.orthanc.start_again().await;
    let admin = d.admin().await;
    let audit = admin.get("/api/audit?action=IMPORT").await.expect_status(200);
    let rows: Vec<&Value> = audit["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|e| e["details"]["patients"][0]["external_id"] == "IPP-STOP-IMPORT")
        .collect();
    assert_eq!(rows.len(), 1, "the import in flight is audited once: {audit}");
    let details = &rows[0]["details"];
    if details["completed"] == false {
        // Cut at `OrthancStopped`: audited with how far it got; what Orthanc could no
        // longer describe is completed by reconciliation at this start.
        assert_eq!(details["interrupted_by"]["code"], "shutting_down", "{details}");
    }
    let patient = details["patients"][0]["id"].as_i64().expect("patient");
    let stored = details["instances"]["stored"].as_u64().expect("stored") as usize;
    assert!(stored >= 8, "{details}");
    eventually("the registry agrees with Orthanc", Duration::from_secs(30), || async {
        registry_count(&admin, patient).await == orthanc_count(&d, &admin, patient).await
    })
    .await;
    assert_eq!(registry_matches_orthanc(&d, &admin, exported_id).await, 8);
}
