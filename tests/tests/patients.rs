//! The patient side against each deployment, with real DICOM (generated multi-series
//! studies, pydicom's samples) and a real Orthanc: import, registry, group scoping on
//! every route, images, export and re-import, statuses, deletion, stats, automatic
//! registration, and hostile or broken uploads.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use cohort_e2e::deploy::{ORTHANC_SETTING, ORTHANC_STORAGE};
use cohort_e2e::dicom::{self, BadZip, Charset, Generated, GeneratedZip, StudySpec, ZipOptions};
use cohort_e2e::{eventually, per_backend, per_deployment, Backend, Client, Deployment, Host, Resp};
use futures_util::StreamExt;
use reqwest::Method;
use serde_json::{json, Value};

/// A patient with a Latin-1 accented name: 2 studies × 2 series (CT, MR) × 3 instances.
fn eloise() -> &'static Generated {
    static G: OnceLock<Generated> = OnceLock::new();
    G.get_or_init(|| {
        dicom::study(
            &StudySpec::new("IPP-ELOISE")
                .name("Dupré^Éloïse")
                .birth_date("19780412")
                .charset(Charset::Latin1)
                .studies(2)
                .series(2)
                .instances(3)
                .modalities(&["CT", "MR"])
                .seed(11),
        )
    })
}

/// A second patient: 1 study × 1 series × 2 instances.
fn marc() -> &'static Generated {
    static G: OnceLock<Generated> = OnceLock::new();
    G.get_or_init(|| dicom::study(&StudySpec::new("IPP-MARC").name("Martin^Marc").studies(1).series(1).instances(2).seed(12)))
}

/// Éloïse's files in a ZIP with macOS junk, a DICOMDIR, a PDF and a text file.
fn eloise_zip() -> &'static GeneratedZip {
    static Z: OnceLock<GeneratedZip> = OnceLock::new();
    Z.get_or_init(|| dicom::zip(&eloise().paths(), ZipOptions { junk: true, ..ZipOptions::default() }))
}

async fn import(c: &Client, content_type: &str, body: Vec<u8>) -> Resp {
    c.req(Method::POST, "/api/patients/import").body(content_type, body).send().await
}

async fn import_file(c: &Client, path: &PathBuf) -> Resp {
    import(c, "application/dicom", std::fs::read(path).expect("read DICOM")).await
}

fn patient_id(report: &Value, external_id: &str) -> i64 {
    report["patients"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["external_id"] == external_id))
        .and_then(|p| p["id"].as_i64())
        .unwrap_or_else(|| panic!("{external_id} not in {report}"))
}

async fn import_registry_and_images(d: Deployment) {
    let admin = d.admin().await;
    let z = eloise_zip();
    let report = import(&admin, "application/zip", z.bytes()).await.expect_status(200);
    let junk = z.entries.iter().filter(|e| !e.is_dicom()).count() as u64;
    assert_eq!(report["instances"], json!({"received": 12, "stored": 12, "already_stored": 0, "failed": 0}), "{report}");
    assert_eq!(report["skipped"], junk);
    let named: Vec<&str> = report["errors"].as_array().expect("errors").iter().filter_map(|e| e["file"].as_str()).collect();
    for e in z.entries.iter().filter(|e| !e.is_dicom()) {
        assert!(named.contains(&e.name.as_str()), "{} is not named in the errors: {named:?}", e.name);
    }
    assert_eq!(report["patients"].as_array().map(Vec::len), Some(1));
    assert_eq!(report["patients"][0]["created"], true);
    let id = patient_id(&report, "IPP-ELOISE");
    assert_eq!(d.orthanc_instances().await, 12);

    // The registry took the patient from the tags, the Latin-1 name decoded.
    let p = admin.get(&format!("/api/patients/{id}")).await.expect_status(200);
    assert_eq!((p["first_name"].as_str(), p["last_name"].as_str()), (Some("Éloïse"), Some("Dupré")));
    assert_eq!(p["date_of_birth"], "1978-04-12");
    assert_eq!((p["status"].as_str(), p["status_label"].as_str()), (Some("to_interpret"), Some("À interpréter")));
    assert_eq!(p["group_id"], Value::Null, "an admin without a group imports ungrouped patients");
    let studies = p["studies"].as_array().expect("studies");
    assert_eq!(studies.len(), 2);
    let want_uids = eloise().study_uids();
    for s in studies {
        assert!(want_uids.contains(s["study_instance_uid"].as_str().unwrap_or_default()));
        assert_eq!(s["instances_count"], 6);
        assert_eq!(s["modalities"], json!(["CT", "MR"]));
    }
    assert!(want_uids.contains(p["dicom_study_uid"].as_str().unwrap_or_default()));

    // Search is case- and accent-insensitive, and filters by status.
    for q in ["eloise", "DUPRE", "Éloï", "ipp-elo"] {
        let found = admin.get(&format!("/api/patients?q={}", urlencoding(q))).await.expect_status(200);
        assert_eq!(found["total"], 1, "q={q}");
    }
    // Short queries scan, longer ones use the trigram index; quotes and wildcards are text.
    assert_eq!(admin.get("/api/patients?q=el").await.expect_status(200)["total"], 1);
    for q in ["%", "%%%", "\"\"\"", "é\"l", "_a_", "*", "NEAR(a b)", "e OR x"] {
        let found = admin.get(&format!("/api/patients?q={}", urlencoding(q))).await.expect_status(200);
        assert_eq!(found["total"], 0, "q={q}");
    }
    assert_eq!(admin.get("/api/patients?status=validated").await.expect_status(200)["total"], 0);
    assert_eq!(admin.get("/api/patients?status=to_interpret").await.expect_status(200)["total"], 1);
    admin.get("/api/patients?status=done").await.expect_error(422, "validation_error");
    admin.get("/api/patients?sort=password").await.expect_error(422, "validation_error");

    // Instances and the image proxy.
    let instances = admin.get(&format!("/api/patients/{id}/instances")).await.expect_status(200);
    let instances = instances.as_array().expect("instances").clone();
    assert_eq!(instances.len(), 12);
    let sops: std::collections::BTreeSet<String> =
        instances.iter().filter_map(|i| i["sop_instance_uid"].as_str().map(str::to_string)).collect();
    assert_eq!(sops, eloise().sop_uids());
    let first = &instances[0];
    let image = admin.get(&format!("/api/patients/images/{}", first["id"].as_str().expect("id"))).await;
    assert_eq!(image.status.as_u16(), 200);
    assert_eq!(image.header("content-type"), Some("application/dicom"));
    let original = eloise().files.iter().find(|f| f.sop_instance_uid.as_deref() == first["sop_instance_uid"].as_str()).expect("file");
    assert_eq!(
        image.body.as_ref(),
        std::fs::read(&original.path).expect("read").as_slice(),
        "the proxy returns the stored file byte for byte"
    );
    admin.get("/api/patients/images/0000-not-an-instance").await.expect_error(404, "not_found");

    // The same archive again: everything already stored, no new patient.
    let again = import(&admin, "application/zip", z.bytes()).await.expect_status(200);
    assert_eq!(again["instances"], json!({"received": 12, "stored": 0, "already_stored": 12, "failed": 0}));
    assert_eq!(again["patients"][0]["created"], false);
    assert_eq!(admin.get("/api/patients").await.expect_status(200)["total"], 1);

    // A single file as application/dicom, and as application/octet-stream (sniffed).
    let m = marc();
    let one = import_file(&admin, &m.files[0].path).await.expect_status(200);
    assert_eq!(one["instances"]["stored"], 1);
    assert_eq!(one["patients"][0]["external_id"], "IPP-MARC");
    let two = import(&admin, "application/octet-stream", std::fs::read(&m.files[1].path).expect("read")).await.expect_status(200);
    assert_eq!(two["instances"]["stored"], 1);
    assert_eq!(two["patients"][0]["created"], false);
    let marc_id = patient_id(&two, "IPP-MARC");
    let detail = admin.get(&format!("/api/patients/{marc_id}")).await.expect_status(200);
    assert_eq!(detail["studies"][0]["instances_count"], 2);

    // pydicom's own test files, several transfer syntaxes and SOP classes, in one ZIP.
    let samples = dicom::pydicom_samples();
    let sz = dicom::zip(&samples.paths(), ZipOptions::default());
    let r = import(&admin, "application/octet-stream", sz.bytes()).await.expect_status(200);
    assert_eq!(r["instances"]["received"].as_u64(), Some(samples.files.len() as u64));
    assert_eq!(r["instances"]["failed"], 0, "{r}");
    assert_eq!(d.orthanc_instances().await, 14 + samples.files.len() as i64);

    // The audit trail has the imports.
    // One IMPORT row per import: the archive twice, Marc's two files, the samples.
    let audit = admin.get("/api/audit?action=IMPORT").await.expect_status(200);
    assert_eq!(audit["total"], 5, "{audit}");
}
per_deployment!(import_registry_and_images);

