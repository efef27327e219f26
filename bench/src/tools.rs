//! The measuring tools: `wrk` (load), `curl` (single transfers), and an RSS sampler.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// What `wrk --latency` reports.
#[derive(Clone, Copy, Debug, Default)]
pub struct Load {
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: u64,
    /// The machine's CPU time its hypervisor gave to others while wrk ran (`/proc/stat`'s
    /// steal), if the kernel counts it: on a shared virtual machine a few percent of
    /// stolen time in bursts of tens of milliseconds holds every request in flight,
    /// which moves a p99 without being the server's.
    pub steal: Option<Steal>,
}

/// Stolen CPU time during a run: its share of the machine's CPU time over the whole run
/// and in the run's worst second.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Steal {
    pub share: f64,
    pub peak: f64,
}

impl Steal {
    /// From readings of [`cpu_times`] about a second apart (the last one may be closer):
    /// the stolen share from the first to the last, and the highest of one interval (a
    /// last interval shorter than half the first is left out of the peak: a tick of
    /// stolen time would weigh more there).
    fn of(samples: &[(u64, u64)]) -> Option<Steal> {
        let (first, last) = (samples.first()?, samples.last()?);
        let share = steal_share(*first, *last)?;
        let full = samples.get(1).map_or(0, |s| s.0.saturating_sub(first.0));
        let peak = samples
            .windows(2)
            .filter(|w| w[1].0.saturating_sub(w[0].0) * 2 >= full)
            .filter_map(|w| steal_share(w[0], w[1]))
            .fold(share, f64::max);
        Some(Steal { share, peak })
    }
}

/// Runs `work` while another thread reads the machine's CPU times every second.
fn with_steal<T>(work: impl FnOnce() -> T) -> (T, Option<Steal>) {
    let sampler = Sampler::start(Duration::from_secs(1), Vec::new(), |samples| samples.extend(cpu_times()));
    let out = work();
    (out, sampler.stop().and_then(|samples| Steal::of(&samples)))
}

/// Calls `step` on another thread at once and every `every`, then once more when stopped;
/// [`Sampler::stop`] gives back what the steps built (`None` if one panicked).
struct Sampler<A> {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<A>,
}

impl<A: Send + 'static> Sampler<A> {
    fn start(every: Duration, mut built: A, mut step: impl FnMut(&mut A) + Send + 'static) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut next = Instant::now();
            while !flag.load(Ordering::Relaxed) {
                if Instant::now() >= next {
                    step(&mut built);
                    next = Instant::now() + every;
                }
                // Never asleep long past a stop.
                std::thread::sleep(every.min(Duration::from_millis(50)));
            }
            step(&mut built);
            built
        });
        Sampler { stop, handle }
    }

    fn stop(self) -> Option<A> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().ok()
    }
}

/// A wrk run: `connections` clients for `seconds`, requests from `script` (Lua).
pub struct Wrk<'a> {
    pub url: &'a str,
    pub connections: u32,
    pub seconds: u32,
    pub script: &'a Path,
    pub headers: Vec<String>,
    pub env: Vec<(String, String)>,
}

impl Wrk<'_> {
    pub fn run(&self) -> anyhow::Result<Load> {
        let threads = self.connections.clamp(1, 2);
        let mut cmd = Command::new("wrk");
        cmd.arg(format!("-t{threads}"))
            .arg(format!("-c{}", self.connections))
            .arg(format!("-d{}s", self.seconds))
            .arg("--latency")
            .arg("--timeout")
            .arg("30s")
            .arg("-s")
            .arg(self.script);
        for h in &self.headers {
            cmd.arg("-H").arg(h);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        cmd.arg(self.url);
        let (out, steal) = with_steal(|| cmd.output());
        let out = out.context("run wrk (apt-get install wrk)")?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            bail!("wrk failed: {}{}", text, String::from_utf8_lossy(&out.stderr));
        }
        let mut load = parse_wrk(&text).with_context(|| format!("unexpected wrk output:\n{text}"))?;
        load.steal = steal;
        Ok(load)
    }
}

/// The machine's CPU time so far, all CPUs, in clock ticks: (total, stolen), from the
/// first line of `/proc/stat` (`cpu  user nice system idle iowait irq softirq steal …`;
/// guest time is already counted in user and nice). `None` where it cannot be read.
fn cpu_times() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    parse_cpu_times(stat.lines().next()?)
}

