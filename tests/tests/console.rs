//! The web console (`/ui/`) against both hosts on SQLite: its files and their headers,
//! the image preview and `/api/docs` over HTTP, then a person's work in a real headless
//! Chromium (Debian's `chromium` + `chromium-driver`): sign-in errors and throttling,
//! import of a ZIP and its report, search, previews, a CSRF-protected status change,
//! export, revoking a session from a second browser, group isolation, the admin pages,
//! a CD's folder imported through the folder picker, and Orthanc Explorer. Screenshots of the main pages go to
//! `target/<profile>/console-screenshots/<host>/`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use cohort_e2e::browser::Browser;
use cohort_e2e::dicom::{self, Generated, GeneratedZip, StudySpec, ZipOptions};
use cohort_e2e::{Backend, Client, Deployment, Host, ADMIN_EMAIL, ADMIN_PASSWORD};
use reqwest::Method;
use serde_json::{json, Value};

const PASSWORD: &str = "console-password-1";

/// Browser scenarios run one at a time: two Chromiums per scenario are enough for a
/// 2-core machine.
static BROWSERS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The console user's patient: 1 study × 2 series × 3 instances.
fn durand() -> &'static Generated {
    static G: OnceLock<Generated> = OnceLock::new();
    G.get_or_init(|| {
        dicom::study(
            &StudySpec::new("IPP-CONSOLE")
                .name("Durand^Élodie")
                .birth_date("19800101")
                .studies(1)
                .series(2)
                .instances(3)
                .modalities(&["CT", "MR"])
                .study_description("Scanner thoracique")
                .seed(41),
        )
    })
}

/// Durand's files with junk entries, as a person would zip a CD.
fn durand_zip() -> &'static GeneratedZip {
    static Z: OnceLock<GeneratedZip> = OnceLock::new();
    Z.get_or_init(|| dicom::zip(&durand().paths(), ZipOptions { junk: true, ..ZipOptions::default() }))
}

/// Group B's patient, who must never show in group A's pages.
fn secret() -> &'static Generated {
    static G: OnceLock<Generated> = OnceLock::new();
    G.get_or_init(|| dicom::study(&StudySpec::new("IPP-SECRET").name("Cachet^Bernard").studies(1).series(1).instances(2).seed(42)))
}

/// A patient's CD copied to disk, as the folder picker gets it: `DICOMDIR` (dcmtk's
/// `dcmmkdir`) at the root, files without an extension three levels down, and a folder
/// with a long accented name the user added. Returns the
/// temporary directory (kept alive by the caller), the CD folder and the study.
fn cd_folder() -> (tempfile::TempDir, PathBuf, Generated) {
    let study = dicom::study(&StudySpec::new("IPP-CONSOLE-CD").name("Petit^Louis").studies(1).series(2).instances(2).seed(43));
    let tmp = tempfile::tempdir().expect("temp dir");
    let cd = tmp.path().join("CD-PETIT");
    for (i, file) in study.paths().iter().enumerate() {
        let dir = cd.join("DICOM").join("ST000000").join(format!("SE{:06}", i / 2));
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::copy(file, dir.join(format!("IM{i:06}"))).expect("copy");
    }
    let made = std::process::Command::new("dcmmkdir").current_dir(&cd).args(["--recurse", "DICOM"]).output().expect("dcmmkdir");
    assert!(made.status.success(), "dcmmkdir: {}", String::from_utf8_lossy(&made.stderr));
    assert!(cd.join("DICOMDIR").is_file());
    // What people add to a copied CD: a folder whose name (accents, over 100 bytes with
    // the path) needs a pax record in the tar, holding one of the images and a note.
    let extra = cd.join(LONG_FOLDER);
    std::fs::create_dir_all(&extra).expect("mkdir");
    let last = study.paths().len() - 1;
    let moved = cd.join("DICOM").join("ST000000").join(format!("SE{:06}", last / 2)).join(format!("IM{last:06}"));
    std::fs::rename(moved, extra.join(format!("IM{last:06}"))).expect("move");
    std::fs::write(extra.join("compte rendu.txt"), "Compte rendu remis au patient.\n").expect("write");
    (tmp, cd, study)
}

