//! The registry at scale: lists and searches on a registry of (by default) 1,000,000
//! patients, on both hosts and both databases, 32 clients (three cases again while two
//! more clients create patients); creation through the API on that registry; its size
//! on disk per patient.
//!
//! Two plugin deployments (SQLite, PostgreSQL) get the same registry from
//! [`population::build`]; a sidecar is then started on each of their databases, beside
//! the same Orthanc, so the four contenders serve the same rows.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context};
use cohort_core::store::Store;
use cohort_e2e::deploy::{Sidecar, PLUGIN_LIBRARY};
use cohort_e2e::{Backend, Client, Deployment, Host, TestDatabase};
use serde_json::{json, Value};

use crate::population;
use crate::tools::{Load, Wrk, CREATE_SCRIPT};
use crate::{bearer, encode, hold, load, Target};

const SCOPED_EMAIL: &str = "scoped@bench.test";
const SCOPED_PASSWORD: &str = "scoped-user-password";
const PAGE_SIZE: u32 = 50;

/// One request the bench repeats, and who sends it.
struct Case {
    label: String,
    /// One path, or several (one per line) that the clients go through in turn.
    path: String,
    scoped: bool,
    /// Whether two more clients create patients (ungrouped, as the admin) all along: a
    /// list answer a node remembers serves only until the next write in its scope
    /// (`page_cache`), so an admin's answers are read again and again here, while the
    /// 1% group's user's stay valid.
    writing: bool,
}

impl Case {
    /// The case's path, or the first of its paths: the one its total is read from.
    fn first_path(&self) -> &str {
        self.path.lines().next().unwrap_or_default()
    }
}

/// One database with its two hosts.
struct Contender {
    name: &'static str,
    admin: Target,
    scoped: Target,
}

/// Which cases a run measures: all, or those whose label holds one of `only`'s
/// comma-separated words (`--cases`; "creating" selects the creation case); and how many
/// rounds of each list case (`--rounds`, 1 unless given): the contenders alternate
/// within a round, and each cell is the round of median req/s.
#[derive(Clone, Debug)]
pub struct Selection {
    cases: Option<Vec<String>>,
    rounds: u32,
}

impl Default for Selection {
    fn default() -> Selection {
        Selection { cases: None, rounds: 1 }
    }
}

impl Selection {
    pub fn parse(raw: Option<&str>, rounds: u32) -> Selection {
        let cases = raw.map(|r| r.split(',').map(|w| w.trim().to_lowercase()).filter(|w| !w.is_empty()).collect());
        Selection { cases, rounds: rounds.max(1) }
    }

    fn wants(&self, label: &str) -> bool {
        let label = label.to_lowercase();
        self.cases.as_ref().is_none_or(|words| words.iter().any(|w| label.contains(w.as_str())))
    }
}

pub async fn run(patients: u32, seconds: u32, script: &Path, work: &Path, only: &Selection) -> anyhow::Result<String> {
    let on_sqlite = Deployment::start_with(Host::Plugin, Backend::Sqlite, settings()).await;
    let on_pg = Deployment::start_with(Host::Plugin, Backend::Postgres, settings()).await;

    let mut md = String::new();
    let _ = writeln!(md, "## The registry at {patients} patients\n");
    let mut builds = Vec::new();
    for (name, d) in [("SQLite", &on_sqlite), ("PostgreSQL", &on_pg)] {
        eprintln!("==> building a {patients}-patient registry on {name}");
        let built = population::build(&d.db.url, patients).await?;
        let store = Store::connect(&d.db.url).await?;
        let bytes = store.size_bytes().await?;
        store.close().await;
        eprintln!(
            "    {:.0} s, {:.0} patients/s, {:.0} bytes per patient",
            built.seconds,
            f64::from(patients) / built.seconds,
            bytes as f64 / f64::from(patients)
        );
        builds.push((name, built.seconds, bytes));
        scoped_user(d, &built.groups).await?;
    }
    let _ = writeln!(
        md,
        "Built by `population::build` (bulk `INSERT`s through the core's store, 10,000 rows per transaction, every index, trigger and derived column in place), then served as is. Size on disk is the whole database (SQLite: its pages after the build; PostgreSQL: `pg_database_size`) over the patient count.\n"
    );
    let _ = writeln!(md, "| database | build s | patients/s | bytes per patient |\n|---|---|---|---|");
    for (name, secs, bytes) in &builds {
        let _ = writeln!(md, "| {name} | {secs:.0} | {:.0} | {:.0} |", f64::from(patients) / secs, *bytes as f64 / f64::from(patients));
    }
    md.push('\n');

    let sidecar_sqlite = Sidecar::start(&on_sqlite.db.url, &on_sqlite.orthanc.url(), &env()).await;
    let sidecar_pg = Sidecar::start(&on_pg.db.url, &on_pg.orthanc.url(), &env()).await;
    let contenders = vec![
        contender("plugin, SQLite", &on_sqlite.url, on_sqlite.orthanc.pid()).await?,
        contender("sidecar, SQLite", &sidecar_sqlite.url, sidecar_sqlite.pid()).await?,
        contender("plugin, PostgreSQL", &on_pg.url, on_pg.orthanc.pid()).await?,
        contender("sidecar, PostgreSQL", &sidecar_pg.url, sidecar_pg.pid()).await?,
    ];
    measure(&mut md, &contenders, patients, seconds, script, work, only).await?;
    drop((sidecar_sqlite, sidecar_pg, on_sqlite, on_pg));
    Ok(md)
}