fn parse_cpu_times(line: &str) -> Option<(u64, u64)> {
    let mut fields = line.strip_prefix("cpu ")?.split_whitespace().map(|f| f.parse::<u64>().ok());
    let times = fields.by_ref().take(8).collect::<Option<Vec<u64>>>()?;
    (times.len() == 8).then(|| (times.iter().sum(), times[7]))
}

/// The stolen share of the CPU time between two readings of [`cpu_times`].
fn steal_share((total0, steal0): (u64, u64), (total1, steal1): (u64, u64)) -> Option<f64> {
    let total = total1.checked_sub(total0).filter(|t| *t > 0)?;
    Some(steal1.checked_sub(steal0)? as f64 / total as f64)
}

fn duration_ms(s: &str) -> Option<f64> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic())?);
    let n: f64 = num.parse().ok()?;
    Some(match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        _ => return None,
    })
}

fn parse_wrk(text: &str) -> Option<Load> {
    let mut load = Load::default();
    for line in text.lines() {
        let t = line.trim();
        if let Some(v) = t.strip_prefix("Requests/sec:") {
            load.rps = v.trim().parse().ok()?;
        } else if let Some(v) = t.strip_prefix("50%") {
            load.p50_ms = duration_ms(v)?;
        } else if let Some(v) = t.strip_prefix("99%") {
            load.p99_ms = duration_ms(v)?;
        } else if t.starts_with("Non-2xx or 3xx responses:") {
            load.errors += t.rsplit(' ').next()?.parse::<u64>().ok()?;
        } else if let Some(v) = t.strip_prefix("Socket errors:") {
            // "connect 0, read 0, write 0, timeout 0"
            load.errors += v.split(',').filter_map(|p| p.trim().rsplit(' ').next()?.parse::<u64>().ok()).sum::<u64>();
        }
    }
    (load.rps > 0.0).then_some(load)
}

