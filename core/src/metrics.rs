//! Process-wide request and login figures for `GET /api/metrics`, kept with atomics and
//! one short-held lock per request (a map from route template and status to counters).
//! Labels are bounded: route templates come from the router (`MatchedPath`), anything
//! else counts as `unmatched`; statuses are the three-digit codes answered.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// Upper bounds of the latency histogram, in seconds (`+Inf` is implied).
pub const LATENCY_BUCKETS: [f64; 11] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// A route template's latency histogram.
#[derive(Default)]
struct Histogram {
    buckets: [u64; LATENCY_BUCKETS.len()],
    count: u64,
    sum_seconds: f64,
}

#[derive(Default)]
struct Requests {
    /// `(route, status)` → answers.
    by_status: BTreeMap<(String, u16), u64>,
    /// `route` → latency.
    latency: BTreeMap<String, Histogram>,
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
    /// Export archives whose answer was produced (one per request).
    pub exports: AtomicU64,
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
        match r.by_status.get_mut(&(route.to_string(), status)) {
            Some(n) => *n += 1,
            None => {
                r.by_status.insert((route.to_string(), status), 1);
            }
        }
        let h = match r.latency.get_mut(route) {
            Some(h) => h,
            None => r.latency.entry(route.to_string()).or_default(),
        };
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
        r.by_status.iter().fold((0, 0), |(all, errors), ((_, status), n)| (all + n, if *status >= 500 { errors + n } else { errors }))
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
        for ((route, status), n) in &r.by_status {
            let _ = writeln!(out, "cohort_http_requests_total{{route=\"{}\",status=\"{status}\"}} {n}", escape(route));
        }
        out.push_str("# HELP cohort_http_request_duration_seconds Time to produce an answer, by route template.\n");
        out.push_str("# TYPE cohort_http_request_duration_seconds histogram\n");
        for (route, h) in &r.latency {
            let route = escape(route);
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
        out.push_str("# HELP cohort_exports_total Export archives answered.\n# TYPE cohort_exports_total counter\n");
        let _ = writeln!(out, "cohort_exports_total {}", self.exports.load(Ordering::Relaxed));
    }
}

/// A label value as the text format wants it: `\`, `"` and newlines escaped.
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
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
