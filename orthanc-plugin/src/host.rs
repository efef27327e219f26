//! Cohort inside Orthanc: the bridge between Orthanc's callbacks and the core.
//!
//! - `/api/...` requests become `http::Request`s for the core's [`Api`] (its router, or
//!   for raw images its lane), driven on the Orthanc HTTP thread that received them
//!   (`block_on`: those threads are not tokio's), on a stack of the thread's own that
//!   Cohort maps once ([`run`]); the answer goes back through the SDK.
//! - The HTTP filter applies [`guard::decide`] to every request before Orthanc reads its
//!   body: `/api` bodies are bounded there, method faking is refused, and every other
//!   route (Orthanc's REST API, Orthanc Explorer, DICOMweb...) needs a Cohort admin
//!   session unless `ProtectOrthancApi` is false.
//! - `/ui/...` (the web console's files) and `/` (a redirect to it) go to the same
//!   router; the guard lets their reads through without a session.
//! - Change events only wake the change follower, which does its work on the runtime:
//!   Orthanc's single change thread is never blocked.

use std::cell::Cell;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::Router;
use bytes::Bytes;
use cohort_core::api::request_rules::MethodOverrideSeen;
use cohort_core::api::Api;
use cohort_core::auth::token_matches_hash;
use cohort_core::pacs::stored::StoredFiles;
use cohort_core::pacs::OrthancPacs;
use cohort_core::services::{auth, reconcile, registry, ClientInfo, Via};
use cohort_core::{App, ClientAddr, Config, Host, SharedApp};
use corosensei::stack::DefaultStack;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use tokio::runtime::{Handle, Runtime};
use tokio::sync::Notify;

use crate::guard;
use crate::sdk::{self, ChangeEvent, ChangeType, FilterDecision, FilterRequest, Registrar, RestRequest, SdkError};
use crate::transport::InProcess;

/// The plugin's state, built once in `OrthancPluginInitialize`.
struct Cohort {
    handle: Handle,
    app: SharedApp,
    api: Api,
    wake: Arc<Notify>,
    /// Orthanc's storage directory, when instance files are read there.
    stored: Option<Arc<StoredFiles>>,
}

static COHORT: OnceLock<Cohort> = OnceLock::new();
/// The tasks started once Orthanc's REST API is up (the change follower, the reconciler
/// that completes imports interrupted by an earlier crash, the log level watch), stopped
/// when Orthanc signals `OrthancStopped`.
static BACKGROUND: Mutex<Vec<tokio::task::JoinHandle<()>>> = Mutex::new(Vec::new());
/// The runtime itself, taken out and shut down by [`shutdown`].
static RUNTIME: Mutex<Option<Runtime>> = Mutex::new(None);

/// What the filter learnt of a request that its `/api` callback cannot see.
#[derive(Clone, Copy, Debug, Default)]
struct Filtered {
    /// The client address.
    ip: Option<IpAddr>,
    /// A refusal the callback must answer (Orthanc already applied the method override).
    refusal: Option<guard::Refusal>,
}

thread_local! {
    /// Set by the filter for the request this HTTP thread is serving; its REST callback
    /// runs next on the same thread and takes it.
    static FILTERED: Cell<Filtered> = const { Cell::new(Filtered { ip: None, refusal: None }) };
}

thread_local! {
    /// The stack [`run`] drives futures on, mapped on this Orthanc thread's first request
    /// and kept until the thread ends.
    static STACK: Cell<Option<DefaultStack>> = const { Cell::new(None) };
}

/// Stack of the runtime's threads, and of the stacks [`run`] maps for Orthanc's HTTP
/// threads: those threads' own stacks are too small for deeply nested futures (debug
/// builds overflow them).
const RUNTIME_STACK: usize = 8 << 20;
/// Answers larger than this cannot go through the SDK (a `uint32_t` size).
const MAX_ANSWER: usize = u32::MAX as usize;