/// Lua for wrk: cycles through the request paths listed in `$BENCH_PATHS`; with
/// `$BENCH_BODY` set, sends it as a JSON POST instead.
pub const WRK_SCRIPT: &str = r#"
local paths = {}
for line in io.lines(os.getenv("BENCH_PATHS")) do paths[#paths + 1] = line end
local body = os.getenv("BENCH_BODY")
-- Added to wrk.headers (the -H options: the session cookie or the Authorization
-- header), which wrk.format uses when given no header table of its own.
if body ~= nil and body ~= "" then wrk.headers["Content-Type"] = "application/json" end
local i = math.random(1, #paths)
request = function()
  i = i + 1
  local path = paths[(i % #paths) + 1]
  if body ~= nil and body ~= "" then
    return wrk.format("POST", path, nil, body)
  end
  return wrk.format("GET", path)
end
"#;

/// Lua for wrk: `POST /api/patients` with a new external id each time (`$BENCH_PREFIX`,
/// the thread's number and a counter).
pub const CREATE_SCRIPT: &str = r#"
-- Added to wrk.headers (the -H options), which wrk.format uses when given no header
-- table of its own: a table given to it would replace them.
wrk.headers["Content-Type"] = "application/json"
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
local n = 0
local prefix = os.getenv("BENCH_PREFIX")
request = function()
  n = n + 1
  local body = string.format('{"external_id":"%s%d-%d","last_name":"Créé-Par-Api","first_name":"Élodie","status":"to_interpret"}', prefix, tid, n)
  return wrk.format("POST", "/api/patients", nil, body)
end
"#;

/// A transfer measured with curl.
#[derive(Clone, Copy, Debug, Default)]
pub struct Transfer {
    pub status: u16,
    pub bytes: u64,
    pub seconds: f64,
}

/// `curl` GET to /dev/null, or a streamed POST of `upload` with `content_type`.
pub fn curl(url: &str, headers: &[String], upload: Option<(&Path, &str)>) -> anyhow::Result<Transfer> {
    // An upload's answer is kept to say why it was refused (a bench that stops on a 503
    // says which dependency or limit answered); a download, measured, goes nowhere.
    let body = upload.map(|_| tempfile::NamedTempFile::new()).transpose().context("a file for curl's answer")?;
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-o"]).arg(body.as_ref().map_or(Path::new("/dev/null"), |b| b.path()));
    cmd.args(["-w", "%{http_code} %{size_download} %{size_upload} %{time_total}"]);
    for h in headers {
        cmd.arg("-H").arg(h);
    }
    if let Some((file, content_type)) = upload {
        cmd.arg("-X").arg("POST").arg("-T").arg(file).arg("-H").arg(format!("Content-Type: {content_type}")).arg("-H").arg("Expect:");
    }
    cmd.arg(url);
    let out = cmd.output().context("run curl")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let f: Vec<&str> = text.split_whitespace().collect();
    if f.len() != 4 {
        bail!("unexpected curl output: {text}");
    }
    let status: u16 = f[0].parse()?;
    if let Some(body) = body.as_ref().filter(|_| status >= 400) {
        let text = std::fs::read(body.path()).unwrap_or_default();
        eprintln!("    {url} answered {status}: {}", String::from_utf8_lossy(&text[..text.len().min(500)]));
    }
    let down: f64 = f[1].parse()?;
    let up: f64 = f[2].parse()?;
    Ok(Transfer { status, bytes: down.max(up) as u64, seconds: f[3].parse()? })
}

/// Samples a process's resident memory until stopped; gives the peak in MiB.
pub struct RssSampler(Sampler<u64>);

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

impl RssSampler {
    pub fn start(pid: u32) -> Self {
        RssSampler(Sampler::start(Duration::from_millis(20), 0, move |peak| *peak = (*peak).max(rss_kib(pid).unwrap_or(0))))
    }

    pub fn stop(self) -> f64 {
        self.0.stop().unwrap_or(0) as f64 / 1024.0
    }
}

/// Resident memory now, in MiB.
pub fn rss_mib(pid: u32) -> f64 {
    rss_kib(pid).unwrap_or(0) as f64 / 1024.0
}

/// CPU time (user + system) a process has used so far, in seconds.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    // utime and stime, fields 14 and 15, in clock ticks.
    let fields = cohort_e2e::process::stat_fields(pid)?;
    let ticks = |n: usize| -> anyhow::Result<f64> {
        Ok(fields.get(n - 3).ok_or_else(|| anyhow::anyhow!("short /proc/{pid}/stat"))?.parse::<f64>()?)
    };
    Ok((ticks(14)? + ticks(15)?) / clock_ticks_per_second())
}

fn clock_ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_output_is_parsed() {
        let out = "Running 5s test @ http://127.0.0.1:8042/x\n  2 threads and 32 connections\n  Thread Stats   Avg      Stdev     Max   +/- Stdev\n    Latency     3.21ms    1.02ms  20.11ms   80.00%\n  Latency Distribution\n     50%    3.01ms\n     75%    3.50ms\n     90%    4.20ms\n     99%   12.50ms\n  9876 requests in 5.00s, 1.00GB read\n  Non-2xx or 3xx responses: 3\nRequests/sec:   1975.20\nTransfer/sec:    204.80MB\n";
        let l = parse_wrk(out).expect("parsed");
        assert_eq!((l.rps, l.p50_ms, l.p99_ms, l.errors), (1975.20, 3.01, 12.5, 3));
        assert_eq!(duration_ms("850.00us"), Some(0.85));
        assert_eq!(parse_cpu_times("cpu  100 5 50 800 10 0 5 30 0 0"), Some((1000, 30)));
        assert_eq!(parse_cpu_times("cpu0 100 5 50 800 10 0 5 30 0 0"), None);
        assert_eq!(parse_cpu_times("cpu  100 5 50 800"), None);
        assert_eq!(steal_share((1000, 30), (1200, 50)), Some(0.1));
        assert_eq!(steal_share((1000, 30), (1000, 30)), None);
        // Seconds of 200 ticks, 2, 30 and 4 of them stolen; a last tenth of a second
        // with 10 of its 20 stolen is left out of the peak.
        let samples = [(0, 0), (200, 2), (400, 32), (600, 36), (620, 46)];
        assert_eq!(Steal::of(&samples), Some(Steal { share: 46.0 / 620.0, peak: 0.15 }));
        assert_eq!(Steal::of(&samples[..1]), None);
        assert_eq!(Steal::of(&[(0, 0), (100, 5)]), Some(Steal { share: 0.05, peak: 0.05 }));
        assert_eq!(duration_ms("1.20s"), Some(1200.0));
    }
}
