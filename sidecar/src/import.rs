//! `cohort import PATH`: a folder, a ZIP or a file, through the core's import service.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use cohort_core::services::import::{ImportReport, ImportTarget, Importer, Progress, ZipSource};
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
        let step = if is_zip(file)? {
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