/// Reads the configuration, opens the database and registers the callbacks. `extend`
/// may add routes to the core router: the production library passes it through
/// unchanged; only the test library (`cohort-orthanc-testlib`) adds any.
pub fn setup(plugin: &Registrar, extend: fn(Router) -> Router) -> Result<(), SdkError> {
    let orthanc_config = sdk::get_configuration()?;
    let config = Config::from_orthanc_configuration(&orthanc_config).map_err(|e| SdkError::Setup(e.to_string()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("cohort")
        .thread_stack_size(RUNTIME_STACK)
        .enable_all()
        .build()
        .map_err(|e| SdkError::Setup(format!("cannot start the async runtime: {e}")))?;
    let storage = sdk::configuration_path().ok().and_then(|path| crate::transport::storage_directory(&orthanc_config, &path));
    let kept = crate::transport::kept_bytes(&orthanc_config);
    match &storage {
        Some(dir) => tracing::info!(
            directory = %dir.display(),
            kept_mb = kept >> 20,
            "instance files Orthanc stores uncompressed are read in its storage directory (the last read kept in memory up to kept_mb)"
        ),
        None => tracing::info!("instance files are read through Orthanc (its storage is a plugin's)"),
    }
    let stored = storage.map(|root| Arc::new(StoredFiles::new(root).keeping(kept)));
    let pacs = OrthancPacs::shared(InProcess::new(stored.clone()));
    let app = runtime.block_on(App::start(config, Some(pacs), Host::Plugin)).map_err(|e| SdkError::Setup(e.to_string()))?;
    let api = Api::new(app.clone(), extend(cohort_core::api::router(app.clone())));
    let protect = app.config.protect_orthanc_api;
    let cohort = Cohort { handle: runtime.handle().clone(), app, api, wake: Arc::new(Notify::new()), stored };
    if COHORT.set(cohort).is_err() {
        return Err(SdkError::Setup("the plugin was initialised twice".into()));
    }
    *RUNTIME.lock().unwrap_or_else(|p| p.into_inner()) = Some(runtime);

    plugin.register_rest_route("/api(/.*)?", handle_api)?;
    // The web console, and `/` sending browsers to it (instead of Orthanc Explorer).
    plugin.register_rest_route("/ui(/.*)?", handle_api)?;
    plugin.register_rest_route("/", handle_api)?;
    plugin.register_http_filter(filter)?;
    plugin.register_on_change(on_change)?;
    plugin.register_refresh_metrics(orthanc_metrics)?;
    tracing::info!(protect_orthanc_api = protect, "cohort serves /api inside Orthanc");
    Ok(())
}

/// Cohort's main figures, for Orthanc's `/tools/metrics-prometheus` (counters since
/// the plugin started; `f32` is what the SDK takes).
#[allow(clippy::cast_precision_loss)]
fn orthanc_metrics() -> Vec<(&'static str, f32)> {
    let m = cohort_core::metrics::global();
    let (requests, server_errors) = m.request_totals();
    use std::sync::atomic::Ordering::Relaxed;
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Relaxed) as f32;
    let mut out = vec![
        ("cohort_http_requests", requests as f32),
        ("cohort_http_server_errors", server_errors as f32),
        ("cohort_logins_succeeded", load(&m.logins_succeeded)),
        ("cohort_logins_failed", load(&m.logins_failed)),
        ("cohort_logins_throttled", load(&m.logins_throttled)),
        ("cohort_imports", load(&m.imports)),
        ("cohort_import_instances_stored", load(&m.import_instances_stored)),
        ("cohort_import_bytes", load(&m.import_bytes)),
        ("cohort_exports", load(&m.exports)),
        ("cohort_export_bytes", load(&m.export_bytes)),
        ("cohort_change_follower_skipped", load(&m.follower.skipped)),
    ];
    let f = &m.follower;
    if f.last_success_unix.load(Relaxed) > 0 {
        let cursor = f.cursor.load(Relaxed);
        out.push(("cohort_change_follower_cursor", cursor as f32));
        out.push(("cohort_change_follower_lag", (f.orthanc_last.load(Relaxed) - cursor).max(0) as f32));
    }
    if let Some(cohort) = COHORT.get() {
        out.push(("cohort_password_hashing_queue", cohort.app.passwords.queued() as f32));
        out.push(("cohort_db_pool_connections", cohort.app.store.pool_use().0 as f32));
        // The last count (the follower refreshes it): this runs on an HTTP thread, no query here.
        if let Some((_, sizes)) = cohort.app.registry_sizes.last() {
            out.push(("cohort_registry_patients", sizes.patients as f32));
            out.push(("cohort_registry_studies", sizes.studies as f32));
            out.push(("cohort_registry_instances", sizes.instances as f32));
        }
    }
    out
}

/// Stops background work and closes the database; called before `sdk::finalize`.
pub fn shutdown() {
    let runtime = RUNTIME.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let (Some(runtime), Some(cohort)) = (runtime, COHORT.get()) {
        runtime.block_on(cohort.app.store.close());
        runtime.shutdown_timeout(Duration::from_secs(5));
        // No thread of ours may outlive the library Orthanc is about to unload.
        cohort.app.passwords.shutdown();
    }
}

fn json_error(status: StatusCode, code: &str, message: &str) -> Response<Bytes> {
    let body = serde_json::json!({"error": {"code": code, "message": message}});
    let mut resp = Response::new(Bytes::from(body.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// One `/api` request, start to finish: an image on the Orthanc HTTP thread that
/// received it, every other request on the runtime (see [`Where`]).
fn handle_api(request: RestRequest) -> Response<Bytes> {
    let Some(cohort) = COHORT.get() else {
        return sdk::internal_error_response();
    };
    let mut req = match request.into_http_request() {
        Ok(r) => r.map(Body::from),
        Err(_) => return json_error(StatusCode::BAD_REQUEST, "bad_request", "the request could not be read"),
    };
    let filtered = FILTERED.with(Cell::take);
    if let Some(ip) = filtered.ip {
        req.extensions_mut().insert(ClientAddr(ip));
    }
    match filtered.refusal {
        Some(guard::Refusal::MethodOverride) => {
            req.extensions_mut().insert(MethodOverrideSeen);
        }
        None => {}
    }
    let at = Where::of(req.method(), req.uri().path());
    let api = cohort.api.clone();
    let answer = run(cohort, at, async move {
        let (parts, body) = api.call(req).await.into_parts();
        (parts, Limited::new(body, MAX_ANSWER).collect().await)
    });
    match answer {
        Ok((parts, Ok(collected))) => Response::from_parts(parts, collected.to_bytes()),
        Ok((_, Err(e))) => {
            tracing::warn!(error = %e, "an answer could not be produced");
            if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                json_error(StatusCode::PAYLOAD_TOO_LARGE, "too_large", "the answer is larger than Orthanc can send (4 GiB)")
            } else {
                json_error(StatusCode::SERVICE_UNAVAILABLE, "orthanc_unavailable", "the answer could not be produced")
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "an /api request failed");
            sdk::internal_error_response()
        }
    }
}

/// Why [`run`] has no answer.
#[derive(Debug, thiserror::Error)]
enum RunError {
    #[error("the request panicked: {0}")]
    Panicked(String),
    #[error("{0}")]
    Task(tokio::task::JoinError),
}

impl RunError {
    /// A task's end without its output: its panic's message, or why it was cancelled.
    fn of(e: tokio::task::JoinError) -> RunError {
        match e.try_into_panic() {
            Ok(payload) => RunError::Panicked(sdk::panic_message(payload.as_ref()).to_string()),
            Err(e) => RunError::Task(e),
        }
    }
}

/// Where a request runs.
///
/// An image (`GET /api/patients/images/…`) runs on the Orthanc HTTP thread that received
/// it, answer included: its DICOM file is read by the thread that sends it, as Orthanc's
/// own file route does, and when its owner and session are known it waits for no other
/// thread (a hand-over to a runtime thread and back was two context switches, ~29 % of
/// Orthanc's CPU on a 39 KB image under 32 clients).
///
/// Every other request queries the database, two to four statements, and runs as a task
/// on the runtime's two workers, which drive its connection's I/O themselves. Run on the
/// Orthanc thread, each statement's answer went from the worker that polls the sockets
/// to the waiting thread (a wake-up per statement), and 32 clients kept 32 such threads
/// runnable on two cores, each holding a pooled connection while it waited for a core:
/// PostgreSQL at 1M patients, a common name searched while patients are created, 2,336–
/// 3,070 req/s (p99 19.5–27.6 ms) on the thread and 4,370–4,464 (15.4–16.7 ms) as a task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Where {
    OrthancThread,
    Runtime,
}

impl Where {
    fn of(method: &http::Method, path: &str) -> Where {
        if *method == http::Method::GET && path.starts_with("/api/patients/images/") {
            Where::OrthancThread
        } else {
            Where::Runtime
        }
    }
}

/// Runs `work` to completion, as [`Where`] says: as a task on the runtime that this
/// thread waits for, or on the calling Orthanc HTTP thread within the runtime
/// (`block_on`; its timers, I/O and spawned tasks are the runtime's), on this thread's
/// [`STACK`]. A panic in `work` is caught and comes back as an error. Should the stack
/// not be mappable (memory exhausted), the work runs as a task.
fn run<T: Send + 'static>(cohort: &Cohort, at: Where, work: impl std::future::Future<Output = T> + Send + 'static) -> Result<T, RunError> {
    let stack = match at {
        Where::Runtime => None,
        Where::OrthancThread => STACK.with(Cell::take).or_else(|| {
            DefaultStack::new(RUNTIME_STACK)
                .inspect_err(|e| tracing::warn!(error = %e, "cannot map a stack for a request; it runs on the runtime"))
                .ok()
        }),
    };
    let Some(mut stack) = stack else {
        return cohort.handle.block_on(cohort.handle.spawn(work)).map_err(RunError::of);
    };
    let out = corosensei::on_stack(&mut stack, || std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cohort.handle.block_on(work))));
    // Back on Orthanc's own stack; the next request of this thread reuses ours.
    STACK.with(|s| s.set(Some(stack)));
    out.map_err(|payload| RunError::Panicked(sdk::panic_message(payload.as_ref()).to_string()))
}

