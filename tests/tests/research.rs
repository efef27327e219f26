//! Research access (issue 10) against each deployment: personal API tokens (scopes,
//! session-only routes, revocation, expiry, death with their user, the plugin's native
//! routes, audit), the `cohort token create` and remote `cohort import` commands, the
//! audit export, and de-identified exports of real files (pydicom's samples and a
//! generated hospital-like study, checked byte by byte and with pydicom by
//! `tests/dicom/deid.py`).

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use cohort_e2e::deploy::sidecar_command;
use cohort_e2e::dicom::{self, Generated, StudySpec};
use cohort_e2e::{per_deployment, Backend, Client, Deployment, Host, TestDatabase};
use reqwest::Method;
use serde_json::{json, Value};
use sqlx::Connection;

const ALICE: &str = "alice@cohort.test";
const ALICE_PW: &str = "alice-password-1";

fn marc() -> &'static Generated {
    static G: OnceLock<Generated> = OnceLock::new();
    G.get_or_init(|| dicom::study(&StudySpec::new("IPP-TOKEN-MARC").name("Martin^Marc").studies(1).series(1).instances(2).seed(31)))
}

/// Runs one statement on the deployment's database, behind Cohort's back.
async fn sql(db: &TestDatabase, statement: &str) {
    match db.backend {
        Backend::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(&db.url).await.expect("sqlite");
            sqlx::query(statement).execute(&mut c).await.expect("sql");
        }
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(&db.url).await.expect("postgres");
            sqlx::query(statement).execute(&mut c).await.expect("sql");
        }
    }
}

async fn new_token(c: &Client, name: &str, scope: &str) -> (i64, String) {
    let body = json!({"name": name, "scope": scope, "expires_in_days": 30, "current_password": ALICE_PW});
    let t = c.post("/api/users/me/tokens", &body).await.expect_status(201);
    (t["id"].as_i64().expect("id"), t["token"].as_str().expect("token").to_string())
}

async fn audit_rows(admin: &Client, action: &str) -> Vec<Value> {
    admin.get(&format!("/api/audit?action={action}&page_size=200")).await.expect_status(200)["items"].as_array().expect("items").clone()
}

