//! `cohort-bench`: Cohort's `/api` side by side with Orthanc's own routes, and the plugin
//! with the sidecar, on one machine, in one run, contenders alternating. Started by
//! `scripts/bench`, which builds everything in release mode first.
//!
//! Contenders: a plain Orthanc (the native baseline), Orthanc with the Cohort plugin, and
//! the sidecar beside its own Orthanc (SQLite), plus a sidecar on PostgreSQL for the
//! search figures. Load comes from `wrk`, single transfers from `curl`; memory is the
//! serving process's resident set, sampled every 20 ms.

mod metrics_cost;
mod population;
mod registry;
mod soak;
mod tools;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use cohort_e2e::deploy::Sidecar;
use cohort_e2e::dicom::{self, StudySpec, ZipOptions};
use cohort_e2e::orthanc::{Orthanc, OrthancOptions};
use cohort_e2e::{Backend, Client, Deployment, Host, ADMIN_EMAIL, ADMIN_PASSWORD};
use serde_json::{json, Value};
use tools::{curl, rss_mib, Load, RssSampler, Wrk, WRK_SCRIPT};

/// Sizes of a run; `--quick` shrinks them for a smoke test of the bench itself.
struct Sizes {
    patients: u32,
    instances_per_series: u32,
    image_side: u16,
    seconds: u32,
    import_instances: u32,
    registry: u32,
    big_instances: u32,
}

const FULL: Sizes = Sizes {
    patients: 20,
    instances_per_series: 50,
    image_side: 512,
    seconds: 10,
    import_instances: 500,
    registry: 1_000_000,
    big_instances: 1000,
};
const QUICK: Sizes = Sizes {
    patients: 4,
    instances_per_series: 10,
    image_side: 128,
    seconds: 3,
    import_instances: 100,
    registry: 20_000,
    big_instances: 40,
};