fn urlencoding(s: &str) -> String {
    s.bytes().map(|b| if b.is_ascii_alphanumeric() || b == b'-' { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}

async fn groups_scope_every_route(d: Deployment) {
    let admin = d.admin().await;
    let g1 = admin.post("/api/groups", &json!({"name": "Neuro"})).await.expect_status(201)["id"].clone();
    let g2 = admin.post("/api/groups", &json!({"name": "Cardio"})).await.expect_status(201)["id"].clone();
    for (email, group) in [("neuro@e2e.test", g1.clone()), ("cardio@e2e.test", g2.clone()), ("nogroup@e2e.test", Value::Null)] {
        admin
            .post("/api/users", &json!({"email": email, "password": "user-password-1", "role": "user", "group_id": group}))
            .await
            .expect_status(201);
    }
    let login = |email: &'static str| {
        let c = d.client();
        async move {
            c.login(email, "user-password-1").await.expect_status(200);
            c
        }
    };
    let (neuro, cardio, nogroup) = (login("neuro@e2e.test").await, login("cardio@e2e.test").await, login("nogroup@e2e.test").await);

    // A user imports into their group.
    let report = import(&neuro, "application/zip", dicom::zip(&marc().paths(), ZipOptions::default()).bytes()).await.expect_status(200);
    let pid = patient_id(&report, "IPP-MARC");
    assert_eq!(report["patients"][0]["created"], true);
    let p = neuro.get(&format!("/api/patients/{pid}")).await.expect_status(200);
    assert_eq!(p["group_id"], g1);
    let instance = neuro.get(&format!("/api/patients/{pid}/instances")).await.expect_status(200)[0]["id"].as_str().expect("id").to_string();
    neuro.get(&format!("/api/patients/images/{instance}")).await.expect_status(200);

    // Another group sees nothing of it, on every route, as if it did not exist.
    assert_eq!(cardio.get("/api/patients").await.expect_status(200)["total"], 0);
    cardio.get(&format!("/api/patients/{pid}")).await.expect_error(404, "not_found");
    cardio.get(&format!("/api/patients/{pid}/instances")).await.expect_error(404, "not_found");
    cardio.get(&format!("/api/patients/{pid}/export")).await.expect_error(404, "not_found");
    cardio.get(&format!("/api/patients/images/{instance}")).await.expect_error(404, "not_found");
    let started = Instant::now();
    cardio.put(&format!("/api/patients/{pid}"), &json!({"status": "validated"})).await.expect_error(404, "not_found");
    assert!(started.elapsed() < Duration::from_secs(3), "a refused update took {:?}", started.elapsed());
    cardio.post("/api/patients/export", &json!({"ids": [pid]})).await.expect_error(404, "not_found");
    assert_eq!(cardio.get("/api/stats").await.expect_status(200)["patients"]["total"], 0);
    // Mixed with a visible one, a bulk export is refused whole.
    let own = cardio.post("/api/patients", &json!({"external_id": "IPP-CARDIO-1"})).await.expect_status(201);
    assert_eq!(own["group_id"], g2);
    cardio.post("/api/patients/export", &json!({"ids": [own["id"], pid]})).await.expect_error(404, "not_found");
    // Adding images to a patient of another group is refused, and nothing is left behind.
    let before = d.orthanc_instances().await;
    let extra = dicom::study(&StudySpec::new("IPP-MARC").name("Martin^Marc").studies(1).series(1).instances(1).seed(99));
    let r = import_file(&cardio, &extra.files[0].path).await.expect_status(200);
    assert_eq!(r["instances"]["failed"], 1, "{r}");
    assert_eq!(r["patients"], json!([]));
    assert_eq!(d.orthanc_instances().await, before, "the refused instance was removed from Orthanc");
    assert_eq!(neuro.get(&format!("/api/patients/{pid}")).await.expect_status(200)["studies"].as_array().map(Vec::len), Some(1));
    // A user cannot move a patient to another group or create one there.
    neuro.put(&format!("/api/patients/{pid}"), &json!({"group_id": g2})).await.expect_error(403, "forbidden");
    neuro.post("/api/patients", &json!({"external_id": "X-1", "group_id": g2})).await.expect_error(403, "forbidden");

    // Without a group: no patients, no import.
    assert_eq!(nogroup.get("/api/patients").await.expect_status(200)["total"], 0);
    import_file(&nogroup, &marc().files[0].path).await.expect_error(403, "no_group");
    nogroup.post("/api/patients", &json!({"external_id": "X-2"})).await.expect_error(403, "no_group");

    // Ungrouped patients (admin imports) are for admins only.
    let r = import_file(&admin, &eloise().files[0].path).await.expect_status(200);
    let ungrouped = patient_id(&r, "IPP-ELOISE");
    neuro.get(&format!("/api/patients/{ungrouped}")).await.expect_error(404, "not_found");
    assert_eq!(admin.get("/api/patients").await.expect_status(200)["total"], 3);
    // The admin moves it into Neuro; now Neuro sees it.
    admin.put(&format!("/api/patients/{ungrouped}"), &json!({"group_id": g1})).await.expect_status(200);
    neuro.get(&format!("/api/patients/{ungrouped}")).await.expect_status(200);
    assert_eq!(neuro.get("/api/stats").await.expect_status(200)["patients"]["total"], 2);

    // Each hidden access was audited.
    let denied = admin.get("/api/audit?action=ACCESS_DENIED&page_size=100").await.expect_status(200);
    let hidden = denied["items"].as_array().expect("items").iter().filter(|e| e["details"]["reason"] == "patient_not_visible").count();
    // Cardio: 6 routes plus the mixed bulk export; Neuro: the ungrouped patient.
    assert_eq!(hidden, HIDDEN_ACCESSES, "{denied}");

    // The image proxy caches who owns an instance (both groups asked about this one):
    // moving the patient to Cardio changes who may fetch it at once, and so does a
    // deletion.
    neuro.get(&format!("/api/patients/images/{instance}")).await.expect_status(200);
    admin.put(&format!("/api/patients/{pid}"), &json!({"group_id": g2})).await.expect_status(200);
    neuro.get(&format!("/api/patients/images/{instance}")).await.expect_error(404, "not_found");
    cardio.get(&format!("/api/patients/images/{instance}")).await.expect_status(200);
    admin.delete(&format!("/api/patients/{pid}")).await.expect_status(204);
    cardio.get(&format!("/api/patients/images/{instance}")).await.expect_error(404, "not_found");
}
per_deployment!(groups_scope_every_route);

/// The refused accesses to another group's patient in `groups_scope_every_route`.
const HIDDEN_ACCESSES: usize = 8;

async fn status_workflow_and_deletion(d: Deployment) {
    let admin = d.admin().await;
    let statuses = admin.get("/api/patients/statuses").await.expect_status(200);
    assert_eq!(
        statuses,
        json!([
            {"code": "to_interpret", "label": "À interpréter"},
            {"code": "in_progress", "label": "En cours"},
            {"code": "validated", "label": "Validé"},
            {"code": "archived", "label": "Archivé"}
        ])
    );
    let p = admin
        .post(
            "/api/patients",
            &json!({"external_id": "IPP-MANUAL", "first_name": "Ana", "last_name": "Lopes", "date_of_birth": "1990-02-28"}),
        )
        .await
        .expect_status(201);
    let id = p["id"].as_i64().expect("id");
    assert_eq!(p["status"], "to_interpret");
    admin.post("/api/patients", &json!({"external_id": "IPP-MANUAL"})).await.expect_error(409, "external_id_taken");
    admin.post("/api/patients", &json!({"external_id": "X", "date_of_birth": "28/02/1990"})).await.expect_error(422, "validation_error");
    admin.post("/api/patients", &json!({"external_id": ""})).await.expect_error(422, "validation_error");
    for status in ["in_progress", "validated", "archived", "to_interpret"] {
        let u = admin.put(&format!("/api/patients/{id}"), &json!({"status": status})).await.expect_status(200);
        assert_eq!(u["status"], status);
    }
    admin.put(&format!("/api/patients/{id}"), &json!({"status": "finished"})).await.expect_error(422, "validation_error");
    let u = admin.put(&format!("/api/patients/{id}"), &json!({"first_name": "Anna", "date_of_birth": null})).await.expect_status(200);
    assert_eq!((u["first_name"].as_str(), u["date_of_birth"].clone()), (Some("Anna"), Value::Null));
    let audit = admin.get("/api/audit?action=UPDATE&page_size=50").await.expect_status(200);
    let changes: Vec<&Value> = audit["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|e| e["resource_type"] == "patient")
        .map(|e| &e["details"]["changes"])
        .collect();
    assert_eq!(changes.len(), 5, "every change is audited");
    assert!(changes.iter().any(|c| c["status"] == json!(["in_progress", "validated"])));
    assert!(changes.iter().any(|c| c["first_name"] == json!(["Ana", "Anna"])));
    // Search follows a rename (the trigram index on SQLite is kept by triggers).
    let found = |q: &'static str| {
        let admin = &admin;
        async move { admin.get(&format!("/api/patients?q={q}")).await.expect_status(200)["total"].as_i64() }
    };
    assert_eq!((found("lopes").await, found("moreau").await), (Some(1), Some(0)));
    admin.put(&format!("/api/patients/{id}"), &json!({"last_name": "Moreau"})).await.expect_status(200);
    assert_eq!((found("lopes").await, found("moreau").await, found("mor").await), (Some(0), Some(1), Some(1)));

    // Deletion: admins only. Each form is tried on a patient that has images in Orthanc.
    let user = d.client();
    let g = admin.post("/api/groups", &json!({"name": "G"})).await.expect_status(201)["id"].clone();
    admin
        .post("/api/users", &json!({"email": "u@e2e.test", "password": "user-password-1", "role": "user", "group_id": g}))
        .await
        .expect_status(201);
    user.login("u@e2e.test", "user-password-1").await.expect_status(200);
    let r = import(&user, "application/zip", dicom::zip(&marc().paths(), ZipOptions::default()).bytes()).await.expect_status(200);
    let marc_id = patient_id(&r, "IPP-MARC");
    let by_header = dicom::study(&StudySpec::new("IPP-PURGE-HEADER").studies(1).series(1).instances(1).seed(24));
    let by_query = dicom::study(&StudySpec::new("IPP-PURGE-QUERY").studies(1).series(1).instances(2).seed(25));
    let header_id = patient_id(&import_file(&admin, &by_header.files[0].path).await.expect_status(200), "IPP-PURGE-HEADER");
    let query_id = patient_id(
        &import(&admin, "application/zip", dicom::zip(&by_query.paths(), ZipOptions::default()).bytes()).await.expect_status(200),
        "IPP-PURGE-QUERY",
    );
    assert_eq!(d.orthanc_instances().await, 5);
    user.delete(&format!("/api/patients/{marc_id}")).await.expect_error(403, "forbidden");
    admin.delete(&format!("/api/patients/{id}")).await.expect_status(204);
    admin.get(&format!("/api/patients/{id}")).await.expect_error(404, "not_found");
    assert_eq!((found("moreau").await, found("mor").await), (Some(0), Some(0)), "a deleted patient is not found by search");

    // Without purge: the record goes, Orthanc keeps Marc's images.
    admin.delete(&format!("/api/patients/{marc_id}")).await.expect_status(204);
    admin.get(&format!("/api/patients/{marc_id}")).await.expect_error(404, "not_found");
    assert_eq!(d.orthanc_instances().await, 5, "a deletion without purge leaves Orthanc alone");
    // X-Purge-Dicom alone purges, on both hosts.
    admin.req(Method::DELETE, &format!("/api/patients/{header_id}")).header("x-purge-dicom", "true").send().await.expect_status(204);
    assert_eq!(d.orthanc_instances().await, 4, "X-Purge-Dicom deleted the images from Orthanc");
    // ?purge_dicom=true alone purges beside Orthanc; inside it, Orthanc 1.10.1 drops the
    // query string of a DELETE before the plugin sees it (ARCHITECTURE.md).
    admin.delete(&format!("/api/patients/{query_id}?purge_dicom=true")).await.expect_status(204);
    admin.get(&format!("/api/patients/{query_id}")).await.expect_error(404, "not_found");
    let (left, purged) = match d.host {
        Host::Sidecar => (2, true),
        Host::Plugin => (4, false),
    };
    assert_eq!(d.orthanc_instances().await, left, "?purge_dicom=true on {:?}", d.host);
    let deletions = admin.get("/api/audit?action=DELETE").await.expect_status(200);
    assert_eq!(deletions["total"], 4);
    let purge_of = |pid: i64| {
        deletions["items"]
            .as_array()
            .expect("items")
            .iter()
            .find(|e| e["resource_id"].as_str() == Some(pid.to_string().as_str()))
            .map(|e| e["details"]["purge_dicom"].clone())
    };
    assert_eq!(
        (purge_of(id), purge_of(marc_id), purge_of(header_id), purge_of(query_id)),
        (Some(json!(false)), Some(json!(false)), Some(json!(true)), Some(json!(purged))),
        "{deletions}"
    );
}
per_deployment!(status_workflow_and_deletion);

async fn export_then_reimport_elsewhere(d: Deployment) {
    let admin = d.admin().await;
    let r1 = import(&admin, "application/zip", eloise_zip().bytes()).await.expect_status(200);
    let r2 = import(&admin, "application/zip", dicom::zip(&marc().paths(), ZipOptions::default()).bytes()).await.expect_status(200);
    let (e, m) = (patient_id(&r1, "IPP-ELOISE"), patient_id(&r2, "IPP-MARC"));

    let one = admin.get(&format!("/api/patients/{e}/export")).await;
    assert_eq!(one.status.as_u16(), 200);
    assert_eq!(one.header("content-type"), Some("application/zip"));
    assert!(one.header("content-disposition").is_some_and(|h| h.contains("IPP-ELOISE.zip")));
    let names = zip_names(&one.body);
    assert!(names.contains(&"patient.json".to_string()));
    let dcm: Vec<&String> = names.iter().filter(|n| n.starts_with("DICOM/") && n.ends_with(".dcm")).collect();
    assert_eq!(dcm.len(), 12);
    for f in &eloise().files {
        let want = format!(
            "DICOM/{}/{}/{}.dcm",
            f.study_instance_uid.as_deref().unwrap_or_default(),
            f.series_instance_uid.as_deref().unwrap_or_default(),
            f.sop_instance_uid.as_deref().unwrap_or_default()
        );
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    let doc: Value = serde_json::from_slice(&zip_entry(&one.body, "patient.json")).expect("patient.json");
    assert_eq!(doc["patient"]["external_id"], "IPP-ELOISE");
    assert_eq!(doc["studies"].as_array().map(Vec::len), Some(2));
    assert_eq!(doc["export"]["instances"], 12);

    let bulk = admin.post("/api/patients/export", &json!({"ids": [e, m]})).await;
    assert_eq!(bulk.status.as_u16(), 200);
    let names = zip_names(&bulk.body);
    assert!(names.contains(&"IPP-ELOISE/patient.json".to_string()) && names.contains(&"IPP-MARC/patient.json".to_string()));
    assert_eq!(names.iter().filter(|n| n.ends_with(".dcm")).count(), 14);
    admin.post("/api/patients/export", &json!({"ids": [e, 999_999]})).await.expect_error(404, "not_found");
    admin.post("/api/patients/export", &json!({"ids": []})).await.expect_error(422, "validation_error");
    let exports = admin.get("/api/audit?action=EXPORT").await.expect_status(200);
    assert_eq!(exports["total"], 3, "one EXPORT row per patient: {exports}");

    // Re-import the bulk archive into an empty deployment of the same kind.
    let fresh = Deployment::start(d.host, d.db.backend).await;
    let fresh_admin = fresh.admin().await;
    let r = import(&fresh_admin, "application/zip", bulk.body.to_vec()).await.expect_status(200);
    assert_eq!(r["instances"], json!({"received": 14, "stored": 14, "already_stored": 0, "failed": 0}), "{r}");
    assert_eq!(r["skipped"], 2, "the two patient.json files are reported, not imported");
    let list = fresh_admin.get("/api/patients?sort=external_id").await.expect_status(200);
    assert_eq!(list["total"], 2);
    for (i, (ext, studies, instances)) in [("IPP-ELOISE", 2, 12), ("IPP-MARC", 1, 2)].into_iter().enumerate() {
        assert_eq!(list["items"][i]["external_id"], ext);
        let id = list["items"][i]["id"].as_i64().expect("id");
        let p = fresh_admin.get(&format!("/api/patients/{id}")).await.expect_status(200);
        assert_eq!(p["studies"].as_array().map(Vec::len), Some(studies));
        let n: i64 = p["studies"].as_array().expect("studies").iter().filter_map(|s| s["instances_count"].as_i64()).sum();
        assert_eq!(n, instances);
    }
    assert_eq!(fresh.orthanc_instances().await, 14);
}
per_deployment!(export_then_reimport_elsewhere);

fn zip_names(bytes: &[u8]) -> Vec<String> {
    let listing = python_zip(bytes, "print('\\n'.join(z.namelist())); z.testzip() is None or exit(3)");
    listing.lines().map(str::to_string).collect()
}

fn zip_entry(bytes: &[u8], name: &str) -> Vec<u8> {
    python_zip(bytes, &format!("import sys; sys.stdout.write(z.read({name:?}).decode())")).into_bytes()
}

/// Reads an archive with Python's zipfile (an independent ZIP reader), checking CRCs.
fn python_zip(bytes: &[u8], code: &str) -> String {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("a.zip");
    std::fs::write(&path, bytes).expect("write");
    let out = std::process::Command::new(dicom::python())
        .arg("-c")
        .arg(format!("import zipfile; z = zipfile.ZipFile({:?}); {code}", path.display().to_string()))
        .output()
        .expect("python");
    assert!(out.status.success(), "zipfile refused the archive: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8")
}

async fn hostile_and_broken_uploads(d: Deployment) {
    let admin = d.admin().await;
    let base = d.orthanc_instances().await;
    let registry = || async { admin.get("/api/patients").await.expect_status(200)["total"].clone() };
    let cases: Vec<(&str, GeneratedZip, u16, &str)> = vec![
        ("truncated", dicom::bad_zip(BadZip::Truncated), 422, "invalid_zip"),
        ("corrupt CRC", dicom::bad_zip(BadZip::CorruptCrc), 422, "invalid_zip"),
        ("zip bomb", dicom::bad_zip(BadZip::Bomb), 422, "zip_bomb"),
        ("lying size", dicom::bad_zip(BadZip::LyingSize), 422, "invalid_zip"),
    ];
    for (what, z, status, code) in &cases {
        let started = Instant::now();
        let r = import(&admin, "application/zip", z.bytes()).await;
        assert_eq!(r.status.as_u16(), *status, "{what}: {}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.json()["error"]["code"], *code, "{what}");
        assert!(started.elapsed() < Duration::from_secs(20), "{what} took {:?}: limits must stop reading at once", started.elapsed());
        assert_eq!(d.orthanc_instances().await, base, "{what}: nothing stored in Orthanc");
        assert_eq!(registry().await, 0, "{what}: nothing in the registry");
    }

    // Entry names are reported, never used as paths.
    let dotdot = dicom::zip(&marc().paths(), ZipOptions { dotdot: true, nested: true, junk: true, ..ZipOptions::default() });
    let r = import(&admin, "application/zip", dotdot.bytes()).await.expect_status(200);
    let depth2 = dotdot.dicom_uids_at(2);
    let received = dotdot.entries.iter().filter(|e| e.is_dicom() && e.depth < 2).count() as u64;
    assert_eq!(r["instances"]["received"], received, "{r}");
    assert_eq!(r["instances"]["failed"], 0, "{r}");
    assert!(r["errors"].as_array().expect("errors").iter().any(|e| e["error"].as_str().is_some_and(|m| m.contains("nested"))), "{r}");
    let deep = admin.get("/api/patients").await.expect_status(200);
    let mut stored_sops = std::collections::BTreeSet::new();
    for p in deep["items"].as_array().expect("items") {
        for i in admin.get(&format!("/api/patients/{}/instances", p["id"])).await.expect_status(200).as_array().expect("list") {
            stored_sops.insert(i["sop_instance_uid"].as_str().unwrap_or_default().to_string());
        }
    }
    assert!(!depth2.is_empty(), "the archive has a DICOM file two levels down");
    assert!(depth2.is_disjoint(&stored_sops), "a ZIP two levels down is not opened");
    let depth1 = dotdot.dicom_uids_at(1);
    assert!(!depth1.is_empty() && depth1.is_subset(&stored_sops), "a ZIP one level down is opened");
    assert!(!std::path::Path::new("/abs/path.dcm").exists());

    // Not DICOM at all, empty, the wrong type.
    let pdf = b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n".to_vec();
    import(&admin, "application/octet-stream", pdf.clone()).await.expect_error(400, "no_dicom");
    import(&admin, "application/dicom", b"just some text, certainly not DICOM".to_vec()).await.expect_error(400, "no_dicom");
    let only_junk = zip_of(&[("notes.txt", b"notes".to_vec()), (".DS_Store", vec![0u8; 64]), ("report.pdf", pdf.clone())]);
    import(&admin, "application/zip", only_junk).await.expect_error(400, "no_dicom");
    import(&admin, "application/zip", Vec::new()).await.expect_error(400, "empty_body");
    import(&admin, "text/plain", pdf).await.expect_error(415, "unsupported_media_type");
    import(&admin, "application/zip", b"PK\x03\x04 but nothing after".to_vec()).await.expect_error(422, "invalid_zip");

    // A file Orthanc refuses is a per-file failure with its name.
    let mut broken = std::fs::read(&marc().files[0].path).expect("read");
    broken.truncate(300);
    let z = zip_of(&[("broken.dcm", broken)]);
    let r = import(&admin, "application/zip", z).await.expect_status(200);
    assert_eq!(r["instances"], json!({"received": 1, "stored": 0, "already_stored": 0, "failed": 1}), "{r}");
    assert_eq!(r["errors"][0]["file"], "broken.dcm");
}
per_deployment!(hostile_and_broken_uploads);

/// A small stored ZIP built in memory.
fn zip_of(entries: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("tmp");
    for (name, data) in entries {
        std::fs::write(dir.path().join(name), data).expect("write");
    }
    let paths: Vec<PathBuf> = entries.iter().map(|(n, _)| dir.path().join(n)).collect();
    dicom::zip(&paths, ZipOptions { store: true, ..ZipOptions::default() }).bytes()
}

async fn upload_size_and_zip_entry_limits_are_configurable(host: Host, backend: cohort_e2e::Backend) {
    let settings: BTreeMap<String, Value> =
        [("MaxUploadBytes".to_string(), json!(50_000)), ("MaxZipEntries".to_string(), json!(5))].into_iter().collect();
    let d = Deployment::start_with(host, backend, settings).await;
    let admin = d.admin().await;
    let big = dicom::zip(&eloise().paths(), ZipOptions { store: true, ..ZipOptions::default() });
    assert!(big.size > 50_000, "the test archive must exceed the limit ({} bytes)", big.size);
    // Several times: a refusal sent while the body is still coming can be lost to a
    // connection reset (the sidecar drains small bodies first).
    for _ in 0..10 {
        import(&admin, "application/zip", big.bytes()).await.expect_error(413, "too_large");
    }
    let many = dicom::bad_zip(BadZip::ManyEntries(20));
    import(&admin, "application/zip", many.bytes()).await.expect_error(413, "too_large");
    // Refusals that come before the upload is read (a forged token, a missing CSRF
    // header, a wrong content type) reach a client still sending, not a connection reset:
    // the server reads the rest of a small body first. The body comes as a file upload
    // does, in chunks over ~0.2 s. (In the plugin, Orthanc reads the body whole before
    // Cohort answers, and its filter refuses an unauthenticated body over 1 MiB with a
    // bare 403: 900 KB there.)
    let size: usize = if host == Host::Plugin { 900_000 } else { 3 << 20 };
    let url = format!("{}/api/patients/import", d.url);
    let slow_body = move || {
        let chunks = (0..size.div_ceil(64 << 10)).map(move |i| vec![0x5a_u8; (64 << 10).min(size - i * (64 << 10))]);
        reqwest::Body::wrap_stream(futures_util::stream::iter(chunks).then(|chunk| async move {
            tokio::time::sleep(Duration::from_millis(4)).await;
            Ok::<_, std::io::Error>(chunk)
        }))
    };
    let token = admin.cookie("access_token").expect("token");
    let csrf = admin.cookie("csrf_token").expect("csrf");
    let http = reqwest::Client::new();
    let cases = [
        ("a forged token", "application/zip", format!("Bearer coh_{}", "B".repeat(43)), None, 401, "invalid_token"),
        ("no CSRF header", "application/zip", String::new(), None, 403, "csrf_failed"),
        ("a wrong content type", "text/plain", String::new(), Some(csrf.clone()), 415, "unsupported_media_type"),
    ];
    for _ in 0..3 {
        for (what, content_type, authorization, csrf, status, code) in &cases {
            let mut req = http.post(&url).header("content-type", *content_type).header("content-length", size).body(slow_body());
            req = if authorization.is_empty() {
                req.header("cookie", format!("access_token={token}; csrf_token={}", csrf.clone().unwrap_or_default()))
            } else {
                req.header("authorization", authorization)
            };
            if let Some(csrf) = csrf {
                req = req.header("x-csrf-token", csrf);
            }
            let r = req.send().await.unwrap_or_else(|e| panic!("{what}: the refusal was lost: {e:?}"));
            assert_eq!(r.status().as_u16(), *status, "{what}");
            let body: Value = r.json().await.unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(body["error"]["code"], *code, "{what}: {body}");
        }
    }
    assert_eq!(d.orthanc_instances().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_limits_sidecar() {
    upload_size_and_zip_entry_limits_are_configurable(Host::Sidecar, cohort_e2e::Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_limits_plugin() {
    upload_size_and_zip_entry_limits_are_configurable(Host::Plugin, cohort_e2e::Backend::Sqlite).await;
}

async fn stats_for_admins_and_users(d: Deployment) {
    let admin = d.admin().await;
    let g = admin.post("/api/groups", &json!({"name": "Onco"})).await.expect_status(201)["id"].clone();
    admin
        .post("/api/users", &json!({"email": "onco@e2e.test", "password": "user-password-1", "role": "user", "group_id": g}))
        .await
        .expect_status(201);
    import(&admin, "application/zip", eloise_zip().bytes()).await.expect_status(200);
    let user = d.client();
    user.login("onco@e2e.test", "user-password-1").await.expect_status(200);
    let r = import_file(&user, &marc().files[0].path).await.expect_status(200);
    let marc_id = patient_id(&r, "IPP-MARC");
    user.put(&format!("/api/patients/{marc_id}"), &json!({"status": "in_progress"})).await.expect_status(200);
    admin.get(&format!("/api/patients/{marc_id}/export")).await.expect_status(200);

    let s = admin.get("/api/stats").await.expect_status(200);
    assert_eq!(s["patients"]["total"], 2);
    assert_eq!(s["patients"]["by_status"], json!({"to_interpret": 1, "in_progress": 1, "validated": 0, "archived": 0}));
    assert_eq!(s["users"], json!({"total": 2, "active": 2, "admins": 1}));
    assert_eq!(s["activity"]["logins_30d"], 2);
    assert_eq!(s["activity"]["imports_30d"], 2);
    assert_eq!(s["activity"]["exports_30d"], 1);
    assert_eq!(s["storage"]["instances"], 13);
    assert_eq!(s["storage"]["studies"], 3);
    assert!(s["storage"]["disk_size_mb"].as_f64().is_some());

    let mine = user.get("/api/stats").await.expect_status(200);
    assert_eq!(mine["patients"]["total"], 1);
    assert_eq!(mine["patients"]["by_status"]["in_progress"], 1);
    assert!(mine.get("users").is_none() && mine.get("activity").is_none() && mine.get("storage").is_none(), "{mine}");
    d.client().get("/api/stats").await.expect_error(401, "not_authenticated");
}
per_deployment!(stats_for_admins_and_users);

async fn dicom_arriving_without_cohort_is_registered(mut d: Deployment) {
    let admin = d.admin().await;
    // A modality pushes a study with C-STORE.
    let pushed = dicom::study(&StudySpec::new("IPP-CSTORE").name("Store^Scu").studies(1).series(2).instances(2).seed(21));
    dicom::storescu(&pushed.paths(), "127.0.0.1", d.orthanc.dicom_port, &d.orthanc.aet).expect("C-STORE");
    // Someone uploads through Orthanc's own REST API.
    let orthanc = d.orthanc_client().await;
    let uploaded = dicom::study(&StudySpec::new("IPP-ORTHANC").name("Rest^Upload").studies(1).series(1).instances(1).seed(22));
    orthanc
        .req(Method::POST, "/instances")
        .body("application/dicom", std::fs::read(&uploaded.files[0].path).expect("read"))
        .without_csrf()
        .send()
        .await
        .expect_status(200);

    let total = || async { admin.get("/api/patients").await.expect_status(200)["total"].as_i64().unwrap_or(0) };
    eventually("both patients registered", Duration::from_secs(30), || async { total().await == 2 }).await;
    let list = admin.get("/api/patients?sort=external_id").await.expect_status(200);
    let cstore = &list["items"][0];
    assert_eq!(cstore["external_id"], "IPP-CSTORE");
    assert_eq!((cstore["status"].as_str(), cstore["group_id"].clone()), (Some("to_interpret"), Value::Null));
    let id = cstore["id"].as_i64().expect("id");
    eventually("the whole study registered", Duration::from_secs(30), || async {
        admin.get(&format!("/api/patients/{id}")).await.expect_status(200)["studies"][0]["instances_count"] == 4
    })
    .await;
    let audit = admin.get("/api/audit?action=IMPORT").await.expect_status(200);
    let system: Vec<&Value> =
        audit["items"].as_array().expect("items").iter().filter(|e| e["user_id"].is_null() && e["actor_email"].is_null()).collect();
    assert_eq!(system.len(), 2, "audited as IMPORT by the system: {audit}");

    // The admin deletes the C-STORE patient's record (Orthanc keeps the images): a
    // follower that replayed the change log from the start would register it again.
    admin.delete(&format!("/api/patients/{id}")).await.expect_status(204);

    // After a restart the cursor is where it was: nothing replayed, nothing missed.
    d.restart_cohort().await;
    let admin = d.admin().await;
    let more = dicom::study(&StudySpec::new("IPP-AFTER").studies(1).series(1).instances(1).seed(23));
    dicom::storescu(&more.paths(), "127.0.0.1", d.orthanc.dicom_port, &d.orthanc.aet).expect("C-STORE");
    let ids = || async {
        let list = admin.get("/api/patients?sort=external_id").await.expect_status(200);
        list["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|p| p["external_id"].as_str().unwrap_or_default().to_string())
            .collect::<Vec<_>>()
    };
    eventually("the study pushed after the restart", Duration::from_secs(30), || async { ids().await.contains(&"IPP-AFTER".to_string()) })
        .await;
    // The follower has caught up with the newest change; give a replay time to show.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(ids().await, ["IPP-AFTER", "IPP-ORTHANC"], "the deleted record did not come back");
    let audit = admin.get("/api/audit?action=IMPORT").await.expect_status(200);
    assert_eq!(audit["total"], 3, "each study audited once: {audit}");

    // A patient deleted in Orthanc directly (its own API, or Orthanc Explorer) leaves
    // the registry, audited as a deletion by the system. Orthanc's change log says
    // nothing of it: the follower notices Orthanc's study count going down.
    let orthanc = d.orthanc_client().await;
    let gone = admin.get("/api/patients?q=IPP-ORTHANC").await.expect_status(200)["items"][0]["id"].as_i64().expect("IPP-ORTHANC");
    let orthanc_patients = orthanc.get("/patients?expand").await.expect_status(200);
    let orthanc_id = orthanc_patients
        .as_array()
        .expect("patients")
        .iter()
        .find(|p| p["MainDicomTags"]["PatientID"] == "IPP-ORTHANC")
        .and_then(|p| p["ID"].as_str())
        .expect("IPP-ORTHANC in Orthanc")
        .to_string();
    orthanc.req(Method::DELETE, &format!("/patients/{orthanc_id}")).without_csrf().send().await.expect_status(200);
    eventually("the patient deleted in Orthanc leaves the registry", Duration::from_secs(15), || async { ids().await == ["IPP-AFTER"] })
        .await;
    admin.get(&format!("/api/patients/{gone}")).await.expect_error(404, "not_found");
    let deletions = admin.get("/api/audit?action=DELETE").await.expect_status(200);
    let by_orthanc: Vec<&Value> = deletions["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|e| {
            e["resource_id"].as_str() == Some(gone.to_string().as_str()) && e["user_id"].is_null() && e["details"]["source"] == "orthanc"
        })
        .collect();
    assert_eq!(by_orthanc.len(), 1, "{deletions}");
}
per_deployment!(dicom_arriving_without_cohort_is_registered);

/// `AutoRegisterGroup`: patients that reach Orthanc without Cohort land in that group,
/// created on first use, and its members see them.
async fn auto_register_group(host: Host, backend: cohort_e2e::Backend) {
    let settings: BTreeMap<String, Value> = [("AutoRegisterGroup".to_string(), json!("Inbox"))].into_iter().collect();
    let d = Deployment::start_with(host, backend, settings).await;
    let admin = d.admin().await;
    let pushed = dicom::study(&StudySpec::new("IPP-INBOX").name("Inbox^Ines").studies(1).series(1).instances(2).seed(26));
    dicom::storescu(&pushed.paths(), "127.0.0.1", d.orthanc.dicom_port, &d.orthanc.aet).expect("C-STORE");
    let list = || async { admin.get("/api/patients").await.expect_status(200) };
    eventually("the pushed patient registered", Duration::from_secs(30), || async { list().await["total"] == 1 }).await;
    let groups = admin.get("/api/groups").await.expect_status(200);
    let inbox = groups["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|g| g["name"] == "Inbox")
        .unwrap_or_else(|| panic!("no Inbox group: {groups}"));
    let p = &list().await["items"][0];
    assert_eq!((p["external_id"].as_str(), p["group_id"].clone()), (Some("IPP-INBOX"), inbox["id"].clone()));
    admin
        .post("/api/users", &json!({"email": "inbox@e2e.test", "password": "user-password-1", "role": "user", "group_id": inbox["id"]}))
        .await
        .expect_status(201);
    let member = d.client();
    member.login("inbox@e2e.test", "user-password-1").await.expect_status(200);
    assert_eq!(member.get("/api/patients").await.expect_status(200)["total"], 1);
    // An import through Cohort still claims its patient for the importer's group.
    let r = import_file(&admin, &marc().files[0].path).await.expect_status(200);
    let marc_id = patient_id(&r, "IPP-MARC");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(admin.get(&format!("/api/patients/{marc_id}")).await.expect_status(200)["group_id"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_register_group_sidecar_sqlite() {
    auto_register_group(Host::Sidecar, cohort_e2e::Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_register_group_plugin_postgres() {
    if cohort_e2e::postgres_skipped() {
        return;
    }
    auto_register_group(Host::Plugin, cohort_e2e::Backend::Postgres).await;
}

async fn search_pages_and_totals(d: Deployment) {
    let admin = d.admin().await;
    let g = admin.post("/api/groups", &json!({"name": "Pages"})).await.expect_status(201)["id"].clone();
    for i in 0..30 {
        let group = if i % 3 == 0 { Value::Null } else { g.clone() };
        let status = if i % 2 == 0 { "validated" } else { "to_interpret" };
        admin
            .post("/api/patients", &json!({"external_id": format!("PG-{i:02}"), "last_name": "Pagination", "first_name": "Zoé", "status": status, "group_id": group}))
            .await
            .expect_status(201);
    }
    admin.post("/api/patients", &json!({"external_id": "OTHER-1", "last_name": "Autre"})).await.expect_status(201);
    for q in ["pagination", "PAGINAT", "zoe", "pg-", "pa"] {
        let p2 = admin.get(&format!("/api/patients?q={q}&page=2&page_size=20&sort=external_id")).await.expect_status(200);
        assert_eq!((p2["total"].as_i64(), p2["items"].as_array().map(Vec::len)), (Some(30), Some(10)), "q={q}");
        assert_eq!(p2["items"][0]["external_id"], "PG-20", "q={q}");
        let past = admin.get(&format!("/api/patients?q={q}&page=4&page_size=20")).await.expect_status(200);
        assert_eq!(
            (past["total"].as_i64(), past["items"].as_array().map(Vec::len)),
            (Some(30), Some(0)),
            "q={q}: the total survives past the last page"
        );
    }
    let validated = admin.get("/api/patients?q=pagination&status=validated&page_size=50").await.expect_status(200);
    assert_eq!(validated["total"], 15);
    assert_eq!(admin.get("/api/patients?page_size=1").await.expect_status(200)["total"], 31);
    admin
        .post("/api/users", &json!({"email": "pages@e2e.test", "password": "user-password-1", "role": "user", "group_id": g}))
        .await
        .expect_status(201);
    let user = d.client();
    user.login("pages@e2e.test", "user-password-1").await.expect_status(200);
    let mine = user.get("/api/patients?q=pagination&page_size=50").await.expect_status(200);
    assert_eq!(mine["total"], 20, "only the group's patients");
    let mine_validated = user.get("/api/patients?q=pagi&status=validated").await.expect_status(200);
    assert_eq!(mine_validated["total"], 10);
    assert_eq!(user.get("/api/patients").await.expect_status(200)["total"], 20);

    // Lists without a search: the first page agrees with the pages after it, in every
    // scope, status and order, and an empty page keeps its total.
    let ids = |v: &Value| {
        v["items"].as_array().expect("items").iter().map(|p| p["external_id"].as_str().unwrap_or("").to_string()).collect::<Vec<_>>()
    };
    let first = admin.get("/api/patients?sort=external_id&page_size=20").await.expect_status(200);
    let second = admin.get("/api/patients?sort=external_id&page=2&page_size=20").await.expect_status(200);
    assert_eq!((first["total"].as_i64(), second["total"].as_i64()), (Some(31), Some(31)));
    let all: Vec<String> = ids(&first).into_iter().chain(ids(&second)).collect();
    let mut expected: Vec<String> = (0..30).map(|i| format!("PG-{i:02}")).chain(["OTHER-1".to_string()]).collect();
    expected.sort();
    assert_eq!(all, expected, "two pages in external_id order");
    let desc = admin.get("/api/patients?sort=-external_id&page_size=3").await.expect_status(200);
    assert_eq!(ids(&desc), ["PG-29", "PG-28", "PG-27"]);
    let mine_first = user.get("/api/patients?status=to_interpret&sort=external_id&page_size=4").await.expect_status(200);
    assert_eq!(mine_first["total"], 10, "the group's to_interpret patients");
    assert_eq!(ids(&mine_first), ["PG-01", "PG-05", "PG-07", "PG-11"]);
    let whole = user.get("/api/patients?page_size=100").await.expect_status(200);
    assert_eq!((whole["total"].as_i64(), whole["items"].as_array().map(Vec::len)), (Some(20), Some(20)));
    let none = admin.get("/api/patients?status=archived").await.expect_status(200);
    assert_eq!((none["total"].as_i64(), none["items"].as_array().map(Vec::len)), (Some(0), Some(0)), "an empty first page");

    // Every way a list reads its rows (a first page in one statement, a later page, a
    // search, a user's scope) gives each patient field for field as its own page does.
    admin
        .post(
            "/api/patients",
            &json!({"external_id": "FULL-1", "first_name": "Ann", "last_name": "Full", "date_of_birth": "1950-01-31", "status": "in_progress", "group_id": g}),
        )
        .await
        .expect_status(201);
    for (who, path) in [
        (&admin, "/api/patients?page_size=5"),
        (&admin, "/api/patients?page=2&page_size=5&sort=last_name"),
        (&admin, "/api/patients?q=full"),
        (&admin, "/api/patients?q=pagination&page=2&page_size=7"),
        (&user, "/api/patients?sort=-created_at&page_size=3"),
    ] {
        let page = who.get(path).await.expect_status(200);
        let items = page["items"].as_array().expect("items");
        assert!(!items.is_empty(), "{path}");
        for item in items {
            let mut own = who.get(&format!("/api/patients/{}", item["id"])).await.expect_status(200);
            let own = own.as_object_mut().expect("a patient");
            own.remove("studies");
            own.remove("pseudonym");
            assert_eq!(item.as_object().expect("an item"), &*own, "{path}");
        }
    }
}
per_deployment!(search_pages_and_totals);

/// On PostgreSQL each host folds the deltas and vacuums the tables every write churns
/// (the counters, their deltas and the change log) itself, every 10 s, whether
/// autovacuum is on or not: where it was off, a 1M-patient build left 163,066 dead
/// deltas and every list's count took 51 ms, and 986,699 dead changes that each fold
/// read again (47–110 ms in a writer's transaction). `last_vacuum` is the manual kind,
/// never set by autovacuum.
async fn counters_are_vacuumed_on_postgres(host: Host) {
    let d = Deployment::start(host, cohort_e2e::Backend::Postgres).await;
    let admin = d.admin().await;
    admin.post("/api/patients", &json!({"external_id": "VAC-1", "last_name": "Vacuum"})).await.expect_status(201);
    let pool = sqlx::PgPool::connect(&d.db.url).await.expect("connect");
    let sql = "SELECT COUNT(*) FROM pg_stat_user_tables \
               WHERE relname IN ('patient_count_deltas', 'patient_counts', 'patient_changes', 'patient_changes_pruned') \
               AND last_vacuum IS NOT NULL";
    eventually("the counters' tables and the change log vacuumed", Duration::from_secs(30), || async {
        sqlx::query_scalar::<_, i64>(sql).fetch_one(&pool).await.expect("stats") == 4
    })
    .await;
    // The same rounds fold the deltas that writes leave between two 256th ones (here the
    // creation's one), so an idle registry's lists sum the counters alone.
    eventually("the creation's delta folded", Duration::from_secs(30), || async {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM patient_count_deltas").fetch_one(&pool).await.expect("deltas") == 0
    })
    .await;
    assert_eq!(admin.get("/api/patients").await.expect_status(200)["total"], 1);

    // A burst of writes leaves the deltas' file large and mostly empty, which a plain
    // vacuum keeps while a live row sits on its last page (as after the 1M build, where
    // reading 1,445 pages for 154 rows halved the lists' rate): the host rewrites it.
    // The deltas added here count nothing (n = 0, gen = 0), so no total changes.
    for sql in [
        "INSERT INTO patient_count_deltas (group_key, status, n, gen) SELECT 0, 'to_interpret', 0, 0 FROM generate_series(1, 100000)",
        "INSERT INTO patient_count_deltas (group_key, status, n, gen) VALUES (0, 'to_interpret', 0, 0)",
        "DELETE FROM patient_count_deltas WHERE n = 0 AND gen = 0 AND id < (SELECT MAX(id) FROM patient_count_deltas)",
    ] {
        sqlx::query(sql).execute(&pool).await.expect("bloat the deltas");
    }
    let pages = || async {
        sqlx::query_scalar::<_, i64>("SELECT pg_relation_size('patient_count_deltas') / 8192").fetch_one(&pool).await.expect("size")
    };
    let bloated = pages().await;
    assert!(bloated > 400, "the deltas hold {bloated} pages");
    eventually("the deltas' table rewritten", Duration::from_secs(30), || async { pages().await < 16 }).await;
    assert_eq!(admin.get("/api/patients").await.expect_status(200)["total"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_are_vacuumed_sidecar_postgres() {
    counters_are_vacuumed_on_postgres(Host::Sidecar).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_are_vacuumed_plugin_postgres() {
    counters_are_vacuumed_on_postgres(Host::Plugin).await;
}

/// `cohort_orthanc_storage_reads_total`.
async fn storage_reads(admin: &Client) -> f64 {
    metric(admin, "cohort_orthanc_storage_reads_total").await
}

/// A counter of `/api/metrics` without labels.
async fn metric(admin: &Client, name: &str) -> f64 {
    cohort_e2e::sample(&cohort_e2e::metrics_text(admin).await, name).unwrap_or_else(|| panic!("no {name}"))
}

/// Every instance Orthanc holds, fetched `times` times through Cohort's image route: each
/// answer is the very bytes of Orthanc's own file route, as DICOM. Returns their ids.
async fn images_are_orthancs_files(admin: &Client, orthanc: &Client, times: usize) -> Vec<String> {
    let ids: Vec<String> = serde_json::from_value(orthanc.get("/instances").await.expect_status(200)).expect("ids");
    for id in &ids {
        let native = orthanc.get(&format!("/instances/{id}/file")).await;
        assert_eq!(native.status.as_u16(), 200);
        for _ in 0..times {
            let r = admin.get(&format!("/api/patients/images/{id}")).await;
            assert_eq!(r.status.as_u16(), 200);
            assert!(r.body == native.body, "{id}: {} bytes, Orthanc's {}", r.body.len(), native.body.len());
            assert_eq!(r.header("content-type"), Some("application/dicom"));
        }
    }
    ids
}

/// Images read in Orthanc's storage directory (the plugin: Orthanc's own
/// `StorageDirectory`, found in its configuration; the sidecar: `OrthancStorageDirectory`)
/// are the very bytes of Orthanc's own file route, read there when stored uncompressed and
/// through Orthanc when compressed, with every check kept.
async fn images_with_orthancs_storage(host: Host, backend: Backend, compressed: bool) {
    let mut settings = BTreeMap::new();
    if host == Host::Sidecar {
        settings.insert("OrthancStorageDirectory".to_string(), json!(ORTHANC_STORAGE));
    }
    if compressed {
        settings.insert("Orthanc:StorageCompression".to_string(), json!(true));
    }
    let d = Deployment::start_with(host, backend, settings).await;
    let admin = d.admin().await;
    // 39 KB instances (the sidecar reads them in one call) and a 512 KB one (it streams
    // it in chunks); the plugin reads each whole.
    for (ipp, side, instances, seed) in [("IPP-STORED-S", 136, 2, 61), ("IPP-STORED-L", 512, 1, 62)] {
        let files = dicom::study(&StudySpec::new(ipp).studies(1).series(1).instances(instances).size(side, side).seed(seed));
        let zip = dicom::zip(&files.paths(), ZipOptions::default());
        import(&admin, "application/zip", zip.bytes()).await.expect_status(200);
    }
    let orthanc = d.orthanc_client().await;
    let ids = images_are_orthancs_files(&admin, &orthanc, 2).await;
    assert_eq!(ids.len(), 3);
    // Each file read twice: the sidecar reads it each time; the plugin once, then answers
    // its copy kept in memory (Orthanc's MaximumStorageCacheSize, 128 MB by default).
    let (reads, kept) = match (compressed, host) {
        (true, _) => (0.0, 0.0),
        (false, Host::Sidecar) => (6.0, 0.0),
        (false, Host::Plugin) => (3.0, 3.0),
    };
    assert_eq!(storage_reads(&admin).await, reads);
    assert_eq!(metric(&admin, "cohort_orthanc_storage_kept_hits_total").await, kept);

    // Another group's user still sees nothing of them.
    let g = admin.post("/api/groups", &json!({"name": "Elsewhere"})).await.expect_status(201)["id"].clone();
    let user = json!({"email": "elsewhere@e2e.test", "password": "user-password-1", "role": "user", "group_id": g});
    admin.post("/api/users", &user).await.expect_status(201);
    let other = d.client();
    other.login("elsewhere@e2e.test", "user-password-1").await.expect_status(200);
    other.get(&format!("/api/patients/images/{}", ids[0])).await.expect_error(404, "not_found");

    if !compressed {
        // A file removed behind Orthanc's back: Cohort asks Orthanc again and answers
        // what Orthanc's own route answers (Orthanc 1.10 may still hold the file in its
        // storage cache).
        let info = orthanc.get(&format!("/instances/{}/attachments/dicom/info", ids[0])).await.expect_status(200);
        let uuid = info["Uuid"].as_str().expect("uuid");
        let path = d.orthanc.storage_directory().join(&uuid[0..2]).join(&uuid[2..4]).join(uuid);
        std::fs::remove_file(&path).expect("remove the stored file");
        let r = admin.get(&format!("/api/patients/images/{}", ids[0])).await;
        let native = orthanc.get(&format!("/instances/{}/file", ids[0])).await;
        assert_eq!(r.status.as_u16() == 200, native.status.as_u16() == 200, "Cohort {}, Orthanc {}", r.status, native.status);
        if r.status.as_u16() == 200 {
            assert!(r.body == native.body);
        }
        assert_eq!(storage_reads(&admin).await, reads, "a removed file was read in the storage directory");
    }
}

async fn images_read_in_orthancs_storage_sidecar(backend: Backend) {
    images_with_orthancs_storage(Host::Sidecar, backend, false).await;
}
per_backend!(images_read_in_orthancs_storage_sidecar);

async fn images_read_in_orthancs_storage_plugin(backend: Backend) {
    images_with_orthancs_storage(Host::Plugin, backend, false).await;
}
per_backend!(images_read_in_orthancs_storage_plugin);

async fn compressed_storage_is_read_through_orthanc_sidecar(backend: Backend) {
    images_with_orthancs_storage(Host::Sidecar, backend, true).await;
}
per_backend!(compressed_storage_is_read_through_orthanc_sidecar);

async fn compressed_storage_is_read_through_orthanc_plugin(backend: Backend) {
    images_with_orthancs_storage(Host::Plugin, backend, true).await;
}
per_backend!(compressed_storage_is_read_through_orthanc_plugin);

/// Orthanc reads a relative `StorageDirectory` against the directory of its configuration,
/// not its working directory (the tests' Orthanc runs elsewhere than its configuration):
/// the plugin looks for the files where Orthanc put them, and reads them there. With
/// Orthanc's storage cache off (`MaximumStorageCacheSize` 0), it reads them every time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relative_storage_directory_is_read_where_orthanc_puts_it() {
    let settings = BTreeMap::from([
        (format!("{ORTHANC_SETTING}StorageDirectory"), json!("relative-storage")),
        (format!("{ORTHANC_SETTING}IndexDirectory"), json!("relative-storage")),
        // And without Orthanc's storage cache: the plugin keeps no file in memory either.
        (format!("{ORTHANC_SETTING}MaximumStorageCacheSize"), json!(0)),
    ]);
    let d = Deployment::start_with(Host::Plugin, Backend::Sqlite, settings).await;
    let admin = d.admin().await;
    let files = dicom::study(&StudySpec::new("IPP-STORED-REL").studies(1).series(1).instances(2).size(136, 136).seed(63));
    import(&admin, "application/zip", dicom::zip(&files.paths(), ZipOptions::default()).bytes()).await.expect_status(200);
    let stored = d.orthanc.storage_directory().with_file_name("relative-storage");
    assert!(stored.join("index").is_file(), "Orthanc's index is not in {}", stored.display());
    let orthanc = d.orthanc_client().await;
    assert_eq!(images_are_orthancs_files(&admin, &orthanc, 2).await.len(), 2);
    assert_eq!(storage_reads(&admin).await, 4.0, "the files were not read in {}", stored.display());
    assert_eq!(metric(&admin, "cohort_orthanc_storage_kept_hits_total").await, 0.0);
}