async fn api_tokens(d: Deployment) {
    let admin = d.admin().await;
    let group = admin.post("/api/groups", &json!({"name": "Tokens"})).await.expect_status(201);
    let alice_id = admin
        .post("/api/users", &json!({"email": ALICE, "password": ALICE_PW, "role": "user", "group_id": group["id"]}))
        .await
        .expect_status(201)["id"]
        .as_i64()
        .expect("id");
    let alice = d.client();
    alice.login(ALICE, ALICE_PW).await.expect_status(200);

    // Creating a token takes the password, a known scope, 1 to 365 days, and no other field.
    let good = json!({"name": "nightly", "scope": "read", "expires_in_days": 30, "current_password": ALICE_PW});
    let mut missing = good.clone();
    missing.as_object_mut().expect("object").remove("current_password");
    alice.post("/api/users/me/tokens", &missing).await.expect_error(422, "validation_error");
    let wrong = json!({"name": "nightly", "scope": "read", "expires_in_days": 30, "current_password": "not-her-password"});
    alice.post("/api/users/me/tokens", &wrong).await.expect_error(403, "invalid_current_password");
    for (field, value) in [("scope", json!("admin")), ("expires_in_days", json!(0)), ("expires_in_days", json!(366)), ("name", json!(""))] {
        let mut bad = good.clone();
        bad[field] = value;
        let e = alice.post("/api/users/me/tokens", &bad).await.expect_error(422, "validation_error");
        assert!(e["error"]["message"].as_str().unwrap_or_default().contains(field), "{field}: {e}");
    }
    let mut extra = good.clone();
    extra["scopes"] = json!(["write"]);
    alice.post("/api/users/me/tokens", &extra).await.expect_error(422, "validation_error");
    alice.req(Method::POST, "/api/users/me/tokens").json(&good).without_csrf().send().await.expect_error(403, "csrf_failed");

    let (read_id, read) = new_token(&alice, "reader", "read").await;
    let (write_id, write) = new_token(&alice, "importer", "write").await;
    assert!(read.starts_with("coh_") && read.len() == 47, "{read}");
    assert_ne!(read, write);
    let mine = alice.get("/api/users/me/tokens").await.expect_status(200);
    let names: Vec<&str> = mine.as_array().expect("list").iter().filter_map(|t| t["name"].as_str()).collect();
    assert_eq!(names, ["importer", "reader"], "newest first");
    assert!(!mine.to_string().contains(&read[4..]), "the secret is shown once only");
    assert!(mine[0].get("token").is_none() && mine[0].get("token_hash").is_none());

    // A read token reads, and nothing else.
    let reader = d.client().with_bearer(&read);
    assert_eq!(reader.get("/api/auth/me").await.expect_status(200)["email"], ALICE);
    reader.get("/api/patients").await.expect_status(200);
    let r = reader
        .req(Method::POST, "/api/patients/import")
        .body("application/dicom", std::fs::read(&marc().files[0].path).expect("read"))
        .send()
        .await;
    r.expect_error(403, "insufficient_scope");
    reader.get("/api/users/me/tokens").await.expect_error(403, "session_required");

    // A write token does what Alice may do (an import into her group), except managing
    // tokens, sessions and the profile.
    let writer = d.client().with_bearer(&write);
    for f in &marc().files {
        let r =
            writer.req(Method::POST, "/api/patients/import").body("application/dicom", std::fs::read(&f.path).expect("read")).send().await;
        r.expect_status(200);
    }
    let patients = writer.get("/api/patients?q=IPP-TOKEN").await.expect_status(200);
    assert_eq!(patients["total"], 1);
    assert_eq!(patients["items"][0]["group_id"], group["id"]);
    writer.post("/api/users/me/tokens", &good).await.expect_error(403, "session_required");
    writer.get("/api/auth/sessions").await.expect_error(403, "session_required");
    writer.put("/api/users/me/profile", &json!({"first_name": "Mallory"})).await.expect_error(403, "session_required");
    writer.get("/api/users").await.expect_error(403, "forbidden");

    // Requests made with a token are audited with its id.
    let imports = audit_rows(&admin, "IMPORT").await;
    assert!(imports.iter().any(|r| r["details"]["token_id"] == write_id && r["actor_email"] == ALICE), "{imports:?}");
    let denied = audit_rows(&admin, "ACCESS_DENIED").await;
    assert!(denied.iter().any(|r| r["details"]["reason"] == "insufficient_scope" && r["details"]["token_id"] == read_id), "{denied:?}");

    // Malformed and unknown tokens.
    for bad in ["coh_", "coh_short", &format!("coh_{}", "A".repeat(43)), &format!("{}x", &read[..46])] {
        d.client().with_bearer(bad).get("/api/auth/me").await.expect_error(401, "invalid_token");
    }
    // A token in the access cookie is not a session.
    let cookie_thief = d.client();
    cookie_thief.set_cookie("/", "access_token", &read);
    cookie_thief.get("/api/auth/me").await.expect_error(401, "invalid_token");

    // last_used_at is recorded.
    let listed = admin.get(&format!("/api/tokens?user_id={alice_id}")).await.expect_status(200);
    assert_eq!(listed["total"], 2);
    assert!(
        listed["items"].as_array().expect("items").iter().all(|t| t["last_used_at"].is_string() && t["user_id"] == alice_id),
        "{listed}"
    );

    // Admins manage tokens with a session only; an admin's own token cannot.
    let admin_token = {
        let body = json!({"name": "admin script", "scope": "write", "expires_in_days": 1, "current_password": cohort_e2e::ADMIN_PASSWORD});
        admin.post("/api/users/me/tokens", &body).await.expect_status(201)["token"].as_str().expect("token").to_string()
    };
    let admin_script = d.client().with_bearer(&admin_token);
    admin_script.get("/api/tokens").await.expect_error(403, "session_required");
    admin_script.get("/api/users").await.expect_status(200);

    // Revocation takes effect at once; another user's token is not found.
    admin.delete(&format!("/api/users/me/tokens/{read_id}")).await.expect_error(404, "not_found");
    alice.delete(&format!("/api/users/me/tokens/{read_id}")).await.expect_status(204);
    reader.get("/api/auth/me").await.expect_error(401, "token_revoked");
    alice.delete(&format!("/api/users/me/tokens/{read_id}")).await.expect_error(404, "not_found");
    let revokes = audit_rows(&admin, "TOKEN_REVOKE").await;
    assert_eq!(revokes.len(), 1);
    assert_eq!((revokes[0]["resource_id"].as_str(), revokes[0]["actor_email"].as_str()), (Some(read_id.to_string().as_str()), Some(ALICE)));
    let creates = audit_rows(&admin, "TOKEN_CREATE").await;
    assert_eq!(creates.len(), 3);
    assert!(!creates.iter().any(|r| r.to_string().contains(&write[4..])), "the audit trail never holds a secret");

    // An expired token stops working (once the 2 s cache has passed).
    let (exp_id, expiring) = new_token(&alice, "expiring", "read").await;
    let expiring_client = d.client().with_bearer(&expiring);
    expiring_client.get("/api/auth/me").await.expect_status(200);
    sql(&d.db, &format!("UPDATE api_tokens SET expires_at = '2001-01-01T00:00:00Z' WHERE id = {exp_id}")).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    expiring_client.get("/api/auth/me").await.expect_error(401, "token_expired");

    // The plugin's native routes: an admin's write token passes, a read token for GET
    // only; a user's token never.
    if d.host == Host::Plugin {
        let orthanc = Client::new(&d.orthanc_url());
        orthanc.req(Method::GET, "/system").bearer(&admin_token).send().await.expect_status(200);
        let find = json!({"Level": "Patient", "Query": {}});
        orthanc.req(Method::POST, "/tools/find").bearer(&admin_token).json(&find).send().await.expect_status(200);
        let admin_read = {
            let body =
                json!({"name": "admin reader", "scope": "read", "expires_in_days": 1, "current_password": cohort_e2e::ADMIN_PASSWORD});
            admin.post("/api/users/me/tokens", &body).await.expect_status(201)["token"].as_str().expect("token").to_string()
        };
        orthanc.req(Method::GET, "/patients").bearer(&admin_read).send().await.expect_status(200);
        orthanc.req(Method::POST, "/tools/find").bearer(&admin_read).json(&find).send().await.expect_status(403);
        orthanc.req(Method::GET, "/system").bearer(&write).send().await.expect_status(403);
    }

    // Tokens die with their user: deactivated (revoked for good), or deleted.
    admin.put(&format!("/api/users/{alice_id}"), &json!({"status": "inactive"})).await.expect_status(200);
    writer.get("/api/auth/me").await.expect_error(401, "token_revoked");
    admin.put(&format!("/api/users/{alice_id}"), &json!({"status": "active"})).await.expect_status(200);
    writer.get("/api/auth/me").await.expect_error(401, "token_revoked");
    let bob_id = admin
        .post("/api/users", &json!({"email": "bob@cohort.test", "password": ALICE_PW, "role": "user", "group_id": group["id"]}))
        .await
        .expect_status(201)["id"]
        .clone();
    let bob = d.client();
    bob.login("bob@cohort.test", ALICE_PW).await.expect_status(200);
    let (_, bobs) = new_token(&bob, "bob", "read").await;
    let bob_script = d.client().with_bearer(&bobs);
    bob_script.get("/api/auth/me").await.expect_status(200);
    admin.delete(&format!("/api/users/{bob_id}")).await.expect_status(204);
    bob_script.get("/api/auth/me").await.expect_error(401, "invalid_token");

    audit_export(&d, &admin).await;
}
per_deployment!(api_tokens);