/// Something serving HTTP that we measure.
struct Target {
    name: &'static str,
    url: String,
    headers: Vec<String>,
    /// The process whose memory counts.
    pid: u32,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let sizes = if args.iter().any(|a| a == "--quick") { QUICK } else { FULL };
    let skip_big = args.iter().any(|a| a == "--skip-big");
    let value = |name: &str| args.windows(2).find(|w| w[0] == name).map(|w| w[1].clone());
    let out_dir = value("--out").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("bench-out"));
    let registry_size = value("--registry").map(|v| v.parse::<u32>()).transpose().context("--registry N")?.unwrap_or(sizes.registry);
    let seconds = value("--seconds").map(|v| v.parse::<u32>()).transpose().context("--seconds N")?.unwrap_or(sizes.seconds);
    std::fs::create_dir_all(&out_dir)?;
    // Orthanc's --verbose logging would cost the plugin on every request.
    std::env::set_var("COHORT_TEST_ORTHANC_QUIET", "1");
    let work = tempfile::tempdir()?;
    let script = work.path().join("bench.lua");
    std::fs::write(&script, WRK_SCRIPT)?;
    if let Some(url) = value("--build-registry") {
        // Only build: migrate the database at `url` and fill it with `--registry` patients.
        let store = cohort_core::store::Store::connect(&url).await?;
        store.migrate().await?;
        store.close().await;
        let built = population::build(&url, registry_size).await?;
        eprintln!("==> {registry_size} patients in {:.0} s", built.seconds);
        return Ok(());
    }
    // The soak: 200 clients for 10 minutes on 100,000 patients; with `--quick`, 50 for 1.
    let (soak_seconds, soak_clients, soak_registry) =
        if sizes.registry == QUICK.registry { (60, 50, QUICK.registry) } else { (600, 200, soak::REGISTRY) };
    let soak_options = soak::Options {
        seconds: value("--soak-seconds").map(|v| v.parse()).transpose().context("--soak-seconds N")?.unwrap_or(soak_seconds),
        clients: value("--soak-clients").map(|v| v.parse()).transpose().context("--soak-clients N")?.unwrap_or(soak_clients),
        registry: value("--soak-registry").map(|v| v.parse()).transpose().context("--soak-registry N")?.unwrap_or(soak_registry),
        hosts: value("--soak-hosts")
            .unwrap_or_else(|| "plugin,sidecar".into())
            .split(',')
            .map(soak::Contender::parse)
            .collect::<anyhow::Result<_>>()?,
    };
    if value("--only").as_deref() == Some("soak") {
        let (md, failed) = soak::run(&soak_options).await?;
        let file = publish(&out_dir, "soak.md", &md)?;
        if failed {
            bail!("FAILED: the soak saw 5xx answers, transport errors or unexpected statuses (see {})", file.display());
        }
        return Ok(());
    }
    if value("--only").as_deref() == Some("metrics") {
        let md = metrics_cost::run(seconds, &script, work.path()).await?;
        publish(&out_dir, "metrics-cost.md", &md)?;
        return Ok(());
    }
    if value("--only").as_deref() == Some("raw") {
        let side = value("--image-side").map(|v| v.parse::<u16>()).transpose().context("--image-side N")?.unwrap_or(136);
        let rounds = value("--rounds").map(|v| v.parse::<u32>()).transpose().context("--rounds N")?.unwrap_or(3);
        let md = raw_only(side, seconds, rounds, &work, &script).await?;
        publish(&out_dir, "raw.md", &md)?;
        return Ok(());
    }
    if value("--only").as_deref() == Some("login") {
        let cost: BTreeMap<String, Value> = [("BcryptCost".to_string(), json!(12))].into_iter().collect();
        let plugin = Deployment::start_with(Host::Plugin, Backend::Sqlite, cost.clone()).await;
        let sidecar = Deployment::start_with(Host::Sidecar, Backend::Sqlite, cost).await;
        let [plugin_t, sidecar_t] = cohort_targets(&plugin, &sidecar).await?;
        let logins = login_storm([&plugin_t, &sidecar_t], &script, work.path(), seconds).await?;
        let mut report = Report { md: format!("# Benchmarks: login\n\n{}.\n\n", machine()) };
        report.logins(&logins);
        publish(&out_dir, "login.md", &report.md)?;
        return Ok(());
    }
    if value("--only").as_deref() == Some("registry") {
        let mut md = Report::header();
        let rounds = value("--rounds").map(|v| v.parse::<u32>()).transpose().context("--rounds N")?.unwrap_or(1);
        let only = registry::Selection::parse(value("--cases").as_deref(), rounds);
        md.push_str(&match value("--registry-db") {
            Some(url) => registry::run_on(&url, seconds, &script, work.path(), &only).await?,
            None => registry::run(registry_size, seconds, &script, work.path(), &only).await?,
        });
        publish(&out_dir, "registry.md", &md)?;
        return Ok(());
    }

    eprintln!("==> starting the contenders");
    let cost = [("BcryptCost".to_string(), json!(12)), ("MaxExportBytes".to_string(), json!(u64::from(u32::MAX)))];
    let settings: BTreeMap<String, Value> = cost.iter().cloned().collect();
    let native = Orthanc::start(OrthancOptions::default()).await;
    let plugin = Deployment::start_with(Host::Plugin, Backend::Sqlite, settings.clone()).await;
    let sidecar = Deployment::start_with(Host::Sidecar, Backend::Sqlite, settings.clone()).await;

    let native_t = Target { name: "Orthanc (native)", url: native.url(), headers: vec![], pid: native.pid() };
    let [plugin_t, sidecar_t] = cohort_targets(&plugin, &sidecar).await?;

    let mut report = Report::new(&native_t, &sizes).await?;

    // `--only imports`: the two import sections alone (ZIP vs Orthanc, then by archive type).
    let only_imports = value("--only").as_deref() == Some("imports");
    if !only_imports {
        raw_download(&sizes, &work, &script, [&native_t, &plugin_t, &sidecar_t], &mut report).await?;
    }

    eprintln!("==> import of a {}-instance ZIP", sizes.import_instances);
    let batch = dicom::study(
        &StudySpec::new("IMPORT")
            .studies(1)
            .series(5)
            .instances(sizes.import_instances / 5)
            .size(sizes.image_side, sizes.image_side)
            .seed(2),
    );
    let batch_zip = dicom::zip(&batch.paths(), ZipOptions { store: true, ..ZipOptions::default() });
    let mut rates: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for _round in 0..3 {
        for t in [&native_t, &plugin_t, &sidecar_t] {
            let r = post_zip(t, &batch_zip.path)?;
            if r.status != 200 {
                bail!("{} refused the import ZIP ({})", t.name, r.status);
            }
            rates.entry(t.name).or_default().push(f64::from(sizes.import_instances) / r.seconds);
            delete_patient(t, "IMPORT").await?;
        }
    }
    report.import(sizes.import_instances, &rates);

    eprintln!("==> import of the same {} instances by archive type", sizes.import_instances);
    let (cd, formats) = archive_formats(work.path(), &batch.paths())?;
    let mut by_format: BTreeMap<(&str, &str), Vec<f64>> = BTreeMap::new();
    for _round in 0..3 {
        for a in &formats {
            for t in [&plugin_t, &sidecar_t] {
                let r = curl(&format!("{}/api/patients/import", t.url), &t.headers, Some((&a.path, a.content_type)))?;
                if r.status != 200 {
                    bail!("{} refused the {} import ({})", t.name, a.label, r.status);
                }
                by_format.entry((a.label, t.name)).or_default().push(f64::from(sizes.import_instances) / r.seconds);
                let stored = registered_instances(t, "IMPORT").await?;
                if stored != sizes.import_instances as usize {
                    bail!("{}: {stored} instances registered from the {} import", t.name, a.label);
                }
                delete_patient(t, "IMPORT").await?;
            }
        }
    }
    let tokens = [
        (plugin_t.name, token_file(work.path(), &plugin.db.url, &plugin.orthanc.url())?),
        (sidecar_t.name, token_file(work.path(), &sidecar.db.url, &sidecar.orthanc.url())?),
    ];
    for _round in 0..3 {
        for t in [&plugin_t, &sidecar_t] {
            let token = &tokens.iter().find(|(name, _)| *name == t.name).context("token")?.1;
            let args = ["--url", t.url.as_str(), "--token-file", token.to_str().context("path")?];
            let seconds = cli_import(&sidecar.db.url, &sidecar.orthanc.url(), &cd, &args, sizes.import_instances)?;
            by_format.entry((CD_REMOTE, t.name)).or_default().push(f64::from(sizes.import_instances) / seconds);
            delete_patient(t, "IMPORT").await?;
        }
        let seconds = cli_import(&sidecar.db.url, &sidecar.orthanc.url(), &cd, &[], sizes.import_instances)?;
        by_format.entry((CD_LOCAL, sidecar_t.name)).or_default().push(f64::from(sizes.import_instances) / seconds);
        delete_patient(&sidecar_t, "IMPORT").await?;
    }
    let labels: Vec<&str> = formats.iter().map(|a| a.label).chain([CD_REMOTE, CD_LOCAL]).collect();
    report.import_formats(sizes.import_instances, &labels, &by_format, [plugin_t.name, sidecar_t.name]);
    if only_imports {
        let md = report.finish();
        publish(&out_dir, "imports.md", &md)?;
        return Ok(());
    }

    eprintln!("==> patient export");
    let mut exports = Vec::new();
    for t in [&native_t, &plugin_t, &sidecar_t] {
        let path = export_path(t, "BENCH-1").await?;
        let sampler = RssSampler::start(t.pid);
        let before = rss_mib(t.pid);
        let r = curl(&format!("{}{path}", t.url), &t.headers, None)?;
        let peak = sampler.stop();
        if r.status != 200 {
            bail!("{} export answered {}", t.name, r.status);
        }
        exports.push((t.name, r, before, peak));
    }
    report.export(&exports);

    eprintln!("==> de-identified patient export");
    let mut deidentified = Vec::new();
    for t in [&plugin_t, &sidecar_t] {
        let path = export_path(t, "BENCH-1").await?;
        let identified =
            exports.iter().find(|(name, ..)| *name == t.name).map(|(_, r, ..)| r.bytes as f64 / 1e6 / r.seconds).unwrap_or(0.0);
        let sampler = RssSampler::start(t.pid);
        let r = curl(&format!("{}{path}?deidentify=true", t.url), &t.headers, None)?;
        let peak = sampler.stop();
        if r.status != 200 {
            bail!("{} de-identified export answered {}", t.name, r.status);
        }
        deidentified.push((t.name, identified, r, peak));
    }
    report.deidentified_export(&deidentified);

    report.md.push_str(&registry::run(registry_size, seconds, &script, work.path(), &registry::Selection::default()).await?);

    let logins = login_storm([&plugin_t, &sidecar_t], &script, work.path(), sizes.seconds).await?;
    report.logins(&logins);

    if !skip_big {
        let target_mb = u64::from(sizes.big_instances) * 2;
        eprintln!("==> memory of the sidecar with a {target_mb} MB patient");
        let big = dicom::study(&StudySpec::new("BIG").studies(1).series(4).instances(sizes.big_instances / 4).size(1024, 1024).seed(3));
        let big_zip = dicom::zip(&big.paths(), ZipOptions { store: true, ..ZipOptions::default() });
        drop(big);
        let sampler = RssSampler::start(sidecar_t.pid);
        let imported = post_zip(&sidecar_t, &big_zip.path)?;
        let import_peak = sampler.stop();
        if imported.status != 200 {
            bail!("the sidecar refused the big ZIP ({})", imported.status);
        }
        drop(big_zip);
        let path = export_path(&sidecar_t, "BIG").await?;
        let sampler = RssSampler::start(sidecar_t.pid);
        let exported = curl(&format!("{}{path}", sidecar_t.url), &sidecar_t.headers, None)?;
        let export_peak = sampler.stop();
        report.big(imported, import_peak, exported, export_peak);
    }

    drop((plugin, sidecar, native));
    let (soak_md, soak_failed) = soak::run(&soak_options).await?;
    report.md.push_str(&soak_md);

    let md = report.finish();
    let file = publish(&out_dir, "benchmarks.md", &md)?;
    if soak_failed {
        bail!("FAILED: the soak saw 5xx answers, transport errors or unexpected statuses (see {})", file.display());
    }
    Ok(())
}

