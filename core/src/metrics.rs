//! Process-wide request and login figures for `GET /api/metrics`, kept with atomics only:
//! counting a request takes no lock and allocates nothing once its route has been seen.
//! Labels are bounded: route templates come from the router (`MatchedPath`), anything
//! else counts as `unmatched`; statuses are the three-digit codes answered.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Upper bounds of the latency histogram, in seconds (`+Inf` is implied).
pub const LATENCY_BUCKETS: [f64; 11] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Slots of the route table: at least twice the route templates the router has (a test
/// holds it to that), so probing stays short.
const ROUTE_SLOTS: usize = 256;

/// Statuses an answer can carry (`http::StatusCode` is 100 to 999), one counter each.
const FIRST_STATUS: u16 = 100;
const STATUSES: usize = 900;

/// One route template's figures. The latency buckets are not cumulative here (one
/// increment per request, the last one past 10 s); `render` adds them up.
struct Route {
    template: Box<str>,
    by_status: [AtomicU64; STATUSES],
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Route {
    fn new(template: &str) -> Self {
        Route {
            template: template.into(),
            by_status: std::array::from_fn(|_| AtomicU64::new(0)),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_nanos: AtomicU64::new(0),
        }
    }

    /// Answers by status, in increasing order of status, leaving out statuses never seen.
    fn statuses(&self) -> impl Iterator<Item = (u16, u64)> + '_ {
        (FIRST_STATUS..).zip(&self.by_status).map(|(s, n)| (s, n.load(Ordering::Relaxed))).filter(|(_, n)| *n > 0)
    }
}

/// Route template → figures, without a lock: an open-addressing table of fixed size
/// whose slots are each filled once (`OnceLock`), the first time a template is seen;
/// after that, counting is a hash, a string comparison and three atomic additions.
/// Templates are never removed, and there are far fewer of them than slots.
struct Routes {
    slots: Box<[OnceLock<Box<Route>>]>,
}

impl Default for Routes {
    fn default() -> Self {
        let routes = Routes { slots: (0..ROUTE_SLOTS).map(|_| OnceLock::new()).collect() };
        // Present from the start, so that a full table always has somewhere to count.
        routes.find_or_insert(UNMATCHED);
        routes
    }
}

impl Routes {
    /// The figures of a template, taking a free slot the first time it is seen. A full
    /// table (more distinct templates than slots, which the router cannot produce)
    /// counts the request as `unmatched`.
    fn get(&self, template: &str) -> &Route {
        self.find_or_insert(template).or_else(|| self.find_or_insert(UNMATCHED)).expect("`unmatched` has a slot from the start")
    }

    fn find_or_insert(&self, template: &str) -> Option<&Route> {
        let start = template_hash(template.as_bytes()) as usize % ROUTE_SLOTS;
        for i in 0..ROUTE_SLOTS {
            let slot = &self.slots[(start + i) % ROUTE_SLOTS];
            // Two threads seeing a new template at once: one fills the slot, the other
            // finds it filled (by the same template or another one) and goes on probing.
            let route = slot.get_or_init(|| Box::new(Route::new(template)));
            if &*route.template == template {
                return Some(route);
            }
        }
        None
    }

    /// Every template that has answered, in the order of their names.
    fn sorted(&self) -> Vec<&Route> {
        let mut routes: Vec<&Route> =
            self.slots.iter().filter_map(|s| s.get().map(|r| &**r)).filter(|r| r.statuses().next().is_some()).collect();
        routes.sort_unstable_by(|a, b| a.template.cmp(&b.template));
        routes
    }
}

/// The label of answers no route template matched (`api::observe`).
pub const UNMATCHED: &str = "unmatched";

/// A multiplicative hash taking eight bytes a step (as rustc's FxHash does): a template
/// of 34 bytes is five steps. The upper half is returned (the lower bits of a product
/// mix poorly).
fn template_hash(bytes: &[u8]) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mut chunks = bytes.chunks_exact(8);
    let mut h = (bytes.len() as u64).wrapping_mul(K);
    for c in &mut chunks {
        h = (h.rotate_left(5) ^ u64::from_le_bytes(c.try_into().expect("chunks of 8 bytes"))).wrapping_mul(K);
    }
    for b in chunks.remainder() {
        h = (h.rotate_left(5) ^ u64::from(*b)).wrapping_mul(K);
    }
    h >> 32
}

