//! What only the sidecar deployment does: multipart uploads, outliving an Orthanc that
//! goes down, and `cohort import` from the command line. (Reading instance files in
//! Orthanc's storage directory, which both hosts do, is tested in `patients.rs`.)

use std::process::Stdio;
use std::time::{Duration, Instant};

use cohort_e2e::deploy::sidecar_command;
use cohort_e2e::dicom::{self, Generated, StudySpec, ZipOptions};
use cohort_e2e::{per_backend, Backend, Client, Deployment, Host};
use reqwest::Method;
use serde_json::json;

fn multipart(parts: &[(&str, &str, Vec<u8>)]) -> (String, Vec<u8>) {
    let boundary = "cohort-e2e-boundary-7d1f";
    let mut body = Vec::new();
    for (name, filename, data) in parts {
        body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes());
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// Imports `files` as one ZIP; returns the import's report (the answer must be 200).
async fn import_zip(admin: &Client, files: &Generated) -> serde_json::Value {
    admin
        .req(Method::POST, "/api/patients/import")
        .body("application/zip", dicom::zip(&files.paths(), ZipOptions::default()).bytes())
        .send()
        .await
        .expect_status(200)
}

async fn multipart_uploads(backend: Backend) {
    let d = Deployment::start(Host::Sidecar, backend).await;
    let admin = d.admin().await;
    let a = dicom::study(&StudySpec::new("IPP-MP-A").studies(1).series(2).instances(2).seed(41));
    let b = dicom::study(&StudySpec::new("IPP-MP-B").studies(1).series(1).instances(1).seed(42));
    let zip = dicom::zip(&a.paths(), ZipOptions::default());
    let (ct, body) = multipart(&[
        ("files", "a.zip", zip.bytes()),
        ("files", "b.dcm", std::fs::read(&b.files[0].path).expect("read")),
        ("files", "readme.txt", b"not DICOM".to_vec()),
    ]);
    let r = admin.req(Method::POST, "/api/patients/import").body(&ct, body).send().await.expect_status(200);
    assert_eq!(r["instances"], json!({"received": 5, "stored": 5, "already_stored": 0, "failed": 0}), "{r}");
    assert_eq!(r["skipped"], 1);
    assert_eq!(r["errors"][0]["file"], "readme.txt");
    assert_eq!(r["patients"].as_array().map(Vec::len), Some(2));
    let (ct, body) = multipart(&[]);
    admin.req(Method::POST, "/api/patients/import").body(&ct, body).send().await.expect_error(400, "empty_body");
}
per_backend!(multipart_uploads);

async fn orthanc_down_and_back(backend: Backend) {
    let mut d = Deployment::start(Host::Sidecar, backend).await;
    let admin = d.admin().await;
    let files = dicom::study(&StudySpec::new("IPP-DOWN").studies(1).series(1).instances(2).seed(43));
    let r = import_zip(&admin, &files).await;
    let id = r["patients"][0]["id"].as_i64().expect("id");
    let instance = admin.get(&format!("/api/patients/{id}/instances")).await.expect_status(200)[0]["id"].as_str().expect("id").to_string();

    d.orthanc.kill();
    let health = d.client().get("/api/health").await;
    assert_eq!(health.status.as_u16(), 503);
    assert_eq!(health.json(), json!({"status": "degraded", "database": "ok", "orthanc": "unavailable"}));
    // What needs Orthanc says so; the rest keeps working.
    admin.get(&format!("/api/patients/images/{instance}")).await.expect_error(503, "orthanc_unavailable");
    admin.get(&format!("/api/patients/{id}/export")).await.expect_error(503, "orthanc_unavailable");
    admin
        .req(Method::POST, "/api/patients/import")
        .body("application/dicom", std::fs::read(&files.files[0].path).expect("read"))
        .send()
        .await
        .expect_error(503, "orthanc_unavailable");
    // A whole archive stops at the first failure, without hanging.
    let many = dicom::study(&StudySpec::new("IPP-DOWN-ZIP").studies(1).series(2).instances(10).seed(46));
    let started = Instant::now();
    admin
        .req(Method::POST, "/api/patients/import")
        .body("application/zip", dicom::zip(&many.paths(), ZipOptions::default()).bytes())
        .send()
        .await
        .expect_error(503, "orthanc_unavailable");
    assert!(started.elapsed() < Duration::from_secs(15), "the import hung: {:?}", started.elapsed());
    admin.get("/api/stats").await.expect_error(503, "orthanc_unavailable");
    assert_eq!(admin.get("/api/patients").await.expect_status(200)["total"], 1);
    admin.get(&format!("/api/patients/{id}")).await.expect_status(200);
    admin.put(&format!("/api/patients/{id}"), &json!({"status": "in_progress"})).await.expect_status(200);
    d.client().login(cohort_e2e::ADMIN_EMAIL, cohort_e2e::ADMIN_PASSWORD).await.expect_status(200);

    // Orthanc comes back: the sidecar recovers by itself.
    d.orthanc.start_again().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while d.client().get("/api/health").await.status != 200 {
        assert!(Instant::now() < deadline, "the sidecar did not notice Orthanc came back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let image = admin.get(&format!("/api/patients/images/{instance}")).await;
    assert_eq!(image.status.as_u16(), 200);
    admin.get("/api/stats").await.expect_status(200);
}
per_backend!(orthanc_down_and_back);

async fn command_line_import(backend: Backend) {
    let d = Deployment::start(Host::Sidecar, backend).await;
    let admin = d.admin().await;
    admin.post("/api/groups", &json!({"name": "Imported"})).await.expect_status(201);
    let folder = dicom::study(&StudySpec::new("IPP-CLI").name("Ligne^Commande").studies(2).series(2).instances(2).seed(44));
    let zipped = dicom::zip(
        &dicom::study(&StudySpec::new("IPP-CLI-ZIP").studies(1).series(1).instances(3).seed(45)).paths(),
        ZipOptions { junk: true, ..ZipOptions::default() },
    );
    std::fs::copy(&zipped.path, folder.dir.path().join("extra.zip")).expect("copy zip into the folder");

    let orthanc = d.orthanc.url();
    let run = |args: &[&str]| {
        sidecar_command(&d.db.url, &orthanc, &Default::default())
            .arg("import")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .expect("cohort import")
    };
    let out = run(&[folder.dir.path().to_str().expect("path"), "--group", "Imported"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("11 received, 11 stored, 0 already stored, 0 failed"), "{stdout}");
    assert!(stdout.contains("patient IPP-CLI ") && stdout.contains("patient IPP-CLI-ZIP "), "{stdout}");
    let list = admin.get("/api/patients?sort=external_id").await.expect_status(200);
    assert_eq!(list["total"], 2);
    let group = admin.get("/api/groups").await.expect_status(200)["items"][0]["id"].clone();
    assert!(list["items"].as_array().expect("items").iter().all(|p| p["group_id"] == group));
    assert_eq!(list["items"][0]["last_name"], "Ligne");

    // Again: all already stored. A missing path and a folder with no DICOM fail clearly.
    let again = run(&[folder.dir.path().to_str().expect("path")]);
    assert!(String::from_utf8_lossy(&again.stdout).contains("0 stored, 11 already stored"));
    let missing = run(&["/no/such/folder"]);
    assert!(!missing.status.success());
    let empty = tempfile::tempdir().expect("tmp");
    std::fs::write(empty.path().join("notes.txt"), "nothing").expect("write");
    let none = run(&[empty.path().to_str().expect("path")]);
    assert!(!none.status.success());
    assert!(String::from_utf8_lossy(&none.stderr).contains("is DICOM"));
    let audit = admin.get("/api/audit?action=IMPORT").await.expect_status(200);
    assert!(audit["items"].as_array().expect("items").iter().any(|e| e["user_id"].is_null() && e["details"]["instances"]["stored"] == 11));
}
per_backend!(command_line_import);

/// However many clients it has, the sidecar keeps about `OrthancConnections` connections
/// to Orthanc (each one holds one of Orthanc's HTTP threads for as long as it is open):
/// with 2 of them (one for requests in flight, one idle), Orthanc on 4 threads, and 48
/// clients reading files, previews and exports and importing through it, every request
/// is answered and the sidecar never holds more than 4 connections (2, plus connections
/// being handed back to the pool as others open). It used to open one per request in
/// flight: 51 here, ~1,000 in the soak, where Orthanc's accept queue overflowed and
/// connects timed out (503). With one place, an import whose sends waited for it unpolled
/// while the import recorded a result through Orthanc used to stall (503 after 10 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connections_to_orthanc_are_bounded() {
    let settings = [("OrthancConnections".to_string(), json!(2)), ("Orthanc:HttpThreadsCount".to_string(), json!(4))].into();
    let d = Deployment::start_with(Host::Sidecar, Backend::Sqlite, settings).await;
    let admin = d.admin().await;
    let r = import_zip(&admin, &dicom::study(&StudySpec::new("IPP-CONN").studies(1).series(1).instances(4).seed(44))).await;
    let id = r["patients"][0]["id"].as_i64().expect("id");
    let instances: Vec<String> = admin
        .get(&format!("/api/patients/{id}/instances"))
        .await
        .expect_status(200)
        .as_array()
        .expect("instances")
        .iter()
        .map(|i| i["id"].as_str().expect("id").to_string())
        .collect();

    let more: Vec<Vec<u8>> = (0..8)
        .map(|k| {
            let files = dicom::study(&StudySpec::new(&format!("IPP-CONN-{k}")).studies(1).series(1).instances(3).seed(60 + k));
            dicom::zip(&files.paths(), ZipOptions::default()).bytes()
        })
        .collect();
    let pid = d.sidecar.as_ref().expect("sidecar").pid();
    let port = d.orthanc.http_port;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut most = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                most = most.max(connections_to(pid, port));
                std::thread::sleep(Duration::from_millis(2));
            }
            most
        })
    };
    let started = Instant::now();
    let clients: Vec<_> = (0..48)
        .map(|i| {
            let (admin, instances, zip) = (admin.clone(), instances.clone(), more.get(i).cloned());
            tokio::spawn(async move {
                let mut answers = Vec::new();
                if let Some(zip) = zip {
                    let r = admin.req(Method::POST, "/api/patients/import").body("application/zip", zip).send().await;
                    answers.push(("import".to_string(), r.status.as_u16(), String::from_utf8_lossy(&r.body).chars().take(200).collect()));
                }
                for k in 0..10 {
                    let instance = &instances[(i + k) % instances.len()];
                    let path = match (i + k) % 3 {
                        0 => format!("/api/patients/images/{instance}"),
                        1 => format!("/api/patients/images/{instance}/preview"),
                        _ => format!("/api/patients/{id}/export"),
                    };
                    let r = admin.get(&path).await;
                    answers.push((path, r.status.as_u16(), String::from_utf8_lossy(&r.body).chars().take(200).collect::<String>()));
                }
                answers
            })
        })
        .collect();
    let mut answered = 0;
    for client in clients {
        for (path, status, body) in client.await.expect("client") {
            assert_eq!(status, 200, "{path}: {body}");
            answered += 1;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let most = sampler.join().expect("sampler");
    assert_eq!(answered, 48 * 10 + 8);
    eprintln!("488 requests in {:?}, at most {most} connections to Orthanc at once", started.elapsed());
    assert!(most >= 1, "the sampler saw no connection to Orthanc");
    assert!(most <= 4, "{most} connections to Orthanc at once with OrthancConnections = 2");
}

/// The sidecar's connections to Orthanc, opening or open (from `/proc`: the sockets among
/// its descriptors whose peer is Orthanc's HTTP port, in SYN-SENT or ESTABLISHED).
fn connections_to(pid: u32, port: u16) -> usize {
    let inodes: std::collections::BTreeSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter_map(|target| target.to_str()?.strip_prefix("socket:[")?.strip_suffix(']').map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let peer = format!(":{port:04X}");
    ["tcp", "tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).ok())
        .flat_map(|text| text.lines().skip(1).map(str::to_string).collect::<Vec<_>>())
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.len() > 9 && fields[2].ends_with(&peer) && matches!(fields[3], "01" | "02") && inodes.contains(fields[9])
        })
        .count()
}