/// `GET /api/audit/export`: admins only, the list's filters, oldest first, CSV safe to
/// open in a spreadsheet, JSON Lines, and audited itself. Runs on the deployment of
/// `api_tokens`, whose trail it exports.
async fn audit_export(d: &Deployment, admin: &Client) {
    // An attacker picks the email of a failed login: it must not become a formula.
    d.client().login("=HYPERLINK(\"http://evil.test\")@x.test", "whatever-password").await.expect_error(401, "invalid_credentials");
    let carol = d.client();
    admin.post("/api/users", &json!({"email": "carol@cohort.test", "password": ALICE_PW, "role": "user"})).await.expect_status(201);
    carol.login("carol@cohort.test", ALICE_PW).await.expect_status(200);
    carol.get("/api/audit/export?format=csv").await.expect_error(403, "forbidden");
    admin.get("/api/audit/export?format=xml").await.expect_error(422, "validation_error");
    admin.get("/api/audit/export?from=yesterday").await.expect_error(422, "validation_error");

    let r = admin.get("/api/audit/export?format=jsonl").await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("content-type"), Some("application/x-ndjson"));
    assert!(r
        .header("content-disposition")
        .is_some_and(|v| v.starts_with("attachment; filename=\"cohort-audit-") && v.ends_with(".jsonl\"")));
    let lines: Vec<Value> =
        String::from_utf8(r.body.to_vec()).expect("utf-8").lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    let ids: Vec<i64> = lines.iter().map(|l| l["id"].as_i64().expect("id")).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "oldest first");
    let total = admin.get("/api/audit?page_size=1").await.expect_status(200)["total"].as_i64().expect("total");
    assert_eq!(lines.len() as i64, total, "every row, this export's own included");
    let last = lines.last().expect("rows");
    assert_eq!((last["action"].as_str(), last["resource_type"].as_str()), (Some("EXPORT"), Some("audit")), "the export is audited first");
    assert_eq!(last["details"]["format"], "jsonl");

    let r = admin.get("/api/audit/export?format=csv&action=token_create").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/csv; charset=utf-8"));
    let csv = String::from_utf8(r.body.to_vec()).expect("utf-8");
    let rows: Vec<&str> = csv.split_terminator("\r\n").collect();
    assert_eq!(rows[0], "id,at,user_id,actor_email,action,resource_type,resource_id,outcome,ip,details");
    assert!(rows.len() > 2 && rows[1..].iter().all(|r| r.contains(",TOKEN_CREATE,")), "{csv}");

    let r = admin.get("/api/audit/export?action=LOGIN_FAILED").await;
    let csv = String::from_utf8(r.body.to_vec()).expect("utf-8");
    assert!(csv.contains(",\"'=hyperlink(\"\"http://evil.test\"\")@x.test\","), "a formula is quoted and defused: {csv}");
    assert!(!csv.to_lowercase().contains(",=hyperlink"), "{csv}");
}