/// Loads the base dataset in each contender, then measures raw instance download.
async fn raw_download(
    sizes: &Sizes,
    work: &tempfile::TempDir,
    script: &Path,
    targets: [&Target; 3],
    report: &mut Report,
) -> anyhow::Result<()> {
    let [native_t, plugin_t, sidecar_t] = targets;
    eprintln!("==> generating and loading {} instances", sizes.patients * 2 * sizes.instances_per_series);
    let base = dicom::study(
        &StudySpec::new("BENCH")
            .patients(sizes.patients)
            .studies(1)
            .series(2)
            .instances(sizes.instances_per_series)
            .size(sizes.image_side, sizes.image_side)
            .modalities(&["CT", "MR"])
            .seed(1),
    );
    let base_zip = dicom::zip(&base.paths(), ZipOptions { store: true, ..ZipOptions::default() });
    for t in [native_t, plugin_t, sidecar_t] {
        let r = post_zip(t, &base_zip.path)?;
        if r.status != 200 {
            bail!("{} refused the base dataset ({})", t.name, r.status);
        }
    }
    let native_ids = instance_ids_native(native_t).await?;
    let plugin_ids = instance_ids_cohort(plugin_t).await?;
    let sidecar_ids = instance_ids_cohort(sidecar_t).await?;

    eprintln!("==> raw instance download");
    let paths = |ids: &[String], prefix: &str| -> anyhow::Result<PathBuf> {
        let file = work.path().join(format!("paths-{}.txt", rand::random::<u32>()));
        std::fs::write(
            &file,
            ids.iter()
                .take(500)
                .map(|id| format!("{prefix}{id}{}", if prefix == "/instances/" { "/file" } else { "" }))
                .collect::<Vec<_>>()
                .join("\n"),
        )?;
        Ok(file)
    };
    let image_paths = [
        (native_t, paths(&native_ids, "/instances/")?),
        (plugin_t, paths(&plugin_ids, "/api/patients/images/")?),
        (sidecar_t, paths(&sidecar_ids, "/api/patients/images/")?),
    ];
    for connections in [1, 32] {
        let mut row = Vec::new();
        for (t, p) in &image_paths {
            row.push(load(t, script, p, connections, sizes.seconds, None)?);
        }
        report.image(connections, &row);
    }

    Ok(())
}

/// `--only raw`: the raw download alone, on instances of `side`×`side` 16-bit (136: about
/// 39 KB, the size where a request's fixed cost shows most), `rounds` rounds alternating
/// the contenders; each cell is the median round by req/s. Twice: with Orthanc's storage
/// cache as configured by default (128 MB: the files just imported are all in it), then
/// without (`MaximumStorageCacheSize` 0: every file read from the disk, as for a registry
/// whose images do not fit in Orthanc's cache), every contender alike.
async fn raw_only(side: u16, seconds: u32, rounds: u32, work: &tempfile::TempDir, script: &Path) -> anyhow::Result<String> {
    let mut md = format!("# Benchmarks: raw DICOM\n\n{}.\n\n", machine());
    for cache in [true, false] {
        raw_set(side, seconds, rounds, work, script, cache, &mut md).await?;
    }
    Ok(md)
}