/// The same cases on a registry built before by `--build-registry URL` (`--registry-db
/// URL`): both hosts on that one database, no build (a 1M build takes minutes).
pub async fn run_on(url: &str, seconds: u32, script: &Path, work: &Path, only: &Selection) -> anyhow::Result<String> {
    let backend = if url.starts_with("postgres") { Backend::Postgres } else { Backend::Sqlite };
    let name = match backend {
        Backend::Postgres => "PostgreSQL",
        Backend::Sqlite => "SQLite",
    };
    let d = Deployment::start_on(Host::Plugin, TestDatabase::external(url, backend), settings(), PLUGIN_LIBRARY, None).await;
    let groups = population::groups(url).await?;
    scoped_user(&d, &groups).await?;
    let sidecar = Sidecar::start(url, &d.orthanc.url(), &env()).await;
    let (plugin_name, sidecar_name) = match backend {
        Backend::Postgres => ("plugin, PostgreSQL", "sidecar, PostgreSQL"),
        Backend::Sqlite => ("plugin, SQLite", "sidecar, SQLite"),
    };
    let contenders =
        vec![contender(plugin_name, &d.url, d.orthanc.pid()).await?, contender(sidecar_name, &sidecar.url, sidecar.pid()).await?];
    let patients = total_of(&contenders[0].admin, &format!("/api/patients?page_size={PAGE_SIZE}")).await?;
    let mut md = String::new();
    let _ = writeln!(md, "## The registry at {patients} patients ({name}, built beforehand)\n");
    measure(&mut md, &contenders, u32::try_from(patients)?, seconds, script, work, only).await?;
    drop((sidecar, d));
    Ok(md)
}

/// `BENCH_DATABASE_CONNECTIONS=N` runs both hosts with `DatabaseConnections: N`, to compare
/// pool sizes on one registry.
fn pool_size() -> Option<u32> {
    std::env::var("BENCH_DATABASE_CONNECTIONS").ok().and_then(|v| v.parse().ok())
}

/// Tokens must outlive the run; the plugin and the sidecar share each database.
fn settings() -> BTreeMap<String, Value> {
    let mut settings: BTreeMap<String, Value> = [("AccessTokenMinutes".to_string(), json!(600))].into_iter().collect();
    if let Some(n) = pool_size() {
        settings.insert("DatabaseConnections".to_string(), json!(n));
    }
    settings
}

fn env() -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = [("COHORT_ACCESS_TOKEN_MINUTES".to_string(), "600".to_string())].into_iter().collect();
    if let Some(n) = pool_size() {
        env.insert("COHORT_DATABASE_CONNECTIONS".to_string(), n.to_string());
    }
    env
}