/// Applies [`guard::decide`] to every HTTP request Orthanc receives, before it reads a
/// body: Orthanc's REST API, Orthanc Explorer, DICOMweb... and Cohort's own `/api`.
fn filter(request: FilterRequest) -> FilterDecision {
    let ip = request.ip.parse::<IpAddr>().ok();
    let mut headers = HeaderMap::new();
    for (name, value) in &request.headers {
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
            headers.append(n, v);
        }
    }
    let Some(cohort) = COHORT.get() else {
        return FilterDecision::Deny;
    };
    let config = &cohort.app.config;
    let policy = guard::Policy {
        protect_native: config.protect_orthanc_api,
        max_upload_bytes: config.max_upload_bytes,
        allowed_origins: &config.allowed_origins,
    };
    let facts = guard::Facts { method: &request.method, uri: &request.uri, headers: &headers, query: &request.query };
    let authenticate = |token: &str, via: Via, csrf: Option<&str>| {
        let client = ClientInfo {
            ip: ip.map(|i| i.to_string()),
            user_agent: headers.get(http::header::USER_AGENT).and_then(|v| v.to_str().ok()).map(str::to_string),
        };
        let (app, token, csrf, method) = (cohort.app.clone(), token.to_string(), csrf.map(str::to_string), request.method.clone());
        // One statement, then Orthanc's own work on this thread: kept here, as measured.
        run(cohort, Where::OrthancThread, async move {
            let who = auth::authenticate(&app, &token, via, client).await.ok()?;
            let csrf_ok = via == Via::Cookie && csrf.is_some_and(|c| token_matches_hash(&c, &who.csrf_hash));
            Some(guard::Who { admin: who.is_admin(), csrf_ok, method_allowed: who.may_use(&method) })
        })
        .ok()
        .flatten()
    };
    let decision = guard::decide(&facts, &policy, authenticate);
    let refusal = match decision {
        guard::Decision::Allow => None,
        guard::Decision::Refuse(refusal) => Some(refusal),
        guard::Decision::Deny(reason) => {
            tracing::info!(method = %request.method, uri = %request.uri, %reason, "request denied (403)");
            return FilterDecision::Deny;
        }
    };
    FILTERED.with(|f| f.set(Filtered { ip, refusal }));
    FilterDecision::Allow
}