fn env() -> BTreeMap<String, String> {
    BTreeMap::new()
}

/// `cohort token create` prints a token once; `cohort import --url --token-file` pushes
/// a folder into a running deployment with it, and refuses without a valid one.
async fn token_command_and_remote_import(d: Deployment) {
    let admin = d.admin().await;
    let group = admin.post("/api/groups", &json!({"name": "Lab"})).await.expect_status(201);
    admin
        .post("/api/users", &json!({"email": ALICE, "password": ALICE_PW, "role": "user", "group_id": group["id"]}))
        .await
        .expect_status(201);

    let out = sidecar_command(&d.db.url, &d.orthanc_url(), &env())
        .args(["token", "create", "--email", "ALICE@cohort.test", "--scope", "write", "--days", "2"])
        .output()
        .expect("token create");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).expect("utf-8").trim().to_string();
    assert!(token.starts_with("coh_") && token.len() == 47, "only the token on stdout: {token:?}");
    let me = d.client().with_bearer(&token).get("/api/auth/me").await.expect_status(200);
    assert_eq!(me["email"], ALICE);
    let bad = sidecar_command(&d.db.url, &d.orthanc_url(), &env())
        .args(["token", "create", "--email", "nobody@cohort.test", "--scope", "read"])
        .output()
        .expect("token create");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not found"), "{}", String::from_utf8_lossy(&bad.stderr));

    let dir = tempfile::tempdir().expect("temp dir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{token}\n")).expect("write token");
    let folder = marc().files[0].path.parent().expect("series folder").parent().expect("study").parent().expect("patient").to_path_buf();
    std::fs::write(folder.join("notes.txt"), "not DICOM").expect("junk");
    let run = |token_file: &std::path::Path| {
        sidecar_command(&d.db.url, &d.orthanc_url(), &env())
            .args(["import", folder.to_str().expect("path"), "--url", &d.url, "--token-file", token_file.to_str().expect("path")])
            .output()
            .expect("remote import")
    };
    let out = run(&token_file);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("2 received, 2 stored") && stdout.contains("1 other file(s) skipped"), "{stdout}");
    assert!(stdout.contains("IPP-TOKEN-MARC"), "{stdout}");
    let p = admin.get("/api/patients?q=IPP-TOKEN-MARC").await.expect_status(200);
    assert_eq!(p["items"][0]["group_id"], group["id"], "new patients land in the token owner's group");

    std::fs::write(&token_file, format!("coh_{}", "B".repeat(43))).expect("write token");
    let out = run(&token_file);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid_token"), "{}", String::from_utf8_lossy(&out.stderr));
}