async fn measure(
    md: &mut String,
    contenders: &[Contender],
    patients: u32,
    seconds: u32,
    script: &Path,
    work: &Path,
    only: &Selection,
) -> anyhow::Result<()> {
    let cases: Vec<Case> = cases(&contenders[0], patients).await?.into_iter().filter(|c| only.wants(&c.label)).collect();
    let paths = cases.iter().map(|c| c.first_path().to_string()).collect::<Vec<_>>().join(" ");
    hold(contenders.iter().map(|c| (&c.admin, paths.clone())), &script.display().to_string()).await?;
    if !cases.is_empty() {
        lists(md, contenders, &cases, seconds, only.rounds, script, work).await?;
    }
    if only.wants("creating patients") {
        creation(md, contenders, seconds, work)?;
    }
    Ok(())
}

async fn lists(
    md: &mut String,
    contenders: &[Contender],
    cases: &[Case],
    seconds: u32,
    rounds: u32,
    script: &Path,
    work: &Path,
) -> anyhow::Result<()> {
    eprintln!("==> lists and searches, 32 clients, {seconds} s each, {rounds} round(s)");
    // Per case: label, matches, and per contender its lists and the creations meanwhile.
    type Cell = (Load, Option<Load>);
    let mut rows: Vec<(String, i64, Vec<Cell>)> = Vec::new();
    for case in cases {
        let first = case.first_path();
        let matches = total_of(if case.scoped { &contenders[0].scoped } else { &contenders[0].admin }, first).await?;
        eprintln!("  {} ({} matches): {}", case.label, matches, first);
        let mut runs: Vec<Vec<Cell>> = contenders.iter().map(|_| Vec::new()).collect();
        for (c, i) in (0..rounds).flat_map(|_| contenders.iter().zip(0..)) {
            let t = if case.scoped { &c.scoped } else { &c.admin };
            let expected = total_of(t, first).await?;
            // Patients created by the cases with writes change the totals as they run.
            if expected != matches && !case.writing {
                bail!("{} counts {expected} for {}, {} counts {matches}", c.name, first, contenders[0].name);
            }
            let file = work.join(format!("case-{}.txt", rand::random::<u32>()));
            std::fs::write(&file, &case.path)?;
            let writer = if case.writing {
                let (url, headers, create) = (c.admin.url.clone(), c.admin.headers.clone(), write_script(work, CREATE_SCRIPT)?);
                let env = vec![("BENCH_PREFIX".to_string(), format!("W-{}-", rand::random::<u32>()))];
                Some(std::thread::spawn(move || Wrk { url: &url, connections: 2, seconds, script: &create, headers, env }.run()))
            } else {
                None
            };
            let listed = load(t, script, &file, 32, seconds, None)?;
            let written = match writer {
                Some(w) => Some(w.join().map_err(|_| anyhow::anyhow!("the writer's thread panicked"))??),
                None => None,
            };
            if let Some(w) = &written {
                eprintln!("    {:<28} meanwhile {:.0} created/s, errors {}", c.name, w.rps, w.errors);
            }
            runs[i].push((listed, written));
        }
        // Each contender's round of median req/s.
        let loads: Vec<Cell> = runs
            .into_iter()
            .map(|mut r| {
                r.sort_by(|a, b| a.0.rps.total_cmp(&b.0.rps));
                r.swap_remove(r.len() / 2)
            })
            .collect();
        rows.push((case.label.clone(), matches, loads));
    }
    let _ = writeln!(
        md,
        "`GET /api/patients…&page_size={PAGE_SIZE}` with its exact `total`, one request repeated by 32 clients (`wrk`, 2 threads) for {seconds} s per cell{}; admin unless the case says otherwise. Each cell: req/s, and p99 in ms (and, in the cases with writes, the patients created meanwhile per second by 2 more clients; `st N% (M%)`: the machine's CPU time its hypervisor gave to others during the cell and in its worst second, `/proc/stat`'s steal, shown when either reaches 1% and 3%: stolen time comes in bursts that hold every request in flight). Target: ≥ 1,000 req/s and p99 < 20 ms.\n",
        if rounds > 1 { format!(", the round of median req/s of {rounds} (the contenders alternating)") } else { String::new() }
    );
    let _ = write!(md, "| case | matches |");
    for c in contenders {
        let _ = write!(md, " {} |", c.name);
    }
    let _ = writeln!(md, "\n|---|---|{}", "---|".repeat(contenders.len()));
    for (label, matches, loads) in &rows {
        let _ = write!(md, "| {label} | {matches} |");
        for (l, written) in loads {
            let flag = if l.rps >= 1000.0 && l.p99_ms < 20.0 { "" } else { " ✗" };
            let errors = if l.errors > 0 { format!(", {} errors", l.errors) } else { String::new() };
            let created = written.as_ref().map(|w| format!(" (+{:.0} created/s)", w.rps)).unwrap_or_default();
            let steal = l
                .steal
                .filter(|s| s.share >= 0.01 || s.peak >= 0.03)
                .map(|s| format!(" st {:.0}% ({:.0}%)", s.share * 100.0, s.peak * 100.0))
                .unwrap_or_default();
            let _ = write!(md, " {:.0} / {:.1}{flag}{errors}{created}{steal} |", l.rps, l.p99_ms);
        }
        md.push('\n');
    }
    md.push('\n');
    // What the search cache and the rest hold once every case has run (Orthanc's whole
    // process for the plugin).
    let rss: Vec<String> = contenders.iter().map(|c| format!("{} {:.0} MB", c.name, crate::tools::rss_mib(c.admin.pid))).collect();
    let _ = writeln!(md, "Resident memory after these cases: {}.\n", rss.join(", "));
    Ok(())
}

