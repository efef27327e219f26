//! The change follower through faults (issue 12, scenario 3): DICOM sent by C-STORE while
//! Cohort's side is down is registered once, in order, when it comes back, and the
//! cursor neither skips nor repeats; a study the registry keeps refusing is tried a
//! bounded number of times, skipped with an audited `REGISTRATION_FAILED` naming it, and
//! the follower moves on; Orthanc going down meanwhile costs that study no attempt.

use std::collections::BTreeSet;
use std::time::Duration;

use cohort_e2e::dicom::{self, Generated, StudySpec};
use cohort_e2e::{eventually, metrics_text, postgres_skipped, sample, Backend, Client, Deployment, Host, TestDatabase};
use serde_json::Value;

/// `CHANGE_ATTEMPTS` of `services::registry`.
const ATTEMPTS: usize = 5;
const RETRY_LINE: &str = "an Orthanc change could not be registered; will retry it";

/// A registry rule that refuses one study, as a database administrator could add: a
/// trigger on SQLite, a CHECK constraint on PostgreSQL. Registering that study then
/// fails while Orthanc and the database both answer.
async fn quarantine(db: &TestDatabase, study_uid: &str) {
    let sql = match db.backend {
        Backend::Sqlite => format!(
            "CREATE TRIGGER study_quarantine BEFORE INSERT ON studies WHEN NEW.study_instance_uid = '{study_uid}' \
             BEGIN SELECT RAISE(ABORT, 'study under quarantine'); END;"
        ),
        Backend::Postgres => {
            format!("ALTER TABLE studies ADD CONSTRAINT study_quarantine CHECK (study_instance_uid <> '{study_uid}')")
        }
    };
    db.execute(&sql).await;
}

fn one_study(patient: &str, instances: u32, seed: u64) -> Generated {
    dicom::study(&StudySpec::new(patient).studies(1).series(1).instances(instances).seed(seed))
}

fn uid(g: &Generated) -> String {
    g.study_uids().into_iter().next().expect("a study UID")
}

fn send(d: &Deployment, g: &Generated) {
    dicom::storescu(&g.paths(), "127.0.0.1", d.orthanc.dicom_port, &d.orthanc.aet).expect("C-STORE");
}

/// Orthanc's newest change, from its own REST API.
async fn orthanc_last_change(orthanc: &Client) -> i64 {
    orthanc.get("/changes?last").await.expect_status(200)["Last"].as_i64().expect("Last")
}

/// Orthanc's study id for a StudyInstanceUID.
async fn orthanc_study_id(orthanc: &Client, study_uid: &str) -> String {
    let studies = orthanc.get("/studies?expand").await.expect_status(200);
    studies
        .as_array()
        .expect("studies")
        .iter()
        .find(|s| s["MainDicomTags"]["StudyInstanceUID"] == study_uid)
        .and_then(|s| s["ID"].as_str())
        .unwrap_or_else(|| panic!("{study_uid} not in Orthanc: {studies}"))
        .to_string()
}

/// How many `StableStudy` changes Orthanc's log holds.
async fn stable_studies(orthanc: &Client) -> usize {
    let changes = orthanc.get("/changes?since=0&limit=1000").await.expect_status(200);
    changes["Changes"].as_array().expect("Changes").iter().filter(|c| c["ChangeType"] == "StableStudy").count()
}

async fn audit(admin: &Client, action: &str) -> Vec<Value> {
    let page = admin.get(&format!("/api/audit?action={action}&page_size=100")).await.expect_status(200);
    page["items"].as_array().expect("items").clone()
}

async fn external_ids(admin: &Client) -> Vec<String> {
    let list = admin.get("/api/patients?sort=external_id").await.expect_status(200);
    list["items"].as_array().expect("items").iter().map(|p| p["external_id"].as_str().unwrap_or_default().to_string()).collect()
}

/// The `IMPORT` rows the follower wrote (by the system), as `(audit id, Orthanc study id)`.
async fn system_imports(admin: &Client) -> Vec<(i64, String)> {
    let mut rows: Vec<(i64, String)> = audit(admin, "IMPORT")
        .await
        .iter()
        .filter(|e| e["user_id"].is_null() && e["details"]["source"] == "orthanc")
        .map(|e| (e["id"].as_i64().expect("id"), e["details"]["orthanc_study_id"].as_str().expect("study").to_string()))
        .collect();
    rows.sort();
    rows
}

/// The cursor in the database equals Orthanc's newest change (nothing skipped ahead of
/// what Orthanc has, nothing left behind).
async fn cursor_caught_up(d: &Deployment, orthanc: &Client) {
    let last = orthanc_last_change(orthanc).await;
    eventually("the cursor reaches Orthanc's newest change", Duration::from_secs(20), || async {
        d.db.setting("orthanc_changes_seq").await.and_then(|v| v.parse::<i64>().ok()) == Some(last)
    })
    .await;
}

