//! What the request metrics cost (`scripts/bench --only metrics`): the raw image route,
//! `/api/patients/images/{id}`, with `RequestMetrics` on and off, on each host, in
//! alternating rounds (on/off, then off/on), medians compared. The target is a loss
//! under 2%.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::bail;
use cohort_e2e::deploy::Sidecar;
use cohort_e2e::dicom::{self, StudySpec, ZipOptions};
use cohort_e2e::{Backend, Deployment, Host};
use serde_json::{json, Value};

use super::{bearer, instance_ids_cohort, load, machine, median, post_zip, Target};

/// Rounds per setting (each a `wrk` run of `seconds`).
const ROUNDS: usize = 5;
const CONNECTIONS: u32 = 32;

async fn contender(host: Host, metrics: bool) -> anyhow::Result<(Deployment, Target)> {
    let settings: BTreeMap<String, Value> = [("RequestMetrics".to_string(), json!(metrics))].into_iter().collect();
    let d = Deployment::start_with(host, Backend::Sqlite, settings).await;
    let name = match (host, metrics) {
        (Host::Plugin, true) => "plugin, metrics on",
        (Host::Plugin, false) => "plugin, metrics off",
        (Host::Sidecar, true) => "sidecar, metrics on",
        (Host::Sidecar, false) => "sidecar, metrics off",
    };
    let pid = match host {
        Host::Plugin => d.orthanc.pid(),
        Host::Sidecar => d.sidecar.as_ref().map(Sidecar::pid).unwrap_or(0),
    };
    let t = Target { name, url: d.url.clone(), headers: vec![bearer(&d.url).await?], pid };
    Ok((d, t))
}

pub async fn run(seconds: u32, script: &Path, work: &Path) -> anyhow::Result<String> {
    // About 35 KB per instance, like the 39 KB instance of issue 13's measurements.
    let data = dicom::study(&StudySpec::new("METRICS-COST").studies(1).series(2).instances(100).size(128, 128).seed(5));
    let zip = dicom::zip(&data.paths(), ZipOptions { store: true, ..ZipOptions::default() });
    let instance_kb = data.files.iter().map(|f| f.size).sum::<u64>() as f64 / data.files.len() as f64 / 1024.0;
    let mut md = String::new();
    let _ = writeln!(md, "# Benchmarks: the cost of the request metrics\n\n{}.\n", machine());
    let _ = writeln!(
        md,
        "`GET /api/patients/images/{{id}}` over {} instances of {instance_kb:.0} KB, {CONNECTIONS} connections, \
         {seconds} s per run, {ROUNDS} runs per setting alternating (on/off, off/on); medians. \
         `RequestMetrics: false` stops the per-request counting (route, status, latency histogram); \
         the request id and the log line stay.\n",
        data.files.len()
    );
    let _ = writeln!(
        md,
        "| host | metrics on req/s | metrics off req/s | loss | p99 on ms | p99 off ms | errors |\n|---|---|---|---|---|---|---|"
    );
    for host in [Host::Plugin, Host::Sidecar] {
        let (_on_d, on) = contender(host, true).await?;
        let (_off_d, off) = contender(host, false).await?;
        for t in [&on, &off] {
            if post_zip(t, &zip.path)?.status != 200 {
                bail!("{} refused the dataset", t.name);
            }
        }
        let mut paths = Vec::new();
        for t in [&on, &off] {
            let ids = instance_ids_cohort(t).await?;
            let file = work.join(format!("metrics-paths-{}.txt", rand::random::<u32>()));
            std::fs::write(&file, ids.iter().map(|id| format!("/api/patients/images/{id}")).collect::<Vec<_>>().join("\n"))?;
            paths.push(file);
        }
        let (mut rps, mut p99, mut errors) = ([Vec::new(), Vec::new()], [Vec::new(), Vec::new()], 0);
        for round in 0..ROUNDS {
            let order: [usize; 2] = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for i in order {
                let t = if i == 0 { &on } else { &off };
                let l = load(t, script, &paths[i], CONNECTIONS, seconds, None)?;
                rps[i].push(l.rps);
                p99[i].push(l.p99_ms);
                errors += l.errors;
            }
        }
        let (r_on, r_off) = (median(&rps[0]), median(&rps[1]));
        let loss = (r_off - r_on) / r_off * 100.0;
        let host_name = if host == Host::Plugin { "plugin (SQLite)" } else { "sidecar (SQLite)" };
        let _ = writeln!(
            md,
            "| {host_name} | {r_on:.0} | {r_off:.0} | {loss:+.1}% | {:.2} | {:.2} | {errors} |",
            median(&p99[0]),
            median(&p99[1])
        );
        eprintln!("==> {host_name}: on {r_on:.0} req/s, off {r_off:.0} req/s, loss {loss:+.1}%");
    }
    let _ = writeln!(md, "\nA negative loss means the run with metrics on was the faster one: the difference is within the noise.");
    Ok(md)
}