fn creation(md: &mut String, contenders: &[Contender], seconds: u32, work: &Path) -> anyhow::Result<()> {
    eprintln!("==> creating patients through the API on the full registry");
    let mut created = Vec::new();
    for c in contenders {
        let started = Instant::now();
        let env = vec![("BENCH_PREFIX".to_string(), format!("API-{}-", rand::random::<u32>()))];
        let l = crate::tools::Wrk {
            url: &c.admin.url,
            connections: 32,
            seconds,
            script: &write_script(work, CREATE_SCRIPT)?,
            headers: c.admin.headers.clone(),
            env,
        }
        .run()?;
        eprintln!(
            "    {:<22} {:>7.0} created/s  p99 {:>7.2} ms  errors {} ({:.0} s)",
            c.name,
            l.rps,
            l.p99_ms,
            l.errors,
            started.elapsed().as_secs_f64()
        );
        created.push((c.name, l));
    }
    let _ = writeln!(
        md,
        "Creating patients through the API on that registry: `POST /api/patients` (a new IPP each time, with its audit row), 32 clients for {seconds} s. Target: > 500/s.\n"
    );
    let _ = writeln!(md, "| contender | created/s | p50 ms | p99 ms | errors |\n|---|---|---|---|---|");
    for (name, l) in &created {
        let _ = writeln!(md, "| {name} | {:.0} | {:.1} | {:.1} | {} |", l.rps, l.p50_ms, l.p99_ms, l.errors);
    }
    md.push('\n');
    Ok(())
}

fn write_script(work: &Path, text: &str) -> anyhow::Result<std::path::PathBuf> {
    let file = work.join("create.lua");
    std::fs::write(&file, text)?;
    Ok(file)
}

/// A user of the 1% group, made through the API (kept from an earlier run on a registry
/// built beforehand).
async fn scoped_user(d: &Deployment, groups: &[(i64, String)]) -> anyhow::Result<()> {
    let admin = d.admin().await;
    let group = groups.first().context("no group")?.0;
    let r = admin.post("/api/users", &json!({"email": SCOPED_EMAIL, "password": SCOPED_PASSWORD, "role": "user", "group_id": group})).await;
    if r.status != 409 {
        r.expect_status(201);
    }
    Ok(())
}

async fn contender(name: &'static str, url: &str, pid: u32) -> anyhow::Result<Contender> {
    let scoped = Client::new(url);
    scoped.login(SCOPED_EMAIL, SCOPED_PASSWORD).await.expect_status(200);
    let scoped_token = scoped.cookie("access_token").context("no access token")?;
    Ok(Contender {
        name,
        admin: Target { name, url: url.to_string(), headers: vec![bearer(url).await?], pid },
        scoped: Target { name, url: url.to_string(), headers: vec![format!("Authorization: Bearer {scoped_token}")], pid },
    })
}