async fn follower_through_faults(mut d: Deployment) {
    let orthanc = d.orthanc_client().await;
    let (a, poisoned, b) = (one_study("IPP-FOLLOW-A", 2, 61), one_study("IPP-FOLLOW-P", 1, 62), one_study("IPP-FOLLOW-B", 1, 63));
    quarantine(&d.db, &uid(&poisoned)).await;

    // Cohort's side is down (the sidecar; the plugin is Orthanc itself, so it stays up)
    // while a modality sends three studies, the middle one refused by the registry.
    if let Some(sidecar) = d.sidecar.as_mut() {
        sidecar.kill();
    }
    for g in [&a, &poisoned, &b] {
        send(&d, g);
    }
    eventually("Orthanc made the three studies stable", Duration::from_secs(30), || async { stable_studies(&orthanc).await == 3 }).await;
    if let Some(sidecar) = d.sidecar.as_mut() {
        sidecar.start_again().await;
        d.url = sidecar.url.clone();
    }
    let admin = d.admin().await;
    let poisoned_id = orthanc_study_id(&orthanc, &uid(&poisoned)).await;

    if d.host == Host::Sidecar {
        // Orthanc goes down while the refused study is being retried, for longer than
        // all its attempts would take: that time costs it no attempt.
        eventually("a first failed attempt", Duration::from_secs(30), || async { d.log().contains(RETRY_LINE) }).await;
        assert_eq!(external_ids(&admin).await, ["IPP-FOLLOW-A"], "the study before the refused one is registered");
        d.orthanc.kill();
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert!(audit(&admin, "REGISTRATION_FAILED").await.is_empty(), "a study was given up on while Orthanc was down");
        d.orthanc.start_again().await;
    }

    eventually("the study after the refused one is registered", Duration::from_secs(40), || async {
        external_ids(&admin).await == ["IPP-FOLLOW-A", "IPP-FOLLOW-B"]
    })
    .await;
    // Given up on once, naming the resource, after a bounded number of attempts.
    let failed = audit(&admin, "REGISTRATION_FAILED").await;
    assert_eq!(failed.len(), 1, "{failed:#?}");
    let row = &failed[0];
    assert_eq!((row["resource_type"].as_str(), row["resource_id"].as_str()), (Some("orthanc_study"), Some(poisoned_id.as_str())), "{row}");
    assert_eq!((row["outcome"].as_str(), row["user_id"].clone()), (Some("failure"), Value::Null), "{row}");
    assert_eq!(row["details"]["attempts"], ATTEMPTS, "{row}");
    assert_eq!(row["details"]["change_type"], "StableStudy", "{row}");
    assert!(row["details"]["error"].as_str().is_some_and(|e| e.contains("quarantine")), "the cause is kept: {row}");
    let retries = d.log().lines().filter(|l| l.contains(RETRY_LINE)).count();
    assert_eq!(retries, ATTEMPTS - 1, "each failed attempt but the last is retried");
    // Nothing of the refused study reached the registry (its patient was in the same
    // transaction as the study).
    assert!(admin.get("/api/patients?q=IPP-FOLLOW-P").await.expect_status(200)["total"] == 0);

    // Registered once each, in the order Orthanc received them.
    let a_id = orthanc_study_id(&orthanc, &uid(&a)).await;
    let b_id = orthanc_study_id(&orthanc, &uid(&b)).await;
    let imports = system_imports(&admin).await;
    assert_eq!(imports.iter().map(|(_, s)| s.clone()).collect::<Vec<_>>(), [a_id.clone(), b_id.clone()], "one IMPORT per study, A first");
    cursor_caught_up(&d, &orthanc).await;

    // The figures say the same.
    let metrics = metrics_text(&admin).await;
    assert_eq!(sample(&metrics, "cohort_change_follower_skipped_total"), Some(1.0), "{metrics}");
    assert_eq!(sample(&metrics, "cohort_change_follower_lag"), Some(0.0), "{metrics}");
    let last = orthanc_last_change(&orthanc).await as f64;
    assert_eq!(sample(&metrics, "cohort_change_follower_cursor"), Some(last), "{metrics}");
    assert!(sample(&metrics, "cohort_change_follower_seconds_since_success").is_some_and(|s| s < 30.0), "{metrics}");
    if d.host == Host::Plugin {
        let text = String::from_utf8_lossy(&orthanc.get("/tools/metrics-prometheus").await.body).to_string();
        let published = |name: &str| {
            text.lines().find_map(|l| l.strip_prefix(&format!("{name} ")).map(|v| v.split(' ').next().unwrap_or("").to_string()))
        };
        assert_eq!(published("cohort_change_follower_skipped").as_deref(), Some("1"), "{text}");
        assert_eq!(published("cohort_change_follower_lag").as_deref(), Some("0"), "{text}");
    }

    // Down and back once more: nothing is replayed (no second IMPORT, the refused study
    // not retried), and what arrives next is registered.
    d.restart_cohort().await;
    let admin = d.admin().await;
    let c = one_study("IPP-FOLLOW-C", 1, 64);
    send(&d, &c);
    eventually("the next study registered", Duration::from_secs(30), || async {
        external_ids(&admin).await.contains(&"IPP-FOLLOW-C".to_string())
    })
    .await;
    cursor_caught_up(&d, &orthanc).await;
    let c_id = orthanc_study_id(&orthanc, &uid(&c)).await;
    let studies: Vec<String> = system_imports(&admin).await.into_iter().map(|(_, s)| s).collect();
    assert_eq!(studies, [a_id, b_id, c_id], "each study audited once, in order");
    assert_eq!(audit(&admin, "REGISTRATION_FAILED").await.len(), 1, "the refused study was not tried again");
    let unique: BTreeSet<String> = external_ids(&admin).await.into_iter().collect();
    assert_eq!(unique.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_sqlite() {
    follower_through_faults(Deployment::start(Host::Sidecar, Backend::Sqlite).await).await;
}

/// The plugin on PostgreSQL: the same follower inside Orthanc (where Cohort's side
/// cannot be down without Orthanc), the registry's refusal a CHECK constraint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_postgres() {
    if postgres_skipped() {
        return;
    }
    follower_through_faults(Deployment::start(Host::Plugin, Backend::Postgres).await).await;
}