/// Change events: start the follower once Orthanc's REST API is up, and wake it on
/// every change after that. Never blocks.
fn on_change(event: ChangeEvent) {
    let Some(cohort) = COHORT.get() else { return };
    match event.change {
        ChangeType::OrthancStarted => {
            // On the runtime, never on this thread: they ask Orthanc and the database.
            let tasks = [
                cohort.handle.spawn(registry::follow_changes(cohort.app.clone(), cohort.wake.clone())),
                cohort.handle.spawn(reconcile::keep_reconciled(cohort.app.clone())),
                cohort.handle.spawn(watch_log_level()),
            ];
            BACKGROUND.lock().unwrap_or_else(|p| p.into_inner()).extend(tasks);
        }
        ChangeType::OrthancStopped => {
            // Orthanc still has its database now, not for long: no call may reach it any more.
            crate::transport::orthanc_stopping();
            // Imports still running stop where they are and record how far they got
            // (`shutting_down`) rather than failing on the next call to Orthanc.
            cohort.app.abort.fire();
            for task in BACKGROUND.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
                task.abort();
            }
        }
        ChangeType::Deleted | ChangeType::UpdatedAttachment if event.resource_type == Some(sdk::ResourceType::Instance) => {
            // What is remembered of its file goes at once (a lock held for microseconds).
            if let (Some(stored), Some(id)) = (&cohort.stored, &event.resource_id) {
                stored.forget(id);
            }
            cohort.wake.notify_one();
        }
        _ => cohort.wake.notify_one(),
    }
}

