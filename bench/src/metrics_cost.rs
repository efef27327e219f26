//! What the request metrics cost (`scripts/bench --only metrics`): the raw image route,
//! `/api/patients/images/{id}`, with `RequestMetrics` on and off, on each host, medians
//! of rounds compared. The target is a loss under 2%. Each round starts two fresh
//! deployments (on and off), in alternating order, warms them up, and measures each once,
//! in alternating order: a first run found the first-started Orthanc dearer per request
//! whatever its setting. Besides requests per second, which other load on the machine
//! moves, each run reads the serving process's CPU time (`/proc/PID/stat`) to give CPU
//! time per request, which it moves much less.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::bail;
use cohort_e2e::deploy::Sidecar;
use cohort_e2e::dicom::{self, StudySpec, ZipOptions};
use cohort_e2e::{Backend, Deployment, Host};
use serde_json::{json, Value};

use super::{bearer, instance_ids_cohort, load, load_with_cpu, machine, median, post_zip, Target};

/// Rounds per setting (each a `wrk` run of `seconds`, on processes of its own).
const ROUNDS: usize = 8;
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
         {seconds} s per run, {ROUNDS} rounds, each on two fresh deployments started in alternating order and measured \
         in alternating order after a 2 s warm-up; medians. \
         `RequestMetrics: false` stops the per-request counting (route, status, latency histogram); \
         the request id and the log line stay.\n",
        data.files.len()
    );
    let _ = writeln!(
        md,
        "| host | metrics on req/s (runs) | metrics off req/s (runs) | loss | CPU µs/req on | CPU µs/req off | CPU added | p99 on ms | p99 off ms | errors |\n|---|---|---|---|---|---|---|---|---|---|"
    );
    for host in [Host::Plugin, Host::Sidecar] {
        let (mut rps, mut p99, mut cpu_us, mut errors) = ([Vec::new(), Vec::new()], [Vec::new(), Vec::new()], [Vec::new(), Vec::new()], 0);
        for round in 0..ROUNDS {
            // Fresh processes every round, started in alternating order (on first, then
            // off first): the first-started Orthanc was measured dearer per request.
            let off_first = round % 2 == 1;
            let first = contender(host, !off_first).await?;
            let second = contender(host, off_first).await?;
            let ((_on_d, on), (_off_d, off)) = if off_first { (second, first) } else { (first, second) };
            let mut paths = Vec::new();
            for t in [&on, &off] {
                if post_zip(t, &zip.path)?.status != 200 {
                    bail!("{} refused the dataset", t.name);
                }
                let ids = instance_ids_cohort(t).await?;
                let file = work.join(format!("metrics-paths-{}.txt", rand::random::<u32>()));
                std::fs::write(&file, ids.iter().map(|id| format!("/api/patients/images/{id}")).collect::<Vec<_>>().join("\n"))?;
                paths.push(file);
            }
            // A short warm-up of each (caches, connections), not counted.
            for (i, t) in [&on, &off].into_iter().enumerate() {
                load(t, script, &paths[i], CONNECTIONS, 2, None)?;
            }
            let order: [usize; 2] = if round % 4 < 2 { [0, 1] } else { [1, 0] };
            for i in order {
                let t = if i == 0 { &on } else { &off };
                let (l, cpu) = load_with_cpu(t, script, &paths[i], CONNECTIONS, seconds, &[t.pid])?;
                cpu_us[i].push(cpu[0]);
                rps[i].push(l.rps);
                p99[i].push(l.p99_ms);
                errors += l.errors;
            }
        }
        let (r_on, r_off) = (median(&rps[0]), median(&rps[1]));
        let loss = (r_off - r_on) / r_off * 100.0;
        let (c_on, c_off) = (median(&cpu_us[0]), median(&cpu_us[1]));
        let range = |v: &[f64]| {
            let (lo, hi) = v.iter().fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(*x), hi.max(*x)));
            format!("{lo:.0}–{hi:.0}")
        };
        let host_name = if host == Host::Plugin { "plugin (SQLite)" } else { "sidecar (SQLite)" };
        let _ = writeln!(
            md,
            "| {host_name} | {r_on:.0} ({}) | {r_off:.0} ({}) | {loss:+.1}% | {c_on:.0} | {c_off:.0} | {:+.1}% | {:.2} | {:.2} | {errors} |",
            range(&rps[0]),
            range(&rps[1]),
            (c_on - c_off) / c_off * 100.0,
            median(&p99[0]),
            median(&p99[1])
        );
        eprintln!(
            "==> {host_name}: on {r_on:.0} req/s, off {r_off:.0} req/s, loss {loss:+.1}%; CPU µs/request on {c_on:.0}, off {c_off:.0}"
        );
    }
    let _ = writeln!(
        md,
        "\nA negative loss means the run with metrics on was the faster one: the difference is within the noise. \
         CPU µs/req is the serving process's CPU time (user + system; for the plugin, all of Orthanc) over the requests answered."
    );
    Ok(md)
}