/// The figures themselves.
#[derive(Default)]
pub struct Metrics {
    requests: Routes,
    pub logins_succeeded: AtomicU64,
    pub logins_failed: AtomicU64,
    pub logins_throttled: AtomicU64,
    /// Imports that produced a report (200).
    pub imports: AtomicU64,
    pub import_instances_stored: AtomicU64,
    pub import_instances_already_stored: AtomicU64,
    pub import_instances_failed: AtomicU64,
    /// Bytes of DICOM that imports handed to Orthanc (each instance as sent).
    pub import_bytes: AtomicU64,
    /// Export archives whose answer was produced (one per request).
    pub exports: AtomicU64,
    /// Bytes of export archives sent (streamed ones counted as they go out).
    pub export_bytes: AtomicU64,
    /// Instance files read in Orthanc's storage directory, not through Orthanc (both hosts).
    pub orthanc_storage_reads: AtomicU64,
    /// Instance files answered from the copies the plugin keeps in memory, not read.
    pub orthanc_storage_kept_hits: AtomicU64,
    /// Reads of a long list's anchors, and pages read from one (`services::anchors`).
    pub list_anchor_reads: AtomicU64,
    pub list_pages_from_anchors: AtomicU64,
    /// A remembered search's matches read in full, and patched from the patients written
    /// since (`services::patients`, `search_cache::patched`).
    pub searches_read: AtomicU64,
    pub searches_patched: AtomicU64,
    /// A search's page answered again as this node wrote it at an earlier generation,
    /// none of its patients written since (`services::patients::read_page`).
    pub search_pages_kept: AtomicU64,
    /// The change follower's progress.
    pub follower: FollowerFigures,
}

/// Where the change follower is in Orthanc's change log (`services::registry`).
#[derive(Default)]
pub struct FollowerFigures {
    /// The cursor: the last change handled (or skipped).
    pub cursor: AtomicI64,
    /// Orthanc's newest change, as last seen by the follower.
    pub orthanc_last: AtomicI64,
    /// When the follower last read a page of changes and handled it to its end (Unix
    /// seconds; 0 = not yet).
    pub last_success_unix: AtomicI64,
    /// Changes given up on after their attempts (audited `REGISTRATION_FAILED`).
    pub skipped: AtomicU64,
}

impl FollowerFigures {
    /// Records a page followed to its end (or to a change that will be retried).
    pub fn followed(&self, cursor: i64, orthanc_last: i64) {
        self.cursor.store(cursor, Ordering::Relaxed);
        self.orthanc_last.store(orthanc_last.max(cursor), Ordering::Relaxed);
        self.last_success_unix.store(chrono::Utc::now().timestamp(), Ordering::Relaxed);
    }
}

/// The registry's sizes, as last counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RegistrySizes {
    pub patients: i64,
    pub studies: i64,
    pub instances: i64,
}

/// The last count of the registry, with when it was made; counted again once older
/// than its time to live.
#[derive(Debug)]
pub struct RegistryCount {
    ttl: Duration,
    last: Mutex<Option<(Instant, RegistrySizes)>>,
}

impl RegistryCount {
    pub fn new(ttl: Duration) -> Self {
        RegistryCount { ttl, last: Mutex::new(None) }
    }