async fn total_of(t: &Target, path: &str) -> anyhow::Result<i64> {
    let token = t.headers[0].trim_start_matches("Authorization: Bearer ");
    let v = Client::new(&t.url).with_bearer(token).get(path).await.expect_status(200);
    v["total"].as_i64().context("no total")
}

async fn cases(first: &Contender, patients: u32) -> anyhow::Result<Vec<Case>> {
    let list = |query: &str| format!("/api/patients?{query}page_size={PAGE_SIZE}");
    let admin = |label: &str, query: &str| Case { label: label.to_string(), path: list(query), scoped: false, writing: false };
    let rare = population::RARE_NAME;
    let ipp = population::ipp_prefix(patients);
    let mut cases = vec![
        admin("no filter (default sort `-updated_at`)", ""),
        admin(&format!("common name `{}`", population::COMMON_NAME), &format!("q={}&", population::COMMON_NAME)),
        admin(&format!("rare name `{rare}`"), &format!("q={}&", encode(rare))),
        admin(&format!("IPP prefix `{ipp}`"), &format!("q={ipp}&")),
        admin("status `to_interpret`", "status=to_interpret&"),
    ];
    for field in ["created_at", "updated_at", "last_name", "external_id", "status"] {
        for sort in [field.to_string(), format!("-{field}")] {
            cases.push(admin(&format!("sort `{sort}`"), &format!("sort={sort}&")));
        }
    }
    let pages = |total: i64| (total + i64::from(PAGE_SIZE) - 1) / i64::from(PAGE_SIZE);
    let last = pages(total_of(&first.admin, &list("")).await?);
    cases.push(admin(&format!("last page (page {last})"), &format!("page={last}&")));
    // Pages deep in a list, another one at each request (more pages than a cell sends
    // requests): what clients paging through a whole list cost, none of it an answer a
    // node remembers.
    let middle = |label: &str, query: &str, last: i64, scoped: bool| {
        let (from, to) = (last / 4, last * 3 / 4);
        Case {
            label: format!("{label}, another at each request (pages {from}–{to})"),
            path: (from..=to).map(|p| list(&format!("{query}page={p}&"))).collect::<Vec<_>>().join("\n"),
            scoped,
            writing: false,
        }
    };
    cases.push(middle("a page in the middle", "", last, false));
    // The same by name: another index (on PostgreSQL both hold the list's columns,
    // migrations 0013 and 0015; the name order's held only its key before, and its pages
    // joined their patients).
    cases.push(middle("a page in the middle by name", "sort=last_name&", last, false));
    // Deep pages of a filtered list, which walk the filter's index and join their
    // patients: a status (a tenth of the registry and more) and the 1% group's user.
    let status = "status=to_interpret&";
    let last = pages(total_of(&first.admin, &list(status)).await?);
    cases.push(middle("status `to_interpret`, a page in the middle", status, last, false));
    let last = pages(total_of(&first.scoped, &list("")).await?);
    cases.push(middle("user of the 1% group, a page in the middle", "", last, true));
    let common = list(&format!("q={}&", population::COMMON_NAME));
    let last = pages(total_of(&first.admin, &common).await?);
    cases.push(admin(
        &format!("last page of `{}` (page {last})", population::COMMON_NAME),
        &format!("q={}&page={last}&", population::COMMON_NAME),
    ));
    cases.push(Case { label: "user of the 1% group, no filter".into(), path: list(""), scoped: true, writing: false });
    cases.push(Case {
        label: format!("user of the 1% group, `{}`", population::COMMON_NAME),
        path: list(&format!("q={}&", population::COMMON_NAME)),
        scoped: true,
        writing: false,
    });
    // The same lists while patients are created: every creation changes the admin's
    // scope (an answer remembered is read again), not the 1% group's.
    cases.push(Case { label: "no filter, while patients are created".into(), path: list(""), scoped: false, writing: true });
    cases.push(Case {
        label: format!("common name `{}`, while patients are created", population::COMMON_NAME),
        path: list(&format!("q={}&", population::COMMON_NAME)),
        scoped: false,
        writing: true,
    });
    cases.push(Case {
        label: "user of the 1% group, no filter, while patients are created".into(),
        path: list(""),
        scoped: true,
        writing: true,
    });
    Ok(cases)
}