/// One table of [`raw_only`], on contenders started for it.
async fn raw_set(
    side: u16,
    seconds: u32,
    rounds: u32,
    work: &tempfile::TempDir,
    script: &Path,
    cache: bool,
    md: &mut String,
) -> anyhow::Result<()> {
    eprintln!("==> starting the contenders (Orthanc's storage cache {})", if cache { "on" } else { "off" });
    let mut native_options = OrthancOptions::default();
    let mut settings = BTreeMap::new();
    if !cache {
        native_options.extra.insert("MaximumStorageCacheSize".into(), json!(0));
        settings.insert(format!("{}MaximumStorageCacheSize", cohort_e2e::deploy::ORTHANC_SETTING), json!(0));
    }
    let native = Orthanc::start(native_options).await;
    let plugin = Deployment::start_with(Host::Plugin, Backend::Sqlite, settings.clone()).await;
    let sidecar = Deployment::start_with(Host::Sidecar, Backend::Sqlite, settings.clone()).await;
    // The sidecar reading instance files in Orthanc's storage directory.
    let mut stored = settings;
    stored.insert("OrthancStorageDirectory".to_string(), json!(cohort_e2e::deploy::ORTHANC_STORAGE));
    let sidecar_stored = Deployment::start_with(Host::Sidecar, Backend::Sqlite, stored).await;
    let [plugin_t, sidecar_t] = cohort_targets(&plugin, &sidecar).await?;
    let stored_t = sidecar_target("Cohort sidecar, OrthancStorageDirectory", &sidecar_stored).await?;
    let targets =
        [Target { name: "Orthanc (native)", url: native.url(), headers: vec![], pid: native.pid() }, plugin_t, sidecar_t, stored_t];
    let files = dicom::study(&StudySpec::new("RAW").patients(4).studies(1).series(2).instances(25).size(side, side).seed(3));
    let bytes =
        files.paths().iter().map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)).sum::<u64>() / files.files.len().max(1) as u64;
    let zip = dicom::zip(&files.paths(), ZipOptions { store: true, ..ZipOptions::default() });
    let mut paths = Vec::new();
    for t in &targets {
        let r = post_zip(t, &zip.path)?;
        if r.status != 200 {
            bail!("{} refused the dataset ({})", t.name, r.status);
        }
        let (ids, prefix, suffix) = match t.name {
            "Orthanc (native)" => (instance_ids_native(t).await?, "/instances/", "/file"),
            _ => (instance_ids_cohort(t).await?, "/api/patients/images/", ""),
        };
        let file = work.path().join(format!("raw-paths-{}.txt", rand::random::<u32>()));
        std::fs::write(&file, ids.iter().map(|id| format!("{prefix}{id}{suffix}")).collect::<Vec<_>>().join("\n"))?;
        paths.push(file);
    }
    hold(targets.iter().zip(paths.iter().map(|p| p.display().to_string())), &script.display().to_string()).await?;
    // The processes serving each contender, whose CPU time per request is reported: the
    // contender's own, and for a sidecar the Orthanc behind it.
    let serving: [Vec<u32>; 4] = [
        vec![native.pid()],
        vec![plugin.orthanc.pid()],
        vec![targets[2].pid, sidecar.orthanc.pid()],
        vec![targets[3].pid, sidecar_stored.orthanc.pid()],
    ];
    let _ = writeln!(
        md,
        "## Raw instance download, {} instances of {} bytes, {}\n\n`/api/patients/images/{{id}}` (Cohort) vs `/instances/{{id}}/file` (Orthanc), \
         {side}×{side} 16-bit CT/MR, {seconds} s per run, {rounds} rounds alternating the contenders; each cell is the median round \
         (req/s, with its p50 and p99). CPU µs/req: the serving processes' CPU time (user + system, \
         `/proc/PID/stat`) in that round over its requests: Orthanc's (with the plugin in it), or the sidecar's + its Orthanc's.\n",
        files.files.len(),
        bytes,
        if cache {
            "Orthanc's storage cache on (its default, 128 MB: every file just imported is in it)"
        } else {
            "Orthanc's storage cache off (`MaximumStorageCacheSize` 0: every file read from the disk, as when the images read do not fit in the cache)"
        }
    );
    let _ = writeln!(
        md,
        "| clients | contender | req/s (rounds) | vs native | p50 ms | p99 ms | CPU µs/req | errors |\n|---|---|---|---|---|---|---|---|"
    );
    for connections in [1, 32] {
        // Each run with the CPU µs per request of each serving process.
        let mut runs: Vec<Vec<(Load, Vec<f64>)>> = vec![Vec::new(); targets.len()];
        for _ in 0..rounds {
            for (i, t) in targets.iter().enumerate() {
                runs[i].push(load_with_cpu(t, script, &paths[i], connections, seconds, &serving[i])?);
            }
        }
        let medians: Vec<(Load, Vec<f64>)> = runs
            .iter()
            .map(|r| {
                let mut r = r.clone();
                r.sort_by(|a, b| a.0.rps.total_cmp(&b.0.rps));
                r[r.len() / 2].clone()
            })
            .collect();
        for ((t, (m, cpu)), r) in targets.iter().zip(&medians).zip(&runs) {
            let all = r.iter().map(|(l, _)| format!("{:.0}", l.rps)).collect::<Vec<_>>().join(", ");
            let cpu = cpu.iter().map(|us| format!("{us:.1}")).collect::<Vec<_>>().join(" + ");
            let _ = writeln!(
                md,
                "| {connections} | {} | {:.0} ({all}) | {} | {:.2} | {:.2} | {cpu} | {} |",
                t.name,
                m.rps,
                ratio(m.rps, medians[0].0.rps),
                m.p50_ms,
                m.p99_ms,
                r.iter().map(|(l, _)| l.errors).sum::<u64>()
            );
        }
    }
    md.push('\n');
    drop((sidecar_stored, sidecar, plugin, native));
    Ok(())
}

