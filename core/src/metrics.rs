//! Process-wide request and login figures for `GET /api/metrics`, kept with atomics and
//! one short-held lock per request (a map from route template and status to counters).
//! Labels are bounded: route templates come from the router (`MatchedPath`), anything
//! else counts as `unmatched`; statuses are the three-digit codes answered.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Upper bounds of the latency histogram, in seconds (`+Inf` is implied).
pub const LATENCY_BUCKETS: [f64; 11] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// A route template's latency histogram.
#[derive(Default)]
struct Histogram {
    buckets: [u64; LATENCY_BUCKETS.len()],
    count: u64,
    sum_seconds: f64,
}

/// One route template's figures.
#[derive(Default)]
struct Route {
    /// Answers by status.
    by_status: BTreeMap<u16, u64>,
    latency: Histogram,
}

#[derive(Default)]
struct Requests {
    /// Route template → its figures (looked up by `&str`: counting a request allocates
    /// only the first time a route is seen).
    routes: BTreeMap<String, Route>,
}

/// The figures themselves.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<Requests>,
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
    /// Counts one answered request.
    pub fn record_request(&self, route: &str, status: u16, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let mut r = self.requests.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let figures = match r.routes.get_mut(route) {
            Some(f) => f,
            None => r.routes.entry(route.to_string()).or_default(),
        };
        *figures.by_status.entry(status).or_insert(0) += 1;
        let h = &mut figures.latency;
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                h.buckets[i] += 1;
            }
        }
        h.count += 1;
        h.sum_seconds += seconds;
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
        let r = self.requests.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        r.routes
            .values()
            .flat_map(|f| f.by_status.iter())
            .fold((0, 0), |(all, errors), (status, n)| (all + n, if *status >= 500 { errors + n } else { errors }))
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
        let r = self.requests.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        out.push_str("# HELP cohort_http_requests_total API answers by route template and status.\n");
        out.push_str("# TYPE cohort_http_requests_total counter\n");
        for (route, f) in &r.routes {
            let route = escape(route);
            for (status, n) in &f.by_status {
                let _ = writeln!(out, "cohort_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}");
            }
        }
        out.push_str("# HELP cohort_http_request_duration_seconds Time to produce an answer, by route template.\n");
        out.push_str("# TYPE cohort_http_request_duration_seconds histogram\n");
        for (route, f) in &r.routes {
            let (route, h) = (escape(route), &f.latency);
            for (bound, n) in LATENCY_BUCKETS.iter().zip(h.buckets) {
                let _ = writeln!(out, "cohort_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {n}");
            }
            let _ = writeln!(out, "cohort_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}", h.count);
            let _ = writeln!(out, "cohort_http_request_duration_seconds_sum{{route=\"{route}\"}} {}", h.sum_seconds);
            let _ = writeln!(out, "cohort_http_request_duration_seconds_count{{route=\"{route}\"}} {}", h.count);
        }
        drop(r);
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
}
