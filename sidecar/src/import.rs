//! `cohort import PATH`: a folder, a ZIP or a file, through the core's import service
//! (local), or to a remote Cohort's `POST /api/patients/import` with a personal API
//! token (`--url`, `--token-file`). Both walk the path the same way.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use cohort_core::services::import::{sniff, FileError, ImportReport, ImportTarget, Importer, Progress, ZipSource, SNIFF_LEN};
use cohort_core::services::Actor;
use cohort_core::store::patients::Scope;
use cohort_core::{App, Config, Host};
use indicatif::{ProgressBar, ProgressStyle};

struct Bar(ProgressBar);

impl Progress for Bar {
    fn entry(&self, name: &str, outcome: &str) {
        self.0.inc(1);
        if outcome != "stored" {
            self.0.set_message(format!("{outcome}: {name}"));
        }
    }
}

/// Every regular file under `root`, in a stable order.
fn files_under(root: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&dir)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.path());
        for e in entries {
            let kind = e.file_type()?;
            if kind.is_dir() {
                stack.push(e.path());
            } else if kind.is_file() {
                out.push(e.path());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// A ZIP or a tar archive (plain, gzip or Zstandard): by name, or by its first bytes.
fn is_archive(path: &Path) -> std::io::Result<bool> {
    use std::io::Read;
    let name = path.file_name().map(|n| n.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
    if [".tar", ".tgz", ".tar.gz", ".tar.zst", ".tzst"].iter().any(|ext| name.ends_with(ext)) {
        return Ok(true);
    }
    let mut head = Vec::with_capacity(SNIFF_LEN);
    std::fs::File::open(path)?.take(SNIFF_LEN as u64).read_to_end(&mut head)?;
    Ok(is_zip(path)? || sniff(&head) == Some("tar"))
}

fn is_zip(path: &Path) -> std::io::Result<bool> {
    use std::io::Read;
    let mut magic = [0u8; 4];
    let n = std::fs::File::open(path)?.read(&mut magic)?;
    Ok(n == 4 && &magic == b"PK\x03\x04")
}

pub async fn run(config: Config, path: PathBuf, group: Option<String>) -> anyhow::Result<()> {
    let app = App::start(config.clone(), Some(crate::orthanc_pacs(&config)?), Host::Sidecar).await?;
    let group_id = match &group {
        Some(name) => {
            let mut db = app.store.conn().await?;
            Some(db.group_by_name(name).await?.ok_or_else(|| anyhow::anyhow!("no research group named {name:?}"))?.id)
        }
        None => None,
    };
    let files = if path.is_dir() { files_under(&path)? } else { vec![path.clone()] };
    let bar = ProgressBar::new(files.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {pos} entries ({per_sec}) {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    let target = ImportTarget { actor: Actor::system(), scope: Scope::All, new_patient_group: group_id };
    let mut importer = Importer::new(&app, target).map_err(|e| anyhow::anyhow!("{}", e.message))?.with_progress(Arc::new(Bar(bar.clone())));
    for file in &files {
        let name = file.strip_prefix(&path).ok().filter(|p| !p.as_os_str().is_empty()).unwrap_or(file).display().to_string();
        let step = if is_archive(file)? {
            importer.add_zip(&name, ZipSource::File(std::fs::File::open(file)?)).await
        } else {
            importer.add_file(&name, Bytes::from(std::fs::read(file)?)).await
        };
        step.map_err(|e| anyhow::anyhow!("{name}: {}", e.message))?;
    }
    let report = importer.finish().await.map_err(|e| anyhow::anyhow!("{}", e.message))?;
    bar.finish_and_clear();
    print_summary(&report);
    app.store.close().await;
    if report.instances.received == 0 {
        anyhow::bail!("nothing under {} is DICOM", path.display());
    }
    if report.instances.failed > 0 {
        anyhow::bail!("{} instance(s) failed", report.instances.failed);
    }
    Ok(())
}

/// Imports into a remote Cohort over HTTP, one file per request, with a `write` API
/// token read from `token_file` (never from the command line, where `ps` shows it).
pub async fn run_remote(url: &str, token_file: &Path, path: PathBuf) -> anyhow::Result<()> {
    let token = std::fs::read_to_string(token_file)
        .map_err(|e| anyhow::anyhow!("cannot read the token file {}: {e}", token_file.display()))?
        .trim()
        .to_string();
    if token.is_empty() {
        anyhow::bail!("the token file {} is empty", token_file.display());
    }
    let endpoint = format!("{}/api/patients/import", url.trim_end_matches('/'));
    // A plugin-mode Cohort is Orthanc, which closes idle kept-alive connections after 1 s:
    // reuse a connection only while it is surely still open (POSTs are not retried).
    let client = reqwest::Client::builder().pool_idle_timeout(std::time::Duration::from_millis(500)).build()?;
    // The token is checked before any upload: a wrong one is told at once, in the
    // server's words, whatever the size of the first file.
    let me = format!("{}/api/auth/me", url.trim_end_matches('/'));
    let answer = client.get(&me).bearer_auth(&token).send().await.map_err(|e| anyhow::anyhow!("{me}: {e}"))?;
    if !answer.status().is_success() {
        let status = answer.status();
        let error: serde_json::Value = answer.json().await.unwrap_or_default();
        let code = error["error"]["code"].as_str().unwrap_or("");
        let message = error["error"]["message"].as_str().unwrap_or("");
        anyhow::bail!("{me}: {status} {code}: {message}");
    }
    let files = if path.is_dir() { files_under(&path)? } else { vec![path.clone()] };
    let bar = ProgressBar::new(files.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} files ({per_sec}, eta {eta}) {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut total = ImportReport::default();
    for file in &files {
        let name = file.strip_prefix(&path).ok().filter(|p| !p.as_os_str().is_empty()).unwrap_or(file).display().to_string();
        // A DICOMDIR (or macOS metadata) is skipped here as the server skips it inside an
        // archive: sent alone, a DICOMDIR would reach Orthanc, which refuses it.
        if let Some(why) = cohort_core::services::import::skipped_by_name(&name) {
            total.skipped += 1;
            total.errors.push(FileError { file: name.clone(), error: why.to_string() });
            bar.inc(1);
            continue;
        }
        let content_type = if is_zip(file)? { "application/zip" } else { "application/octet-stream" };
        let length = std::fs::metadata(file)?.len();
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(tokio::fs::File::open(file).await?));
        let answer = client
            .post(&endpoint)
            .bearer_auth(&token)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .header(reqwest::header::CONTENT_LENGTH, length)
            .body(body)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("{endpoint}: {e}"))?;
        let status = answer.status();
        let text = answer.text().await.unwrap_or_default();
        if status.is_success() {
            let report: ImportReport = serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{name}: unexpected answer: {e}"))?;
            merge(&mut total, report, &name);
        } else {
            let error: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            let code = error["error"]["code"].as_str().unwrap_or("");
            let message = error["error"]["message"].as_str().unwrap_or(&text);
            match code {
                // Not DICOM: the server says so, and the walk goes on.
                "no_dicom" => {
                    total.skipped += 1;
                    total.errors.push(FileError { file: name.clone(), error: message.to_string() });
                }
                // The credential or the server is wrong: stop at once.
                _ if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN => {
                    bar.finish_and_clear();
                    anyhow::bail!("{endpoint}: {status} {code}: {message}");
                }
                _ => {
                    // A refused file counts as one failed instance when it is not a ZIP.
                    total.instances.received += 1;
                    total.instances.failed += 1;
                    total.errors.push(FileError { file: name.clone(), error: format!("{status} {code}: {message}") });
                }
            }
        }
        bar.inc(1);
        bar.set_message(name);
    }
    bar.finish_and_clear();
    print_summary(&total);
    if total.instances.received == 0 {
        anyhow::bail!("nothing under {} is DICOM", path.display());
    }
    if total.instances.failed > 0 {
        anyhow::bail!("{} instance(s) failed", total.instances.failed);
    }
    Ok(())
}

/// Adds one request's report to the running total; entry names are prefixed with the
/// file they came from.
fn merge(total: &mut ImportReport, r: ImportReport, file: &str) {
    let (t, i) = (&mut total.instances, &r.instances);
    t.received += i.received;
    t.stored += i.stored;
    t.already_stored += i.already_stored;
    t.failed += i.failed;
    total.skipped += r.skipped;
    for p in r.patients {
        if let Some(known) = total.patients.iter_mut().find(|k| k.id == p.id) {
            known.created |= p.created;
        } else {
            total.patients.push(p);
        }
    }
    for e in r.errors {
        let name = if e.file == file || e.file.is_empty() { e.file } else { format!("{file}/{}", e.file) };
        total.errors.push(FileError { file: name, error: e.error });
    }
}

fn print_summary(r: &ImportReport) {
    let i = &r.instances;
    println!(
        "DICOM instances: {} received, {} stored, {} already stored, {} failed; {} other file(s) skipped",
        i.received, i.stored, i.already_stored, i.failed, r.skipped
    );
    for p in &r.patients {
        println!("  patient {} (id {}){}", p.external_id, p.id, if p.created { ", new" } else { "" });
    }
    for e in r.errors.iter().take(20) {
        println!("  {}: {}", e.file, e.error);
    }
    if r.errors.len() > 20 {
        println!("  … and {} more", r.errors.len() - 20);
    }
}