/// Login latency (median of 10 sequential logins), then a storm: 16 clients logging in
/// without pause while 8 clients list patients, against the listing alone.
async fn login_storm(
    targets: [&Target; 2],
    script: &Path,
    work: &Path,
    seconds: u32,
) -> anyhow::Result<Vec<(&'static str, f64, Load, Load, Load)>> {
    eprintln!("==> login latency and a login storm");
    let me_file = work.join("me.txt");
    std::fs::write(&me_file, "/api/patients?page_size=20")?;
    let login_file = work.join("login.txt");
    std::fs::write(&login_file, "/api/auth/login")?;
    let body = json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}).to_string();
    let mut logins = Vec::new();
    for t in targets {
        let mut times = Vec::new();
        for _ in 0..10 {
            let started = Instant::now();
            Client::new(&t.url).login(ADMIN_EMAIL, ADMIN_PASSWORD).await.expect_status(200);
            times.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        let quiet = load(t, script, &me_file, 8, seconds, None)?;
        let storm_target = Target { name: t.name, url: t.url.clone(), headers: vec![], pid: t.pid };
        let (storm, during) = std::thread::scope(|s| {
            let storm = s.spawn(|| load(&storm_target, script, &login_file, 16, seconds + 2, Some(&body)));
            std::thread::sleep(Duration::from_secs(1));
            let during = load(t, script, &me_file, 8, seconds, None);
            (storm.join().map_err(|_| anyhow::anyhow!("storm thread panicked")), during)
        });
        logins.push((t.name, times[times.len() / 2], quiet, storm??, during?));
    }
    Ok(logins)
}

/// The plugin and sidecar deployments as targets, each with the bootstrap admin's token.
async fn cohort_targets(plugin: &Deployment, sidecar: &Deployment) -> anyhow::Result<[Target; 2]> {
    Ok([
        Target { name: "Cohort plugin", url: plugin.url.clone(), headers: vec![bearer(&plugin.url).await?], pid: plugin.orthanc.pid() },
        sidecar_target("Cohort sidecar", sidecar).await?,
    ])
}

/// A sidecar deployment as a contender, signed in as the admin.
async fn sidecar_target(name: &'static str, sidecar: &Deployment) -> anyhow::Result<Target> {
    Ok(Target {
        name,
        url: sidecar.url.clone(),
        headers: vec![bearer(&sidecar.url).await?],
        pid: sidecar.sidecar.as_ref().map(Sidecar::pid).unwrap_or(0),
    })
}

/// Writes a report to `out_dir/name` and prints it; returns the file's path.
fn publish(out_dir: &Path, name: &str, md: &str) -> anyhow::Result<PathBuf> {
    let file = out_dir.join(name);
    std::fs::write(&file, md)?;
    println!("{md}");
    eprintln!("==> written to {}", file.display());
    Ok(file)
}