mod cli {
    use super::*;

    /// The plugin cannot stream: a de-identified export is bounded by MaxExportBytes too.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deidentified_export_respects_max_export_bytes_plugin() {
        let settings = BTreeMap::from([("MaxExportBytes".to_string(), json!(12_000))]);
        let d = Deployment::start_with(Host::Plugin, Backend::Sqlite, settings).await;
        let admin = d.admin().await;
        let z = dicom::zip(&marc().paths(), dicom::ZipOptions::default());
        admin.req(Method::POST, "/api/patients/import").body("application/zip", z.bytes()).send().await.expect_status(200);
        let id = admin.get("/api/patients?q=IPP-TOKEN-MARC").await.expect_status(200)["items"][0]["id"].as_i64().expect("id");
        admin.get(&format!("/api/patients/{id}/export?deidentify=true")).await.expect_error(413, "too_large");
        let exports = audit_rows(&admin, "EXPORT").await;
        assert!(exports.is_empty(), "a refused export is not audited as done: {exports:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn token_create_and_remote_import_sqlite() {
        token_command_and_remote_import(Deployment::start(Host::Sidecar, Backend::Sqlite).await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn token_create_and_remote_import_plugin_postgres() {
        if cohort_e2e::postgres_skipped() {
            return;
        }
        token_command_and_remote_import(Deployment::start(Host::Plugin, Backend::Postgres).await).await;
    }
}

// ---------------------------------------------------------------------------------------
// De-identified export

/// Runs `tests/dicom/deid.py`, returning its JSON answer.
fn deid_py(args: &[&str]) -> Value {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("dicom").join("deid.py");
    let out =
        std::process::Command::new(dicom::python()).arg(&script).args(args).env("PYTHONIOENCODING", "utf-8").output().expect("run deid.py");
    assert!(out.status.success(), "deid.py {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("deid.py JSON")
}

/// A hospital-like study (names, dates, institution, physicians, accession numbers,
/// private tags; one instance flagged with burned-in annotation), and what identifies it.
struct Hospital {
    _dir: tempfile::TempDir,
    files: Vec<String>,
    facts: Value,
}

fn hospital_study() -> &'static Hospital {
    static H: OnceLock<Hospital> = OnceLock::new();
    H.get_or_init(|| {
        let g = dicom::study(
            &StudySpec::new("IPP-DEID-ELOISE")
                .name("Dupré^Éloïse")
                .birth_date("19780412")
                .studies(2)
                .series(2)
                .instances(2)
                .modalities(&["CT", "MR"])
                .seed(41),
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let out = dir.path().join("enriched");
        let mut args = vec!["enrich".to_string(), out.display().to_string()];
        args.extend(g.files.iter().map(|f| f.path.display().to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let files: Vec<String> =
            deid_py(&args)["files"].as_array().expect("files").iter().map(|f| f.as_str().expect("path").to_string()).collect();
        let mut fargs = vec!["facts"];
        fargs.extend(files.iter().map(String::as_str));
        let facts = deid_py(&fargs);
        Hospital { _dir: dir, files, facts }
    })
}

fn samples() -> &'static (Generated, Value) {
    static S: OnceLock<(Generated, Value)> = OnceLock::new();
    S.get_or_init(|| {
        let g = dicom::pydicom_samples();
        let paths: Vec<String> = g.files.iter().map(|f| f.path.display().to_string()).collect();
        let mut args = vec!["facts"];
        args.extend(paths.iter().map(String::as_str));
        let facts = deid_py(&args);
        (g, facts)
    })
}

/// Every value that must not appear, found in `bytes`. Numbers (dates) only count
/// between non-digits, so a date cannot be "found" inside a new 2.25 UID.
fn leaks(bytes: &[u8], facts: &Value) -> Vec<String> {
    let mut found = Vec::new();
    for list in ["values", "private", "uids"] {
        for v in facts[list].as_array().expect("list") {
            let v = v.as_str().expect("string");
            let needles: Vec<Vec<u8>> = {
                // Latin-1 and UTF-8 spellings of accented names.
                let latin1: Option<Vec<u8>> = v.chars().map(|c| u8::try_from(u32::from(c)).ok()).collect();
                let mut n = vec![v.as_bytes().to_vec()];
                n.extend(latin1);
                n
            };
            let digits = v.bytes().all(|b| b.is_ascii_digit() || b == b'.');
            for needle in needles {
                let hit = bytes.windows(needle.len()).enumerate().any(|(at, w)| {
                    w == needle.as_slice()
                        && (!digits
                            || (at.checked_sub(1).is_none_or(|b| !bytes[b].is_ascii_digit())
                                && bytes.get(at + needle.len()).is_none_or(|a| !a.is_ascii_digit())))
                });
                if hit {
                    found.push(v.to_string());
                }
            }
        }
    }
    found
}

/// Saves an archive and asks pydicom what it holds.
fn check_archive(bytes: &[u8]) -> Value {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("export.zip");
    std::fs::write(&path, bytes).expect("write archive");
    deid_py(&["check", path.to_str().expect("path")])
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().expect("array").iter().map(|s| s.as_str().expect("string").to_string()).collect()
}

fn ok_bytes(r: cohort_e2e::Resp) -> Vec<u8> {
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.body.to_vec()
}

async fn export(c: &Client, id: i64, deidentify: bool) -> cohort_e2e::Resp {
    c.get(&format!("/api/patients/{id}/export?deidentify={deidentify}")).await
}

async fn deidentified_export(d: Deployment) {
    let h = hospital_study();
    let (samples, sample_facts) = samples();
    let admin = d.admin().await;
    let a = admin.post("/api/groups", &json!({"name": "Deid A"})).await.expect_status(201);
    let b = admin.post("/api/groups", &json!({"name": "Deid B"})).await.expect_status(201);
    assert_eq!(a["export_policy"], "any");
    admin.post("/api/users", &json!({"email": ALICE, "password": ALICE_PW, "role": "user", "group_id": a["id"]})).await.expect_status(201);
    let alice = d.client();
    alice.login(ALICE, ALICE_PW).await.expect_status(200);

    let paths: Vec<std::path::PathBuf> = h.files.iter().map(std::path::PathBuf::from).chain(samples.paths()).collect();
    let z = dicom::zip(&paths, dicom::ZipOptions::default());
    let report = alice.req(Method::POST, "/api/patients/import").body("application/zip", z.bytes()).send().await.expect_status(200);
    assert_eq!(report["instances"]["failed"], 0, "{report}");
    let listed = alice.get("/api/patients?page_size=200").await.expect_status(200);
    let ids: Vec<i64> = listed["items"].as_array().expect("items").iter().map(|p| p["id"].as_i64().expect("id")).collect();
    let eloise = listed["items"].as_array().expect("items").iter().find(|p| p["external_id"] == "IPP-DEID-ELOISE").expect("Éloïse")["id"]
        .as_i64()
        .expect("id");

    // One patient, de-identified.
    let r = export(&alice, eloise, true).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let first = r.body.to_vec();
    let leaked = leaks(&first, &h.facts);
    assert!(leaked.is_empty(), "identifying values in the de-identified archive: {leaked:?}");
    let c = check_archive(&first);
    let instances = c["instances"].as_array().expect("instances");
    let pseudonym = instances[0]["patient_id"].as_str().expect("pseudonym").to_string();
    assert!(pseudonym.starts_with("COH-") && pseudonym.len() == 20, "{pseudonym}");
    assert_eq!(r.header("content-disposition"), Some(format!("attachment; filename=\"{pseudonym}.zip\"").as_str()));
    assert_eq!(instances.len(), h.files.len() - 1, "the instance with burned-in annotation is withheld");
    for i in instances {
        assert_eq!((i["patient_id"].as_str(), i["patient_name"].as_str()), (Some(pseudonym.as_str()), Some(pseudonym.as_str())), "{i}");
        assert_eq!(i["identity_removed"], "YES");
        assert!(i["method"].as_str().is_some_and(|m| m.contains("Basic Profile") && m.contains("Cohort")), "{i}");
        assert_eq!(i["private_tags"], json!([]), "{i}");
        assert_eq!(i["dates"], json!([]), "dates are removed: {i}");
        for k in ["study", "series", "sop", "media_sop"] {
            assert!(i[k].as_str().is_some_and(|u| u.starts_with("2.25.") && u.len() <= 64), "{k}: {i}");
        }
        assert_eq!(i["sop"], i["media_sop"]);
        assert!(i["frame_of_reference"].as_str().is_some_and(|f| f.is_empty() || f.starts_with("2.25.")), "{i}");
        let expected = format!(
            "DICOM/{}/{}/{}.dcm",
            i["study"].as_str().unwrap_or(""),
            i["series"].as_str().unwrap_or(""),
            i["sop"].as_str().unwrap_or("")
        );
        assert_eq!(i["name"].as_str(), Some(expected.as_str()));
        assert_eq!(i["decodable"], true, "{i}");
    }
    // Structure and pixels are kept; each series keeps one frame of reference.
    assert_eq!(c["structure"], h.facts["structure"]);
    assert_eq!(c["pixels"], h.facts["pixels"]);
    let mut frames: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
    for i in instances {
        frames
            .entry(i["series"].as_str().unwrap_or("").to_string())
            .or_default()
            .insert(i["frame_of_reference"].as_str().unwrap_or("").to_string());
    }
    assert!(frames.values().all(|f| f.len() == 1), "{frames:?}");
    let doc = &c["json"]["patient.json"];
    assert_eq!(doc["deidentified"], true);
    assert_eq!(doc["patient"], json!({"pseudonym": pseudonym, "status": "to_interpret"}));
    assert_eq!(doc["export"]["withheld_instances"]["burned_in_annotation"], 1);
    assert_eq!(doc["studies"].as_array().map(Vec::len), Some(2));
    assert!(!doc.to_string().contains(ALICE) && !doc.to_string().contains("orthanc"), "{doc}");

    // Again: the same pseudonym, UIDs, names and patient.json.
    let again = check_archive(&ok_bytes(export(&alice, eloise, true).await));
    let names = |c: &Value| -> Vec<String> {
        c["instances"].as_array().expect("i").iter().map(|i| i["name"].as_str().expect("n").to_string()).collect()
    };
    assert_eq!(names(&again), names(&c));
    assert_eq!(again["json"], c["json"]);

    // Admins see the pseudonym and can search for it; the group's users cannot.
    let detail = admin.get(&format!("/api/patients/{eloise}")).await.expect_status(200);
    assert_eq!(detail["pseudonym"], pseudonym.as_str());
    assert!(alice.get(&format!("/api/patients/{eloise}")).await.expect_status(200).get("pseudonym").is_none());
    let found = admin.get(&format!("/api/patients?q={}", pseudonym.to_lowercase())).await.expect_status(200);
    assert_eq!((found["total"].as_i64(), found["items"][0]["id"].as_i64()), (Some(1), Some(eloise)));
    assert_eq!(admin.get(&format!("/api/patients?q={}", &pseudonym[..9])).await.expect_status(200)["total"], 1, "a prefix is enough");
    assert_eq!(alice.get(&format!("/api/patients?q={pseudonym}")).await.expect_status(200)["total"], 0);

    // Everyone in one de-identified archive: pydicom's samples too.
    let r = alice.post("/api/patients/export", &json!({"ids": ids, "deidentify": true})).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let bulk = r.body.to_vec();
    let leaked: Vec<String> = leaks(&bulk, sample_facts).into_iter().chain(leaks(&bulk, &h.facts)).collect();
    assert!(leaked.is_empty(), "identifying values in the bulk de-identified archive: {leaked:?}");
    let cb = check_archive(&bulk);
    let bulk_instances = cb["instances"].as_array().expect("instances");
    assert_eq!(bulk_instances.len(), samples.files.len() + h.files.len() - 1);
    assert!(bulk_instances.iter().all(|i| i["identity_removed"] == "YES"
        && i["private_tags"] == json!([])
        && i["patient_id"].as_str().is_some_and(|p| p.starts_with("COH-"))));
    let mut all_pixels = strings(&sample_facts["pixels"]);
    all_pixels.extend(strings(&h.facts["pixels"]));
    all_pixels.sort();
    assert_eq!(strings(&cb["pixels"]), all_pixels, "every pixel byte is kept");
    assert!(cb["json"].as_object().expect("json").contains_key(&format!("{pseudonym}/patient.json")), "folders are pseudonyms");

    // The archive imports without conflicting with what it came from.
    let reimport = admin.req(Method::POST, "/api/patients/import").body("application/zip", bulk.clone()).send().await.expect_status(200);
    assert_eq!(reimport["instances"]["stored"].as_u64(), Some(bulk_instances.len() as u64), "{reimport}");
    assert_eq!((reimport["instances"]["already_stored"].as_u64(), reimport["instances"]["failed"].as_u64()), (Some(0), Some(0)));

    // The group's policy: de-identified only, for its users (not for admins).
    admin.put(&format!("/api/groups/{}", a["id"]), &json!({"export_policy": "deidentified_only"})).await.expect_status(200);
    export(&alice, eloise, false).await.expect_error(403, "deidentified_only");
    alice.post("/api/patients/export", &json!({"ids": [eloise]})).await.expect_error(403, "deidentified_only");
    let instance =
        alice.get(&format!("/api/patients/{eloise}/instances")).await.expect_status(200)[0]["id"].as_str().expect("id").to_string();
    alice.get(&format!("/api/patients/images/{instance}")).await.expect_error(403, "deidentified_only");
    export(&alice, eloise, true).await.expect_status(200);
    export(&admin, eloise, false).await.expect_status(200);
    admin.get(&format!("/api/patients/images/{instance}")).await.expect_status(200);
    admin.put(&format!("/api/groups/{}", a["id"]), &json!({"export_policy": "sometimes"})).await.expect_error(422, "validation_error");

    // Another group's key: nothing in common.
    admin.put(&format!("/api/patients/{eloise}"), &json!({"group_id": b["id"]})).await.expect_status(200);
    let other = ok_bytes(export(&admin, eloise, true).await);
    let co = check_archive(&other);
    let other_pseudonym = co["instances"][0]["patient_id"].as_str().expect("pseudonym");
    assert_ne!(other_pseudonym, pseudonym);
    let uids = |c: &Value| -> std::collections::BTreeSet<String> {
        c["instances"]
            .as_array()
            .expect("i")
            .iter()
            .flat_map(|i| ["study", "series", "sop", "frame_of_reference"].map(|k| i[k].as_str().unwrap_or("").to_string()))
            .filter(|u| !u.is_empty())
            .collect()
    };
    assert!(uids(&co).is_disjoint(&uids(&c)), "two groups share no UID");
    assert!(!String::from_utf8_lossy(&other).contains(&pseudonym));

    // Audited as de-identified exports.
    let rows = audit_rows(&admin, "EXPORT").await;
    assert!(
        rows.iter()
            .any(|r| r["details"]["deidentified"] == true && r["details"]["pseudonym"] == pseudonym.as_str() && r["actor_email"] == ALICE),
        "{rows:?}"
    );
    let denied = audit_rows(&admin, "ACCESS_DENIED").await;
    assert!(denied.iter().any(|r| r["details"]["reason"] == "deidentified_only"), "{denied:?}");
}
per_deployment!(deidentified_export);