/// How often [`watch_log_level`] asks Orthanc for its log level.
const LOG_LEVEL_PERIOD: Duration = Duration::from_secs(5);

/// Keeps [`sdk::set_info_shown`] in step with Orthanc's log level for plugins (`--verbose`,
/// `--trace`, `PUT /tools/log-level-plugins` or `/tools/log-level`), so that while Orthanc
/// hides information lines Cohort does not format one per request for nothing. A change
/// takes effect within [`LOG_LEVEL_PERIOD`]; an answer it cannot read keeps the lines on.
async fn watch_log_level() {
    let mut shown = None;
    loop {
        let level = tokio::task::spawn_blocking(|| {
            if crate::transport::is_stopping() {
                return None;
            }
            // The plugins' own category (Orthanc 1.8.1+), else the global level.
            ["/tools/log-level-plugins", "/tools/log-level"].into_iter().find_map(|uri| {
                let answer = sdk::call_rest_api(http::Method::GET, uri, &[], &[]).ok()?;
                (answer.status == 200).then(|| String::from_utf8_lossy(&answer.body).trim().to_ascii_lowercase())
            })
        })
        .await
        .ok()
        .flatten();
        let now_shown = level.as_deref() != Some("default");
        if shown != Some(now_shown) {
            sdk::set_info_shown(now_shown);
            if shown.is_some() {
                // A warning, so that it shows either way.
                let lines = if now_shown { "on" } else { "off" };
                tracing::warn!(
                    level = level.as_deref().unwrap_or("unknown"),
                    "Orthanc's log level changed: Cohort's information lines are {lines}"
                );
            }
            shown = Some(now_shown);
        }
        tokio::time::sleep(LOG_LEVEL_PERIOD).await;
    }
}