/// Percent-encodes a query value (UTF-8 bytes outside `[A-Za-z0-9-]`).
fn encode(q: &str) -> String {
    q.bytes().map(|b| if b.is_ascii_alphanumeric() || b == b'-' { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}

/// One archive of the import batch: how the table names it, the file, its content type.
struct Archive {
    label: &'static str,
    path: PathBuf,
    content_type: &'static str,
}

const CD_REMOTE: &str = "CD folder, `cohort import --url` (one request per file)";
const CD_LOCAL: &str = "CD folder, `cohort import` (the sidecar's database and Orthanc)";

/// The same instances as people bring them: a CD's folder (`DICOMDIR` by dcmtk's
/// `dcmmkdir`, files without an extension), and that folder in every archive type Cohort
/// reads, each made by the usual tool (`7z`, `tar`, `gzip`, `zstd`). Returns the folder and
/// the archives, the stored ZIP first (the baseline).
fn archive_formats(work: &Path, files: &[PathBuf]) -> anyhow::Result<(PathBuf, Vec<Archive>)> {
    let cd = work.join("cd");
    for (i, file) in files.iter().enumerate() {
        let dir = cd.join("DICOM").join("ST000000").join(format!("SE{:06}", i % 5));
        std::fs::create_dir_all(&dir)?;
        std::fs::copy(file, dir.join(format!("IM{i:06}")))?;
    }
    let run = |program: &str, args: &[&str]| -> anyhow::Result<()> {
        let out = std::process::Command::new(program).current_dir(&cd).args(args).output().with_context(|| format!("run {program}"))?;
        if !out.status.success() {
            bail!("{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    };
    run("dcmmkdir", &["--recurse", "DICOM"])?;
    let at = |name: &str| work.join(name);
    let name = |p: &Path| p.display().to_string();
    let archive = |label, file: &str, content_type| Archive { label, path: at(file), content_type };
    let formats = vec![
        archive("ZIP, stored (7z -mm=Copy)", "stored.zip", "application/zip"),
        archive("ZIP, Deflate (7z -mm=Deflate)", "deflate.zip", "application/zip"),
        archive("ZIP, Deflate64 (7z -mm=Deflate64)", "deflate64.zip", "application/zip"),
        archive("tar", "cd.tar", "application/x-tar"),
        archive("tar.gz (gzip -6)", "cd.tar.gz", "application/gzip"),
        archive("tar.zst (zstd -3)", "cd.tar.zst", "application/zstd"),
    ];
    for (method, zip) in [("Copy", &formats[0].path), ("Deflate", &formats[1].path), ("Deflate64", &formats[2].path)] {
        run("7z", &["a", "-tzip", "-bd", &format!("-mm={method}"), &name(zip), "DICOMDIR", "DICOM"])?;
    }
    run("tar", &["-cf", &name(&formats[3].path), "DICOMDIR", "DICOM"])?;
    run("sh", &["-c", &format!("gzip -6 -c {} > {}", name(&formats[3].path), name(&formats[4].path))])?;
    run("zstd", &["-q", "-3", &name(&formats[3].path), "-o", &name(&formats[5].path)])?;
    Ok((cd, formats))
}

/// A write token of the bootstrap admin, made with `cohort token create` on that
/// deployment's database, in a file for `cohort import --token-file`.
fn token_file(work: &Path, db_url: &str, orthanc_url: &str) -> anyhow::Result<PathBuf> {
    let out = cohort_e2e::deploy::sidecar_command(db_url, orthanc_url, &BTreeMap::new())
        .args(["token", "create", "--email", ADMIN_EMAIL, "--scope", "write", "--name", "bench"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .output()?;
    if !out.status.success() {
        bail!("cohort token create: {}", String::from_utf8_lossy(&out.stderr));
    }
    let file = work.join(format!("token-{}.txt", rand::random::<u32>()));
    std::fs::write(&file, String::from_utf8_lossy(&out.stdout).trim())?;
    Ok(file)
}

/// Runs `cohort import FOLDER ARGS…` and gives its wall time, after checking that it
/// stored every instance.
fn cli_import(db_url: &str, orthanc_url: &str, folder: &Path, args: &[&str], instances: u32) -> anyhow::Result<f64> {
    let started = Instant::now();
    let out = cohort_e2e::deploy::sidecar_command(db_url, orthanc_url, &BTreeMap::new())
        .arg("import")
        .arg(folder)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .output()?;
    let seconds = started.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || !stdout.contains(&format!("{instances} received, {instances} stored")) {
        bail!("cohort import {args:?}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(seconds)
}

async fn bearer(url: &str) -> anyhow::Result<String> {
    let c = Client::new(url);
    c.login(ADMIN_EMAIL, ADMIN_PASSWORD).await.expect_status(200);
    Ok(format!("Authorization: Bearer {}", c.cookie("access_token").context("no access token")?))
}

fn post_zip(t: &Target, zip: &Path) -> anyhow::Result<tools::Transfer> {
    let path = if t.name.starts_with("Orthanc") { "/instances" } else { "/api/patients/import" };
    curl(&format!("{}{path}", t.url), &t.headers, Some((zip, "application/zip")))
}

/// For profiling: `BENCH_HOLD=FILE` writes `FILE.targets` (name, URL, PID, paths or path
/// file and headers of each contender, then the wrk script) and waits while FILE exists.
async fn hold<'a>(targets: impl Iterator<Item = (&'a Target, String)>, script: &str) -> anyhow::Result<()> {
    let Ok(hold) = std::env::var("BENCH_HOLD") else { return Ok(()) };
    let mut desc = String::new();
    for (t, paths) in targets {
        let _ = writeln!(desc, "{}\t{}\t{}\t{}\t{}", t.name, t.url, t.pid, paths, t.headers.join("|"));
    }
    let _ = writeln!(desc, "script\t{script}");
    std::fs::write(format!("{hold}.targets"), desc)?;
    while std::path::Path::new(&hold).exists() {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(())
}

/// [`load`] without a body, with the CPU time each of `pids` spent per request answered
/// (user + system, in µs, from `/proc/PID/stat` before and after).
fn load_with_cpu(
    t: &Target,
    script: &Path,
    paths: &Path,
    connections: u32,
    seconds: u32,
    pids: &[u32],
) -> anyhow::Result<(Load, Vec<f64>)> {
    let before = pids.iter().map(|&pid| tools::cpu_seconds(pid)).collect::<anyhow::Result<Vec<_>>>()?;
    let l = load(t, script, paths, connections, seconds, None)?;
    let requests = (l.rps * f64::from(seconds)).max(1.0);
    let cpu =
        pids.iter().zip(before).map(|(&pid, b)| Ok((tools::cpu_seconds(pid)? - b) * 1e6 / requests)).collect::<anyhow::Result<Vec<_>>>()?;
    Ok((l, cpu))
}

fn load(t: &Target, script: &Path, paths: &Path, connections: u32, seconds: u32, body: Option<&str>) -> anyhow::Result<Load> {
    let mut env = vec![("BENCH_PATHS".to_string(), paths.display().to_string())];
    if let Some(b) = body {
        env.push(("BENCH_BODY".to_string(), b.to_string()));
    }
    let l = Wrk { url: &t.url, connections, seconds, script, headers: t.headers.clone(), env }.run()?;
    eprintln!(
        "    {:<28} c={connections:<3} {:>9.1} req/s  p50 {:>7.2} ms  p99 {:>7.2} ms  errors {}  steal {}",
        t.name,
        l.rps,
        l.p50_ms,
        l.p99_ms,
        l.errors,
        l.steal.map(|s| format!("{:.1}% (worst second {:.1}%)", s.share * 100.0, s.peak * 100.0)).unwrap_or_else(|| "unknown".into())
    );
    Ok(l)
}

fn authed(t: &Target) -> Client {
    let token = t.headers.first().and_then(|h| h.strip_prefix("Authorization: Bearer ")).unwrap_or_default();
    let c = Client::new(&t.url);
    if token.is_empty() {
        c
    } else {
        c.with_bearer(token)
    }
}

async fn instance_ids_native(t: &Target) -> anyhow::Result<Vec<String>> {
    let v = authed(t).get("/instances").await.expect_status(200);
    Ok(v.as_array().context("instances")?.iter().filter_map(|i| i.as_str().map(str::to_string)).collect())
}

async fn instance_ids_cohort(t: &Target) -> anyhow::Result<Vec<String>> {
    let c = authed(t);
    let list = c.get("/api/patients?page_size=200").await.expect_status(200);
    let mut ids = Vec::new();
    for p in list["items"].as_array().context("items")? {
        for i in c.get(&format!("/api/patients/{}/instances", p["id"])).await.expect_status(200).as_array().context("instances")? {
            ids.push(i["id"].as_str().unwrap_or_default().to_string());
        }
    }
    Ok(ids)
}

/// The Orthanc patient id of a PatientID, as Orthanc computes it.
async fn orthanc_patient(t: &Target, patient_id: &str) -> anyhow::Result<String> {
    let found = authed(t)
        .req(reqwest::Method::POST, "/tools/find")
        .json(&json!({"Level": "Patient", "Query": {"PatientID": patient_id}}))
        .send()
        .await
        .expect_status(200);
    found.as_array().and_then(|a| a.first()).and_then(|v| v.as_str()).map(str::to_string).context("patient not found in Orthanc")
}

async fn cohort_patient(t: &Target, external_id: &str) -> anyhow::Result<i64> {
    let list = authed(t).get(&format!("/api/patients?q={external_id}&page_size=200")).await.expect_status(200);
    list["items"]
        .as_array()
        .and_then(|a| a.iter().find(|p| p["external_id"] == external_id))
        .and_then(|p| p["id"].as_i64())
        .context("patient not in the registry")
}

async fn export_path(t: &Target, external_id: &str) -> anyhow::Result<String> {
    if t.name.starts_with("Orthanc") {
        Ok(format!("/patients/{}/archive", orthanc_patient(t, external_id).await?))
    } else {
        Ok(format!("/api/patients/{}/export", cohort_patient(t, external_id).await?))
    }
}

async fn registered_instances(t: &Target, external_id: &str) -> anyhow::Result<usize> {
    let id = cohort_patient(t, external_id).await?;
    let list = authed(t).get(&format!("/api/patients/{id}/instances")).await.expect_status(200);
    Ok(list.as_array().map(Vec::len).unwrap_or(0))
}

async fn delete_patient(t: &Target, external_id: &str) -> anyhow::Result<()> {
    let c = authed(t);
    if t.name.starts_with("Orthanc") {
        c.delete(&format!("/patients/{}", orthanc_patient(t, external_id).await?)).await.expect_status(200);
    } else {
        let id = cohort_patient(t, external_id).await?;
        c.req(reqwest::Method::DELETE, &format!("/api/patients/{id}")).header("x-purge-dicom", "true").send().await.expect_status(204);
    }
    Ok(())
}

/// When and where: the machine, and its load average when the run started (other work
/// on the machine shows there).
fn machine() -> String {
    let cpu = command("sh", &["-c", "lscpu | sed -n 's/^Model name: *//p' | head -n1"]);
    let mem = command("sh", &["-c", "awk '/MemTotal/ {printf \"%.0f GiB\", $2/1048576}' /proc/meminfo"]);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    format!(
        "Run on {} by `scripts/bench` (release build). Machine: {cpu}, {} cores, {mem}, Linux {}; load average {} at the start; {}",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        command("nproc", &[]),
        command("uname", &["-r"]),
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
        command("rustc", &["--version"])
    )
}

/// The Markdown report.
struct Report {
    md: String,
}

fn ratio(x: f64, base: f64) -> String {
    if base > 0.0 {
        format!("{:.0}%", 100.0 * x / base)
    } else {
        "–".into()
    }
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn command(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd).args(args).output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default()
}

impl Report {
    async fn new(native: &Target, sizes: &Sizes) -> anyhow::Result<Self> {
        let orthanc = authed(native).get("/system").await.expect_status(200)["Version"].as_str().unwrap_or("?").to_string();
        let mut md = String::new();
        let _ = writeln!(md, "# Benchmarks\n");
        let _ = writeln!(md, "{}; Orthanc {orthanc}.\n", machine());
        let _ = writeln!(
            md,
            "Contenders run on the same machine as the load generator (`wrk`, `curl`), one after the other. \
            Dataset: {} instances of {}×{} 16-bit CT/MR ({} patients); requests rotate over up to 500 instances. \
            Ratios are to Orthanc's native route.\n",
            sizes.patients * 2 * sizes.instances_per_series,
            sizes.image_side,
            sizes.image_side,
            sizes.patients
        );
        Ok(Report { md })
    }

    /// The header of a registry-only run (`--only registry`).
    fn header() -> String {
        format!("# Benchmarks: the registry at scale\n\n{}.\n\n", machine())
    }

    fn image(&mut self, connections: u32, row: &[Load]) {
        if connections == 1 {
            let _ = writeln!(
                self.md,
                "## Raw instance download\n\n`/api/patients/images/{{id}}` (Cohort) vs `/instances/{{id}}/file` (Orthanc), {}s per cell.\n",
                10
            );
            let _ =
                writeln!(self.md, "| clients | contender | req/s | vs native | p50 ms | p99 ms | errors |\n|---|---|---|---|---|---|---|");
        }
        let names = ["Orthanc (native)", "Cohort plugin", "Cohort sidecar"];
        for (name, l) in names.iter().zip(row) {
            let _ = writeln!(
                self.md,
                "| {connections} | {name} | {:.0} | {} | {:.2} | {:.2} | {} |",
                l.rps,
                ratio(l.rps, row[0].rps),
                l.p50_ms,
                l.p99_ms,
                l.errors
            );
        }
        if connections != 1 {
            self.md.push('\n');
        }
    }

    fn import(&mut self, n: u32, rates: &BTreeMap<&str, Vec<f64>>) {
        let base = median(rates.get("Orthanc (native)").map(Vec::as_slice).unwrap_or(&[]));
        let _ = writeln!(self.md, "## Import of a {n}-instance ZIP\n\n`POST /api/patients/import` (Cohort, registry updated) vs `POST /instances` with the same ZIP (Orthanc). Median of 3, patient deleted between runs.\n");
        let _ = writeln!(self.md, "| contender | instances/s | vs native | runs |\n|---|---|---|---|");
        for name in ["Orthanc (native)", "Cohort plugin", "Cohort sidecar"] {
            let v = rates.get(name).cloned().unwrap_or_default();
            let runs = v.iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join(", ");
            let _ = writeln!(self.md, "| {name} | {:.0} | {} | {runs} |", median(&v), ratio(median(&v), base));
        }
        self.md.push('\n');
    }

    fn import_formats(&mut self, n: u32, labels: &[&str], rates: &BTreeMap<(&str, &str), Vec<f64>>, hosts: [&str; 2]) {
        let _ = writeln!(self.md, "## Import by archive type\n\nThe same {n} instances as a patient's CD (`DICOMDIR` by dcmmkdir, skipped; files without an extension), imported as each archive type people bring (made by `7z`, `tar`, `gzip`, `zstd`) with `POST /api/patients/import`, and as the folder itself through `cohort import`. Instances/s, median of 3, patient deleted between runs; the ratio is to the stored ZIP on the same host.\n");
        let _ = writeln!(
            self.md,
            "| archive | {0} inst/s | vs stored ZIP | {1} inst/s | vs stored ZIP |\n|---|---|---|---|---|",
            hosts[0], hosts[1]
        );
        let at = |label: &str, host: &str| median(rates.get(&(label, host)).map(Vec::as_slice).unwrap_or(&[]));
        for label in labels {
            let mut row = format!("| {label} |");
            for host in hosts {
                let (rate, base) = (at(label, host), at(labels[0], host));
                if rates.contains_key(&(*label, host)) {
                    let _ = write!(row, " {rate:.0} | {} |", ratio(rate, base));
                } else {
                    row.push_str(" – | – |");
                }
            }
            let _ = writeln!(self.md, "{row}");
        }
        self.md.push('\n');
    }

    fn export(&mut self, rows: &[(&str, tools::Transfer, f64, f64)]) {
        let _ = writeln!(self.md, "## Patient export\n\n`/api/patients/{{id}}/export` (Cohort) vs `/patients/{{id}}/archive` (Orthanc, streamed), one patient. Memory is the serving process (Orthanc for native and plugin, the sidecar process for the sidecar).\n");
        let _ = writeln!(self.md, "| contender | archive MB | MB/s | vs native | RSS before MB | peak RSS MB |\n|---|---|---|---|---|---|");
        let base = rows.first().map(|(_, t, _, _)| t.bytes as f64 / 1e6 / t.seconds).unwrap_or(0.0);
        for (name, t, before, peak) in rows {
            let mbps = t.bytes as f64 / 1e6 / t.seconds;
            let _ =
                writeln!(self.md, "| {name} | {:.1} | {mbps:.0} | {} | {before:.0} | {peak:.0} |", t.bytes as f64 / 1e6, ratio(mbps, base));
        }
        self.md.push('\n');
    }

    fn deidentified_export(&mut self, rows: &[(&str, f64, tools::Transfer, f64)]) {
        let _ = writeln!(self.md, "## De-identified patient export\n\n`/api/patients/{{id}}/export?deidentify=true`, the same patient: every instance goes through Orthanc's anonymizer (PS3.15 Basic Profile) with the group's pseudonym and UIDs, after reading its BurnedInAnnotation and FrameOfReferenceUID.\n");
        let _ = writeln!(
            self.md,
            "| contender | archive MB | identified MB/s | de-identified MB/s | ratio | peak RSS MB |\n|---|---|---|---|---|---|"
        );
        for (name, identified, t, peak) in rows {
            let mbps = t.bytes as f64 / 1e6 / t.seconds;
            let _ = writeln!(
                self.md,
                "| {name} | {:.1} | {identified:.0} | {mbps:.0} | {} | {peak:.0} |",
                t.bytes as f64 / 1e6,
                ratio(mbps, *identified)
            );
        }
        self.md.push('\n');
    }

    fn logins(&mut self, rows: &[(&str, f64, Load, Load, Load)]) {
        let _ = writeln!(self.md, "## Login\n\nbcrypt cost 12. Latency: median of 10 sequential logins. Storm: 16 clients logging in without pause while 8 clients list patients; the ratio is the listing's p99 during the storm over its p99 alone (target < 2×).\n");
        let _ = writeln!(self.md, "| contender | login p50 ms | storm logins/s | listing p99 alone ms | listing p99 in storm ms | ratio | listing req/s alone → in storm |\n|---|---|---|---|---|---|---|");
        for (name, p50, quiet, storm, during) in rows {
            let _ = writeln!(
                self.md,
                "| {name} | {p50:.0} | {:.1} | {:.2} | {:.2} | {:.2}× | {:.0} → {:.0} |",
                storm.rps,
                quiet.p99_ms,
                during.p99_ms,
                during.p99_ms / quiet.p99_ms.max(0.001),
                quiet.rps,
                during.rps
            );
        }
        self.md.push('\n');
    }

    fn big(&mut self, imported: tools::Transfer, import_peak: f64, exported: tools::Transfer, export_peak: f64) {
        let _ = writeln!(self.md, "## Sidecar memory with a large patient\n\nResident memory of the sidecar process. Target: flat, < 100 MB, whatever the archive size.\n");
        let _ = writeln!(self.md, "| operation | bytes | seconds | MB/s | peak RSS MB |\n|---|---|---|---|---|");
        let _ = writeln!(
            self.md,
            "| import of a stored ZIP | {:.2} GB | {:.1} | {:.0} | {import_peak:.0} |",
            imported.bytes as f64 / 1e9,
            imported.seconds,
            imported.bytes as f64 / 1e6 / imported.seconds
        );
        let _ = writeln!(
            self.md,
            "| export of that patient | {:.2} GB | {:.1} | {:.0} | {export_peak:.0} |\n",
            exported.bytes as f64 / 1e9,
            exported.seconds,
            exported.bytes as f64 / 1e6 / exported.seconds
        );
    }

    fn finish(self) -> String {
        self.md
    }
}