    /// The last count, however old.
    pub fn last(&self) -> Option<(Instant, RegistrySizes)> {
        *self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The last count while younger than the time to live.
    pub fn fresh(&self) -> Option<(Instant, RegistrySizes)> {
        self.last().filter(|(at, _)| at.elapsed() < self.ttl)
    }

    pub fn put(&self, sizes: RegistrySizes) -> (Instant, RegistrySizes) {
        let entry = (Instant::now(), sizes);
        *self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(entry);
        entry
    }
}

/// The process's figures.
pub fn global() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(Metrics::default)
}

/// How a login attempt ended.
#[derive(Clone, Copy, Debug)]
pub enum LoginOutcome {
    Succeeded,
    Failed,
    Throttled,
}

impl Metrics {
    /// Counts one answered request: no lock, no allocation once the route has been seen.
    pub fn record_request(&self, route: &str, status: u16, elapsed: Duration) {
        let figures = self.requests.get(route);
        let status = usize::from(status.clamp(FIRST_STATUS, FIRST_STATUS + STATUSES as u16 - 1) - FIRST_STATUS);
        figures.by_status[status].fetch_add(1, Ordering::Relaxed);
        let seconds = elapsed.as_secs_f64();
        let bucket = LATENCY_BUCKETS.iter().position(|bound| seconds <= *bound).unwrap_or(LATENCY_BUCKETS.len());
        figures.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        figures.sum_nanos.fetch_add(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    pub fn record_login(&self, outcome: LoginOutcome) {
        let counter = match outcome {
            LoginOutcome::Succeeded => &self.logins_succeeded,
            LoginOutcome::Failed => &self.logins_failed,
            LoginOutcome::Throttled => &self.logins_throttled,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// All answers counted, and those with a 5xx status.
    pub fn request_totals(&self) -> (u64, u64) {
        self.requests
            .slots
            .iter()
            .filter_map(OnceLock::get)
            .flat_map(|route| route.statuses())
            .fold((0, 0), |(all, errors), (status, n)| (all + n, if status >= 500 { errors + n } else { errors }))
    }

    /// Counts one import that produced a report, with its instances.
    pub fn record_import(&self, stored: u64, already_stored: u64, failed: u64) {
        self.imports.fetch_add(1, Ordering::Relaxed);
        self.import_instances_stored.fetch_add(stored, Ordering::Relaxed);
        self.import_instances_already_stored.fetch_add(already_stored, Ordering::Relaxed);
        self.import_instances_failed.fetch_add(failed, Ordering::Relaxed);
    }

    /// The figures in the Prometheus text format 0.0.4.
    pub fn render(&self, out: &mut String) {
        let routes = self.requests.sorted();
        out.push_str("# HELP cohort_http_requests_total API answers by route template and status.\n");
        out.push_str("# TYPE cohort_http_requests_total counter\n");
        for r in &routes {
            let route = escape(&r.template);
            for (status, n) in r.statuses() {
                let _ = writeln!(out, "cohort_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}");
            }
        }
        out.push_str("# HELP cohort_http_request_duration_seconds Time to produce an answer, by route template.\n");
        out.push_str("# TYPE cohort_http_request_duration_seconds histogram\n");
        for r in &routes {
            let route = escape(&r.template);
            // Read once: `+Inf` and `_count` are the same figure, the sum of the buckets.
            let mut cumulative = 0;
            for (bound, n) in LATENCY_BUCKETS.iter().zip(&r.buckets) {
                cumulative += n.load(Ordering::Relaxed);
                let _ = writeln!(out, "cohort_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {cumulative}");
            }
            let count = cumulative + r.buckets[LATENCY_BUCKETS.len()].load(Ordering::Relaxed);
            #[allow(clippy::cast_precision_loss)]
            let sum_seconds = r.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
            let _ = writeln!(out, "cohort_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {count}");
            let _ = writeln!(out, "cohort_http_request_duration_seconds_sum{{route=\"{route}\"}} {sum_seconds}");
            let _ = writeln!(out, "cohort_http_request_duration_seconds_count{{route=\"{route}\"}} {count}");
        }
        out.push_str("# HELP cohort_logins_total Login attempts by outcome (throttled: refused before the password was checked).\n");
        out.push_str("# TYPE cohort_logins_total counter\n");
        for (outcome, counter) in
            [("succeeded", &self.logins_succeeded), ("failed", &self.logins_failed), ("throttled", &self.logins_throttled)]
        {
            let _ = writeln!(out, "cohort_logins_total{{outcome=\"{outcome}\"}} {}", counter.load(Ordering::Relaxed));
        }
        out.push_str("# HELP cohort_imports_total Imports that produced a report.\n# TYPE cohort_imports_total counter\n");
        let _ = writeln!(out, "cohort_imports_total {}", self.imports.load(Ordering::Relaxed));
        out.push_str("# HELP cohort_import_instances_total DICOM instances received by imports, by outcome.\n");
        out.push_str("# TYPE cohort_import_instances_total counter\n");
        for (outcome, counter) in [
            ("stored", &self.import_instances_stored),
            ("already_stored", &self.import_instances_already_stored),
            ("failed", &self.import_instances_failed),
        ] {
            let _ = writeln!(out, "cohort_import_instances_total{{outcome=\"{outcome}\"}} {}", counter.load(Ordering::Relaxed));
        }
        counter(
            out,
            "cohort_import_bytes_total",
            "Bytes of DICOM that imports sent to Orthanc.",
            self.import_bytes.load(Ordering::Relaxed),
        );
        out.push_str("# HELP cohort_exports_total Export archives answered.\n# TYPE cohort_exports_total counter\n");
        let _ = writeln!(out, "cohort_exports_total {}", self.exports.load(Ordering::Relaxed));
        counter(out, "cohort_export_bytes_total", "Bytes of export archives sent.", self.export_bytes.load(Ordering::Relaxed));
        counter(
            out,
            "cohort_orthanc_storage_reads_total",
            "Instance files read in Orthanc's storage directory (the plugin: Orthanc's StorageDirectory; the sidecar: OrthancStorageDirectory) instead of through Orthanc.",
            self.orthanc_storage_reads.load(Ordering::Relaxed),
        );
        counter(
            out,
            "cohort_orthanc_storage_kept_hits_total",
            "Instance files the plugin answered from the copies it keeps in memory (within Orthanc's MaximumStorageCacheSize) instead of reading them.",
            self.orthanc_storage_kept_hits.load(Ordering::Relaxed),
        );
        counter(
            out,
            "cohort_list_anchor_reads_total",
            "Reads of the sort keys of every ListAnchorRows-th patient of a long list (one pass over the list).",
            self.list_anchor_reads.load(Ordering::Relaxed),
        );
        counter(
            out,
            "cohort_list_pages_from_anchors_total",
            "Pages deep in a list read from the nearest remembered sort key before them instead of with an offset.",
            self.list_pages_from_anchors.load(Ordering::Relaxed),
        );
        counter(
            out,
            "cohort_searches_read_total",
            "Searches whose matches were read in full (none remembered, the change log pruned past them, or too many changes since).",
            self.searches_read.load(Ordering::Relaxed),
        );
        counter(
            out,
            "cohort_searches_patched_total",
            "Remembered searches brought up to date by reading only the patients written since.",
            self.searches_patched.load(Ordering::Relaxed),
        );
        counter(
            out,
            "cohort_search_pages_kept_total",
            "A search's pages answered as written at an earlier generation: the same ids and total after a patch, none of them written since.",
            self.search_pages_kept.load(Ordering::Relaxed),
        );
        self.render_follower(out);
    }

    fn render_follower(&self, out: &mut String) {
        let f = &self.follower;
        counter(
            out,
            "cohort_change_follower_skipped_total",
            "Orthanc changes given up on after their attempts (audited REGISTRATION_FAILED).",
            f.skipped.load(Ordering::Relaxed),
        );
        let last_success = f.last_success_unix.load(Ordering::Relaxed);
        if last_success == 0 {
            // The follower has not read Orthanc's change log yet (or does not run here).
            return;
        }
        let cursor = f.cursor.load(Ordering::Relaxed);
        gauge(out, "cohort_change_follower_cursor", "The last Orthanc change the follower handled.", cursor);
        gauge(
            out,
            "cohort_change_follower_lag",
            "Orthanc changes not handled yet: Orthanc's newest change (as last seen) minus the cursor.",
            (f.orthanc_last.load(Ordering::Relaxed) - cursor).max(0),
        );
        gauge(
            out,
            "cohort_change_follower_seconds_since_success",
            "Seconds since the follower last read Orthanc's change log and handled what it got.",
            (chrono::Utc::now().timestamp() - last_success).max(0),
        );
    }
}

/// A label value as the text format wants it: `\`, `"` and newlines escaped.
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Appends one counter with its help and type lines.
pub fn counter(out: &mut String, name: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
}

/// Appends the registry's sizes and how old that count is.
pub fn render_registry(out: &mut String, sizes: RegistrySizes, age: Duration) {
    out.push_str("# HELP cohort_registry_size Rows of the registry, by kind (counted at most once per RegistryCountSeconds).\n");
    out.push_str("# TYPE cohort_registry_size gauge\n");
    for (kind, n) in [("patients", sizes.patients), ("studies", sizes.studies), ("instances", sizes.instances)] {
        let _ = writeln!(out, "cohort_registry_size{{kind=\"{kind}\"}} {n}");
    }
    gauge(out, "cohort_registry_size_age_seconds", "Age of that count.", age.as_secs());
}

/// Appends one gauge with its help and type lines.
pub fn gauge(out: &mut String, name: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_route_and_status_with_cumulative_buckets() {
        let m = Metrics::default();
        m.record_request("/api/users/{id}", 200, Duration::from_millis(7));
        m.record_request("/api/users/{id}", 404, Duration::from_millis(300));
        m.record_login(LoginOutcome::Throttled);
        let mut out = String::new();
        m.render(&mut out);
        assert!(out.contains("cohort_http_requests_total{route=\"/api/users/{id}\",status=\"200\"} 1\n"), "{out}");
        assert!(out.contains("cohort_http_requests_total{route=\"/api/users/{id}\",status=\"404\"} 1\n"), "{out}");
        assert!(out.contains("cohort_http_request_duration_seconds_bucket{route=\"/api/users/{id}\",le=\"0.005\"} 0\n"), "{out}");
        assert!(out.contains("cohort_http_request_duration_seconds_bucket{route=\"/api/users/{id}\",le=\"0.01\"} 1\n"), "{out}");
        assert!(out.contains("cohort_http_request_duration_seconds_bucket{route=\"/api/users/{id}\",le=\"0.5\"} 2\n"), "{out}");
        assert!(out.contains("cohort_http_request_duration_seconds_count{route=\"/api/users/{id}\"} 2\n"), "{out}");
        assert!(out.contains("cohort_logins_total{outcome=\"throttled\"} 1\n"), "{out}");
    }

    /// Eight threads counting at once, over 100 routes they see for the first time
    /// together (so that slots are fought over), in 20 fresh tables: every request is
    /// counted exactly once, under its own route, and each route has one slot.
    #[test]
    fn concurrent_counting_is_exact() {
        for _ in 0..20 {
            count_concurrently_in_a_fresh_table();
        }
    }

    fn count_concurrently_in_a_fresh_table() {
        const THREADS: u64 = 8;
        const PER_THREAD: u64 = 3_000;
        const ROUTES: u64 = 100;
        let m = Metrics::default();
        let routes: Vec<String> = (0..ROUTES).map(|i| format!("/api/route{i}/{{id}}")).collect();
        let start = std::sync::Barrier::new(THREADS as usize);
        std::thread::scope(|s| {
            for t in 0..THREADS {
                let (m, routes, start) = (&m, &routes, &start);
                s.spawn(move || {
                    start.wait();
                    for i in 0..PER_THREAD {
                        let route = &routes[usize::try_from((i + t * 13) % ROUTES).expect("an index under 100")];
                        let status = if i % 4 == 0 { 404 } else { 200 };
                        m.record_request(route, status, Duration::from_millis(i % 3 * 20));
                    }
                });
            }
        });
        assert_eq!(m.request_totals(), (THREADS * PER_THREAD, 0));
        let mut out = String::new();
        m.render(&mut out);
        let mut samples = std::collections::HashMap::new();
        for line in out.lines().filter(|l| !l.starts_with('#')) {
            let (name, n) = line.rsplit_once(' ').expect("a sample");
            assert!(samples.insert(name, n.parse::<u64>().unwrap_or(0)).is_none(), "{name} twice:\n{out}");
        }
        let value = |needle: &str| -> u64 { *samples.get(needle).unwrap_or_else(|| panic!("{needle} missing:\n{out}")) };
        let per_route = THREADS * PER_THREAD / ROUTES;
        for route in &routes {
            let ok = value(&format!("cohort_http_requests_total{{route=\"{route}\",status=\"200\"}}"));
            let missing = value(&format!("cohort_http_requests_total{{route=\"{route}\",status=\"404\"}}"));
            assert_eq!(ok + missing, per_route, "{route}");
            assert_eq!(value(&format!("cohort_http_request_duration_seconds_count{{route=\"{route}\"}}")), per_route);
            assert_eq!(value(&format!("cohort_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}}")), per_route);
        }
        // 0 ms, 20 ms and 40 ms in turn: a third of the requests under 5 ms.
        let fast: u64 =
            routes.iter().map(|r| value(&format!("cohort_http_request_duration_seconds_bucket{{route=\"{r}\",le=\"0.005\"}}"))).sum();
        let under_25ms: u64 =
            routes.iter().map(|r| value(&format!("cohort_http_request_duration_seconds_bucket{{route=\"{r}\",le=\"0.025\"}}"))).sum();
        let all = THREADS * PER_THREAD;
        assert_eq!(fast, (0..PER_THREAD).filter(|i| i % 3 == 0).count() as u64 * THREADS);
        assert_eq!(under_25ms, (0..PER_THREAD).filter(|i| i % 3 != 2).count() as u64 * THREADS);
        assert!(fast < under_25ms && under_25ms < all);
        assert_eq!(value("cohort_http_requests_total{route=\"/api/route0/{id}\",status=\"404\"}"), {
            (0..THREADS).map(|t| (0..PER_THREAD).filter(|i| (i + t * 13) % ROUTES == 0 && i % 4 == 0).count() as u64).sum::<u64>()
        });
        assert!(!out.contains("route=\"unmatched\""), "nothing unmatched was counted:\n{out}");
    }

    /// The route table has room to spare for every template the router can match.
    #[test]
    fn the_route_table_outsizes_the_router() {
        let templates = crate::api::openapi().paths.paths.len() + 4 /* console */ + 1 /* unmatched */;
        assert!(templates * 2 <= ROUTE_SLOTS, "{templates} templates for {ROUTE_SLOTS} slots");
    }

    /// Past the table's capacity, requests still count, as `unmatched`.
    #[test]
    fn a_full_table_counts_as_unmatched() {
        let m = Metrics::default();
        for i in 0..ROUTE_SLOTS + 5 {
            m.record_request(&format!("/r{i}"), 200, Duration::ZERO);
        }
        assert_eq!(m.request_totals(), (ROUTE_SLOTS as u64 + 5, 0));
        let mut out = String::new();
        m.render(&mut out);
        assert!(out.contains("cohort_http_requests_total{route=\"unmatched\",status=\"200\"} 6\n"), "{out}");
    }
}