const LONG_FOLDER: &str = "Examens complémentaires — IRM cérébrale du 12 mars 2024 (copie du CD remis par le patient)";

fn shots(host: Host) -> PathBuf {
    let dir = cohort_e2e::target_dir().join("console-screenshots").join(format!("{host:?}").to_lowercase());
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("HTTP client")
}

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string()
}

async fn assets_and_docs(d: Deployment) {
    let http = no_redirects();
    let r = http.get(format!("{}/", d.url)).send().await.expect("GET /");
    assert_eq!(r.status(), 302, "/ sends browsers to the console");
    assert_eq!(header(&r, "location"), "/ui/");

    for path in ["/ui", "/ui/"] {
        let r = http.get(format!("{}{path}", d.url)).send().await.expect("GET page");
        assert_eq!(r.status(), 200, "{path} without a session");
        assert_eq!(header(&r, "content-type"), "text/html; charset=utf-8");
        let csp = header(&r, "content-security-policy");
        assert!(csp.contains("script-src 'self'") && csp.contains("default-src 'none'"), "CSP: {csp}");
        assert!(!csp.contains("unsafe"), "CSP allows unsafe sources: {csp}");
        assert_eq!(header(&r, "x-frame-options"), "DENY");
        assert_eq!(header(&r, "x-content-type-options"), "nosniff");
        let body = r.text().await.expect("body");
        assert!(body.contains(r#"<script type="module" src="/ui/js/app.js"></script>"#), "{body}");
    }
    for (path, ty) in [
        ("/ui/js/app.js", "text/javascript; charset=utf-8"),
        ("/ui/js/pages/patients.js", "text/javascript; charset=utf-8"),
        ("/ui/app.css", "text/css; charset=utf-8"),
        ("/ui/favicon.svg", "image/svg+xml"),
    ] {
        let r = http.get(format!("{}{path}", d.url)).send().await.expect("GET asset");
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(header(&r, "content-type"), ty, "{path}");
        assert_eq!(header(&r, "cache-control"), "no-cache", "{path}");
        let etag = header(&r, "etag");
        assert!(etag.starts_with('"') && etag.len() > 10, "{path} ETag {etag:?}");
        let again = http.get(format!("{}{path}", d.url)).header("if-none-match", &etag).send().await.expect("GET again");
        assert_eq!(again.status(), 304, "{path} revalidates");
        assert!(again.bytes().await.expect("body").is_empty());
    }
    let r = http.get(format!("{}/ui/no-such-file.js", d.url)).send().await.expect("GET");
    assert_eq!(r.status(), 404);
    let r = http.get(format!("{}/ui/../Cargo.toml", d.url)).send().await.expect("GET");
    assert!([400, 403, 404].contains(&r.status().as_u16()), "path tricks find nothing: {}", r.status());

    let r = http.get(format!("{}/api/docs", d.url)).send().await.expect("GET docs");
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-type"), "text/html; charset=utf-8");
    assert!(header(&r, "content-security-policy").contains("default-src 'none'"));
    let page = r.text().await.expect("docs");
    for needle in ["/api/patients/import", "/api/patients/images/{instance_id}/preview", "id=\"schema-User\"", "/api/auth/login"] {
        assert!(page.contains(needle), "/api/docs lacks {needle}");
    }
    assert!(!page.contains("<script"), "the docs page runs no script");

    // A page recovers its CSRF token after a reload from /api/auth/me; scripts get none.
    let admin = d.admin().await;
    let me = admin.get("/api/auth/me").await.expect_status(200);
    assert_eq!(me["csrf_token"].as_str(), admin.cookie("csrf_token").as_deref(), "the session's CSRF token: {me}");
    let script = d.client().with_bearer(&admin.cookie("access_token").expect("access token"));
    assert!(script.get("/api/auth/me").await.expect_status(200).get("csrf_token").is_none(), "no CSRF token for Bearer callers");

    // An instance Orthanc cannot render: 422, not a 5xx.
    let body = std::fs::read(&without_pixels().1).expect("DICOM");
    let report = admin.req(Method::POST, "/api/patients/import").body("application/dicom", body).send().await.expect_status(200);
    let patient = report["patients"][0]["id"].as_i64().expect("patient");
    let instances = admin.get(&format!("/api/patients/{patient}/instances")).await.expect_status(200);
    let id = instances[0]["id"].as_str().expect("instance id");
    admin.get(&format!("/api/patients/images/{id}/preview")).await.expect_error(422, "preview_unavailable");

    if d.host == Host::Plugin {
        // The console's files are public; Orthanc's own pages still are not.
        let r = http.get(format!("{}/app/explorer.html", d.url)).send().await.expect("GET explorer");
        assert_eq!(r.status(), 403, "Orthanc Explorer without a session");
        let r = http.post(format!("{}/ui/", d.url)).body("x").send().await.expect("POST /ui/");
        assert_eq!(r.status(), 403, "only reads of the console pass the filter without a session");
        let r = admin.get("/app/explorer.html").await;
        assert_eq!(r.status, 200, "Orthanc Explorer with an admin session cookie");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assets_and_docs_sidecar() {
    assets_and_docs(Deployment::start(Host::Sidecar, Backend::Sqlite).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assets_and_docs_plugin() {
    assets_and_docs(Deployment::start(Host::Plugin, Backend::Sqlite).await).await;
}

/// A copy of a generated instance without its pixel data, as another patient: Orthanc
/// stores it but cannot render it.
fn without_pixels() -> &'static (tempfile::TempDir, PathBuf) {
    static F: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = dir.path().join("no-pixels.dcm");
        let script = "import sys, pydicom\nfrom pydicom.uid import generate_uid\n\
            d = pydicom.dcmread(sys.argv[1])\ndel d.PixelData\nd.PatientID = 'IPP-NOPIXELS'\n\
            d.StudyInstanceUID = generate_uid(); d.SeriesInstanceUID = generate_uid(); d.SOPInstanceUID = generate_uid()\n\
            d.file_meta.MediaStorageSOPInstanceUID = d.SOPInstanceUID\nd.save_as(sys.argv[2])\n";
        let status = std::process::Command::new(dicom::python())
            .arg("-c")
            .arg(script)
            .arg(&secret().files[0].path)
            .arg(&out)
            .status()
            .expect("run python");
        assert!(status.success(), "could not strip the pixel data");
        (dir, out)
    })
}

async fn import_zip(c: &Client, zip: &GeneratedZip) -> Value {
    c.req(Method::POST, "/api/patients/import").body("application/zip", zip.bytes()).send().await.expect_status(200)
}

async fn user(admin: &Client, email: &str, group: Option<i64>) -> i64 {
    let body =
        json!({"email": email, "password": PASSWORD, "role": "user", "group_id": group, "first_name": "Alice", "last_name": "Martin"});
    admin.post("/api/users", &body).await.expect_status(201)["id"].as_i64().expect("id")
}

async fn group(admin: &Client, name: &str) -> i64 {
    admin.post("/api/groups", &json!({ "name": name })).await.expect_status(201)["id"].as_i64().expect("id")
}

/// The PNG preview through the API: same visibility as the raw file.
async fn preview_follows_visibility(d: &Deployment, owner: &Client, outsider: &Client, patient: i64) {
    let instances = owner.get(&format!("/api/patients/{patient}/instances")).await.expect_status(200);
    let id = instances[0]["id"].as_str().expect("instance id").to_string();
    let r = owner.get(&format!("/api/patients/images/{id}/preview")).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("content-type"), Some("image/png"));
    assert!(r.body.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    outsider.get(&format!("/api/patients/images/{id}/preview")).await.expect_error(404, "not_found");
    d.client().get(&format!("/api/patients/images/{id}/preview")).await.expect_error(401, "not_authenticated");
    owner.get("/api/patients/images/0123456789abcdef-not-there/preview").await.expect_error(404, "not_found");
}

/// Fails when the page shows an untranslated key.
async fn assert_translated(web: &Browser) {
    let text = web.page_text().await;
    assert!(!text.contains('⟦'), "untranslated text on {}:\n{text}", web.url().await);
}

async fn sign_in(web: &Browser, email: &str, password: &str) {
    web.fill("input[name=email]", email).await;
    web.fill("input[name=password]", password).await;
    web.js("document.getElementById('login-error').hidden = true;", vec![]).await;
    web.click_on("#login-form button[type=submit]").await;
}

/// Submits a failing sign-in and returns the message shown.
async fn failed_sign_in(web: &Browser, email: &str, password: &str) -> String {
    sign_in(web, email, password).await;
    let e = web.wait_for("#login-error").await;
    web.text(&e).await
}

async fn console_in_a_browser(d: Deployment) {
    let _one_at_a_time = BROWSERS.lock().await;
    let dir = shots(d.host);
    let admin = d.admin().await;
    let ga = group(&admin, "Neurologie").await;
    let gb = group(&admin, "Cardiologie").await;
    user(&admin, "alice@a.test", Some(ga)).await;
    user(&admin, "bob@b.test", Some(gb)).await;
    let carol = user(&admin, "carol@a.test", Some(ga)).await;
    admin.put(&format!("/api/users/{carol}"), &json!({"status": "inactive"})).await.expect_status(200);
    let bob = d.client();
    bob.login("bob@b.test", PASSWORD).await.expect_status(200);
    let secret_zip = dicom::zip(&secret().paths(), ZipOptions::default());
    let report = import_zip(&bob, &secret_zip).await;
    let secret_id = report["patients"][0]["id"].as_i64().expect("patient id");

    // Sign-in page, a wrong password, an inactive account.
    let web = Browser::start().await;
    web.goto(&format!("{}/", d.url)).await;
    web.wait_for("#login-form").await;
    assert!(web.url().await.ends_with("/ui/#/login"), "at {}", web.url().await);
    let msg = failed_sign_in(&web, "alice@a.test", "not-the-password").await;
    assert!(msg.contains("Wrong email or password"), "{msg}");
    web.screenshot(&dir.join("01-sign-in-error.png")).await;
    let msg = failed_sign_in(&web, "carol@a.test", PASSWORD).await;
    assert!(msg.contains("inactive"), "{msg}");

    // Sign in: the patients page, empty for group A.
    sign_in(&web, "alice@a.test", PASSWORD).await;
    web.wait_text("#patient-count", "0 patient").await;
    let cookies = web.js("return document.cookie;", vec![]).await;
    let cookies = cookies.as_str().unwrap_or_default();
    assert!(!cookies.contains("access_token") && !cookies.contains("refresh_token"), "tokens readable by scripts: {cookies}");
    let storage = web.js("return JSON.stringify(Object.keys(localStorage).concat(Object.keys(sessionStorage)));", vec![]).await;
    assert!(!storage.as_str().unwrap_or_default().contains("token"), "a token in web storage: {storage}");
    assert_translated(&web).await;

    // The access token expires: the page refreshes it silently and carries on.
    web.delete_cookie("access_token").await;
    web.click_on("#nav a[href='#/import']").await;
    web.wait_for("#dropzone").await;
    web.click_on("#nav a[href='#/patients']").await;
    web.wait_text("#patient-count", "0 patient").await;
    assert!(web.cookies().await.iter().any(|c| c["name"] == "access_token"), "a new access token after the silent refresh");
    assert!(web.url().await.ends_with("#/patients"), "still signed in at {}", web.url().await);

    // Import a ZIP: progress, then the report with every skipped entry named.
    web.click_on("#nav a[href='#/import']").await;
    web.wait_for("#dropzone").await;
    web.upload("#import-files", &durand_zip().path).await;
    web.wait_for("#import-done").await;
    let report = web.wait_text("#import-results .report", "IPP-CONSOLE").await;
    let dicom_entries = durand_zip().entries.iter().filter(|e| e.is_dicom()).count();
    assert!(report.contains(&format!("{dicom_entries}\nStored")), "report:\n{report}");
    assert!(report.contains("report.pdf") && report.contains("DICOMDIR"), "skipped entries are named:\n{report}");
    web.screenshot(&dir.join("02-import-report.png")).await;
    assert_translated(&web).await;

    // Search as you type (accents and case folded); group B's patient never appears.
    web.click_on("#nav a[href='#/patients']").await;
    web.fill("#patient-search", "elod").await;
    web.wait_text("#patient-rows", "IPP-CONSOLE").await;
    web.fill("#patient-search", "IPP-SECRET").await;
    web.wait_text("#patient-rows", "No patient matches").await;
    web.fill("#patient-search", "").await;
    web.wait_text("#patient-count", "1 patient").await;
    let text = web.page_text().await;
    assert!(!text.contains("IPP-SECRET") && !text.contains("CACHET"), "group B's patient in group A's list:\n{text}");
    web.screenshot(&dir.join("03-patients.png")).await;

    // The patient: studies, series, previews.
    web.click_on("#patient-rows a").await;
    web.wait_for("#status-form").await;
    let patient_id: i64 = web.url().await.rsplit('/').next().and_then(|s| s.parse().ok()).expect("patient id in the URL");
    web.wait_js("a preview shown", "[...document.querySelectorAll('.thumb img')].some(i => i.complete && i.naturalWidth > 0)").await;
    let thumbs = web.find_all(".thumb").await.len();
    assert_eq!(thumbs, durand().files.len(), "one preview per instance");
    web.click_on(".thumb").await;
    web.wait_js(
        "the large preview",
        "(() => { const i = document.getElementById('preview-large'); return i && i.complete && i.naturalWidth > 0; })()",
    )
    .await;
    web.screenshot(&dir.join("04-preview.png")).await;
    web.click_on("#preview-dialog button").await;
    assert_translated(&web).await;

    // A CSRF-protected write from the page; the same write without the header is refused.
    web.choose("#status-select", "validated").await;
    web.click_on("#status-form button[type=submit]").await;
    web.wait_text("#patient-status-now", "Validé").await;
    assert_eq!(admin.get(&format!("/api/patients/{patient_id}")).await.expect_status(200)["status"], "validated");
    let forged = web
        .js_async(
            "const done = arguments[arguments.length - 1];
             fetch('/api/patients/' + arguments[0], {method: 'PUT', credentials: 'same-origin',
               headers: {'Content-Type': 'application/json'}, body: JSON.stringify({status: 'archived'})})
             .then(r => r.json().then(b => done([r.status, b.error && b.error.code])));",
            vec![json!(patient_id)],
        )
        .await;
    assert_eq!(forged, json!([403, "csrf_failed"]), "a write without X-CSRF-Token");
    web.screenshot(&dir.join("05-patient.png")).await;

    // Export: a ZIP lands in the downloads.
    web.click_on("#export-one").await;
    let zip = web.wait_download("IPP-CONSOLE.zip").await;
    let bytes = std::fs::read(&zip).expect("downloaded ZIP");
    assert!(bytes.starts_with(b"PK\x03\x04"), "a ZIP archive");

    // Group B's patient by its URL: not found, and nothing of it shown.
    web.goto(&format!("{}/ui/#/patients/{secret_id}", d.url)).await;
    web.wait_text("main", "Not found").await;
    let text = web.page_text().await;
    assert!(!text.contains("IPP-SECRET") && !text.contains("Cachet"), "group B's patient shown:\n{text}");
    let alice_api = d.client();
    alice_api.login("alice@a.test", PASSWORD).await.expect_status(200);
    preview_follows_visibility(&d, &bob, &alice_api, secret_id).await;

    // A second browser revokes the first one's session; the first goes back to sign-in.
    let other = Browser::start().await;
    other.goto(&format!("{}/ui/", d.url)).await;
    sign_in(&other, "alice@a.test", PASSWORD).await;
    other.wait_for("#patient-search").await;
    other.click_on("#account a[href='#/sessions']").await;
    other.wait_for("#sessions").await;
    // Two devices of this test plus the API client above: revoke all but this one.
    loop {
        let count = "document.querySelectorAll('#sessions button.danger').length";
        let n = other.js(&format!("return {count};"), vec![]).await.as_u64().unwrap_or(0);
        if n == 0 {
            break;
        }
        other.click_on("#sessions button.danger").await;
        other.wait_js("a session revoked", &format!("document.getElementById('sessions') && {count} < {n}")).await;
    }
    other.screenshot(&dir.join("06-sessions.png")).await;
    assert_translated(&other).await;

    // A personal API token, shown once, that works for scripts.
    other.click_on("#account a[href='#/profile']").await;
    other.wait_for("#token-form").await;
    other.fill("#token-name", "nightly import").await;
    other.fill("#token-password", PASSWORD).await;
    other.click_on("#token-form button[type=submit]").await;
    other.wait_text("#token-shown", "coh_").await;
    let token_el = other.wait_for("#token-shown code").await;
    let token = other.text(&token_el).await;
    other.wait_text("#tokens", "nightly import").await;
    let script = Client::new(&d.url).with_bearer(token.trim());
    assert_eq!(script.get("/api/patients").await.expect_status(200)["total"], 1, "the token sees group A's patient only");
    other.screenshot(&dir.join("06b-profile-token.png")).await;
    assert_translated(&other).await;
    web.goto(&format!("{}/ui/#/patients", d.url)).await;
    web.wait_text("#login-notice", "session has ended").await;
    web.screenshot(&dir.join("07-session-ended.png")).await;

    // Throttling, shown plainly.
    for _ in 0..3 {
        let msg = failed_sign_in(&web, "mallory@a.test", "guess-guess-guess").await;
        assert!(msg.contains("Wrong email or password"), "{msg}");
    }
    let msg = failed_sign_in(&web, "mallory@a.test", "guess-guess-guess").await;
    assert!(msg.contains("Too many failed attempts"), "{msg}");
    web.screenshot(&dir.join("08-throttled.png")).await;

    // An admin: every patient, the admin pages, the audit as CSV, Orthanc Explorer.
    other.click_on("#signout").await;
    other.wait_for("#login-form").await;
    sign_in(&other, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    other.wait_text("#patient-count", "2 patient").await;
    other.wait_text("#patient-rows", "Cardiologie").await;
    other.screenshot(&dir.join("09-admin-patients.png")).await;
    for checkbox in other.find_all("#patient-rows input[type=checkbox]").await {
        other.click(&checkbox).await;
    }
    other.wait_text("#export-selected", "(2)").await;
    other.click_on("#export-selected").await;
    let zip = std::fs::read(other.wait_download(".zip").await).expect("downloaded ZIP");
    let names = String::from_utf8_lossy(&zip);
    assert!(names.contains("IPP-CONSOLE/") && names.contains("IPP-SECRET/"), "one folder per selected patient");
    other.click_on("#nav a[href='#/admin/users']").await;
    other.wait_text("main table", "carol@a.test").await;
    other.screenshot(&dir.join("10-users.png")).await;
    assert_translated(&other).await;
    other.click_on("#nav a[href='#/admin/groups']").await;
    other.wait_js("the groups listed", "[...document.querySelectorAll('main table input')].some(i => i.value === 'Neurologie')").await;
    assert_translated(&other).await;
    other.click_on("#nav a[href='#/admin/audit']").await;
    other.wait_text("#audit", "IMPORT").await;
    other.screenshot(&dir.join("11-audit.png")).await;
    assert_translated(&other).await;
    other.click_on("#audit-csv").await;
    let csv = std::fs::read_to_string(other.wait_download(".csv").await).expect("CSV");
    assert!(csv.starts_with("id,at,user_id,actor_email,action"), "{csv}");
    assert!(csv.contains("EXPORT") && csv.contains("alice@a.test"), "{csv}");
    if d.host == Host::Plugin {
        other.wait_for("#nav a[href='/app/explorer.html']").await;
        let status = other
            .js_async(
                "const done = arguments[arguments.length - 1];
                 Promise.all([fetch('/app/explorer.html'), fetch('/system')]).then(rs => done(rs.map(r => r.status)));",
                vec![],
            )
            .await;
        assert_eq!(status, json!([200, 200]), "Orthanc Explorer and Orthanc's API with the console's session");
        other.goto(&format!("{}/app/explorer.html", d.url)).await;
        other.wait_js("Orthanc Explorer", "document.title.includes('Orthanc')").await;
        other.screenshot(&dir.join("12-orthanc-explorer.png")).await;
    } else {
        assert!(other.find("#nav a[href='/app/explorer.html']").await.is_none(), "no Explorer link beside the sidecar");
    }

    // A file dropped on the zone: a script-made DataTransfer reaches the drop handler
    // (an OS drag of a folder cannot be made headless: its directory entries exist only
    // for real drags), which uploads it and shows its report.
    other.goto(&format!("{}/ui/#/import", d.url)).await;
    other.wait_for("#dropzone").await;
    let bytes = std::fs::read(&durand().files[0].path).expect("read");
    let entry = other
        .js(
            "const [bytes, name] = arguments;
             const dt = new DataTransfer();
             dt.items.add(new File([new Uint8Array(bytes)], name));
             const entry = dt.items[0].webkitGetAsEntry();
             document.getElementById('dropzone').dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));
             return entry ? (entry.isFile ? 'file entry' : 'other entry') : 'no entry';",
            vec![json!(bytes), json!("IM-DROPPED")],
        )
        .await;
    eprintln!("a script-made drop gives: {entry}");
    let report = other.wait_text("#import-results .report[data-file='IM-DROPPED']", "IPP-CONSOLE").await;
    assert!(report.contains("1\nAlready stored"), "report:\n{report}");

    // A CD's folder through the folder picker (ChromeDriver uploads a directory given to
    // an <input webkitdirectory>): one tar of its files, the DICOMDIR skipped and named.
    let (_cd_tmp, cd, cd_study) = cd_folder();
    other.upload("#import-folder", &cd).await;
    other.wait_for("#import-done").await;
    let report = other.wait_text("#import-results .report[data-file='CD-PETIT/']", "IPP-CONSOLE-CD").await;
    let n = cd_study.files.len();
    for counted in [format!("{n}\nDICOM received"), format!("{n}\nStored"), "2\nSkipped".to_string()] {
        assert!(report.contains(&counted), "{counted:?} in the report:\n{report}");
    }
    assert!(report.contains("CD-PETIT/DICOMDIR"), "the DICOMDIR is named by its path in the folder:\n{report}");
    assert!(report.contains(&format!("CD-PETIT/{LONG_FOLDER}/compte rendu.txt")), "a long name named whole:\n{report}");
    other.screenshot(&dir.join("11b-import-folder.png")).await;
    let found = admin.get("/api/patients?q=IPP-CONSOLE-CD").await.expect_status(200);
    let id = found["items"][0]["id"].as_i64().expect("the CD's patient is registered");
    let instances = admin.get(&format!("/api/patients/{id}/instances")).await.expect_status(200);
    let uids: std::collections::BTreeSet<String> =
        instances.as_array().expect("list").iter().filter_map(|i| i["sop_instance_uid"].as_str().map(String::from)).collect();
    assert_eq!(uids, cd_study.sop_uids(), "every file of the CD stored and registered");
    other.goto(&format!("{}/ui/#/patients", d.url)).await;

    // French, and a tablet-sized window.
    other.wait_for("#patient-search").await;
    other.choose("#account select", "fr").await;
    other.wait_text("#nav", "Importer").await;
    other.wait_text("#patient-count", "3 patient").await;
    assert_translated(&other).await;
    other.set_size(820, 1180).await;
    other.screenshot(&dir.join("13-patients-fr-tablet.png")).await;
}

fn throttle_settings() -> BTreeMap<String, Value> {
    BTreeMap::from([("LoginMaxFailuresPerAccount".to_string(), json!(3))])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_in_a_browser_sidecar() {
    console_in_a_browser(Deployment::start_with(Host::Sidecar, Backend::Sqlite, throttle_settings()).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_in_a_browser_plugin() {
    console_in_a_browser(Deployment::start_with(Host::Plugin, Backend::Sqlite, throttle_settings()).await).await;
}
