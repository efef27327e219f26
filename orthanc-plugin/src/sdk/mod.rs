//! A thin safe wrapper over the Orthanc plugin SDK (Orthanc 1.10.1).
//!
//! Global invariants this module maintains, which every `// SAFETY:` comment relies on:
//!
//! - The `OrthancPluginContext*` that Orthanc hands to `OrthancPluginInitialize` is stored
//!   once in `CONTEXT` and is never used after `OrthancPluginFinalize` ([`finalize`]).
//!   Orthanc keeps it alive for the whole time in between.
//! - The services used outside registration (answers, logging, configuration, REST and
//!   DICOM access) take no global lock in Orthanc and may be called from any thread
//!   (ORTHANC-NOTES §2). Registrations are only valid while `OrthancPluginInitialize` runs,
//!   so they are methods of [`Registrar`], which only [`initialize`] creates.
//! - Every `extern "C"` function Orthanc calls catches panics (`guard`): since Rust 1.81 a
//!   panic reaching a C frame aborts the process, which would kill Orthanc.
//! - Data Orthanc passes to callbacks is copied into owned Rust values before any handler
//!   runs; NULL pointers become [`SdkError::NullPointer`], never a crash.

mod access;
mod buffer;
mod changes;
mod filter;
mod log;
mod metrics;
mod rest;

use std::any::Any;
use std::ffi::{c_char, CStr, CString};
use std::fmt;
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use crate::sys;

pub use access::{call_rest_api, configuration_path, get_configuration, get_dicom_for_instance, orthanc_version, RestApiAnswer};
pub use buffer::OrthancBuffer;
pub use changes::{ChangeEvent, ChangeType, ResourceType};
pub use filter::{FilterDecision, FilterRequest};
pub use log::{log_error, log_info, log_warning, set_info_shown, OrthancLogLayer};
pub use rest::{internal_error_response, RestRequest, MAX_REST_ROUTES};

/// Orthanc's context pointer, shareable between threads.
#[derive(Clone, Copy)]
struct Context(NonNull<sys::OrthancPluginContext>);

// SAFETY: the context is created by Orthanc before `Initialize`, never mutated by the
// plugin, and outlives `Finalize`; the services reached through it are thread-safe (module
// invariants above).
unsafe impl Send for Context {}
// SAFETY: as for `Send`: sharing the pointer only lets threads call thread-safe services.
unsafe impl Sync for Context {}

static CONTEXT: OnceLock<Context> = OnceLock::new();
/// Set by [`finalize`]: from then on the context must not be used any more.
static FINALIZED: AtomicBool = AtomicBool::new(false);

/// Why an SDK call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SdkError {
    #[error("the Orthanc plugin context is not available (before OrthancPluginInitialize or after OrthancPluginFinalize)")]
    NoContext,
    /// Orthanc error 17 (`UnknownResource`): how the in-process REST API and the DICOM
    /// access report a missing resource, instead of a 404 status.
    #[error("{call}: unknown resource (Orthanc error 17)")]
    NotFound { call: &'static str },
    #[error("{call}: Orthanc error {code} ({description})")]
    Orthanc { call: &'static str, code: i32, description: String },
    #[error("Orthanc passed a NULL {0}")]
    NullPointer(&'static str),
    #[error("{0} contains a NUL byte, which Orthanc's C strings cannot carry")]
    InteriorNul(&'static str),
    #[error("{what} is {len} bytes, over the 4 GiB limit of Orthanc's SDK")]
    TooLarge { what: &'static str, len: usize },
    #[error("Orthanc's REST API only knows GET, POST, PUT and DELETE, not {0}")]
    UnsupportedMethod(http::Method),
    #[error("Orthanc passed an unknown HTTP method code {0}")]
    UnknownMethodCode(u32),
    #[error("the configuration Orthanc returned is not valid JSON: {0}")]
    InvalidConfiguration(#[source] serde_json::Error),
    #[error("all {MAX_REST_ROUTES} REST route slots are taken")]
    TooManyRoutes,
    #[error("a {0} is already registered; this wrapper supports one")]
    AlreadyRegistered(&'static str),
    #[error("the REST answer cannot be sent: {0}")]
    UnsendableResponse(String),
    /// The plugin's own set-up failed (bad configuration, database unreachable...).
    #[error("{0}")]
    Setup(String),
}

impl SdkError {
    /// Orthanc's own error code, when Orthanc reported the failure.
    pub fn orthanc_code(&self) -> Option<i32> {
        match self {
            SdkError::NotFound { .. } => Some(sys::OrthancPluginErrorCode_UnknownResource),
            SdkError::Orthanc { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Builds the error for a non-success code returned by `call`.
    fn from_code(call: &'static str, code: sys::OrthancPluginErrorCode) -> SdkError {
        if code == sys::OrthancPluginErrorCode_UnknownResource {
            SdkError::NotFound { call }
        } else {
            SdkError::Orthanc { call, code, description: error_description(code) }
        }
    }
}

/// `Ok` for `OrthancPluginErrorCode_Success`, the matching [`SdkError`] otherwise.
fn check(call: &'static str, code: sys::OrthancPluginErrorCode) -> Result<(), SdkError> {
    if code == sys::OrthancPluginErrorCode_Success {
        Ok(())
    } else {
        Err(SdkError::from_code(call, code))
    }
}

/// Orthanc's text for an error code, or a placeholder when Orthanc has none.
fn error_description(code: sys::OrthancPluginErrorCode) -> String {
    let Ok(ctx) = context() else {
        return "no description".to_owned();
    };
    // SAFETY: `ctx` is the live context (checked by `context()`); the service accepts any
    // code and returns NULL or a static string owned by Orthanc.
    let text = unsafe { sys::OrthancPluginGetErrorDescription(ctx, code) };
    // SAFETY: `text` is NULL or a NUL-terminated string that Orthanc keeps alive.
    unsafe { owned_string(text, "error description") }.unwrap_or_else(|_| "no description".to_owned())
}

/// The context for a service call, or [`SdkError::NoContext`] outside Initialize…Finalize.
fn context() -> Result<*mut sys::OrthancPluginContext, SdkError> {
    match CONTEXT.get() {
        Some(context) if !FINALIZED.load(Ordering::Acquire) => Ok(context.0.as_ptr()),
        _ => Err(SdkError::NoContext),
    }
}

/// Calls an SDK service with its parameter struct, as the SDK's inline wrappers do, but
/// keeps the error code: the wrappers of the answer and registration services return
/// `void` and discard it, and the REST bridge needs it (Orthanc 1.10.1 rejects some
/// statuses, e.g. 429, only when the answer is sent).
///
/// # Safety
///
/// `P` must be the parameter struct the SDK's inline wrapper builds for `service`, and
/// every pointer in `params` must be valid for the duration of the call.
unsafe fn invoke<P>(call: &'static str, service: sys::_OrthancPluginService, params: &P) -> Result<(), SdkError> {
    let ctx = context()?;
    // SAFETY: `ctx` is the live context; reading one field of it is fine.
    let invoke_service = unsafe { (*ctx).InvokeService }.ok_or(SdkError::NullPointer("InvokeService"))?;
    // SAFETY: the caller guarantees that `params` is the struct `service` expects.
    let code = unsafe { invoke_service(ctx, service, std::ptr::from_ref(params).cast()) };
    check(call, code)
}

/// Stores Orthanc's context, checks the version, then runs `setup` with the
/// [`Registrar`]. Returns the value `OrthancPluginInitialize` must return: 0 on success,
/// -1 (after logging why) when Orthanc is too old or `setup` fails.
///
/// # Safety
///
/// Must be called from `OrthancPluginInitialize`, with the context pointer Orthanc passed
/// to it.
pub unsafe fn initialize(context: *mut sys::OrthancPluginContext, setup: impl FnOnce(&Registrar) -> Result<(), SdkError>) -> i32 {
    guard(
        "OrthancPluginInitialize",
        || -1,
        || {
            let Some(context) = NonNull::new(context) else {
                log_error("OrthancPluginInitialize received a NULL context");
                return -1;
            };
            if CONTEXT.set(Context(context)).is_err() {
                log_error("OrthancPluginInitialize was called twice; refusing the second call");
                return -1;
            }
            // SAFETY: `context` is the live context Orthanc just passed in. The check also
            // verifies that C enums are 32 bits, which the bindings assume.
            if unsafe { sys::OrthancPluginCheckVersion(context.as_ptr()) } == 0 {
                log_error(&format!(
                    "this plugin needs Orthanc {}.{}.{} or later, but runs in Orthanc {}; it is not loaded",
                    sys::ORTHANC_PLUGINS_MINIMAL_MAJOR_NUMBER,
                    sys::ORTHANC_PLUGINS_MINIMAL_MINOR_NUMBER,
                    sys::ORTHANC_PLUGINS_MINIMAL_REVISION_NUMBER,
                    orthanc_version().unwrap_or_else(|_| "(unknown version)".to_owned()),
                ));
                return -1;
            }
            match setup(&Registrar { _only_during_initialize: PhantomData }) {
                Ok(()) => 0,
                Err(err) => {
                    log_error(&format!("plugin initialisation failed: {err}"));
                    -1
                }
            }
        },
    )
}

/// Called from `OrthancPluginFinalize`: no SDK service is used afterwards; later calls
/// fail with [`SdkError::NoContext`] and log lines go to stderr. Background work that
/// uses the SDK must be stopped before this is called.
pub fn finalize() {
    log_info("cohort plugin finalised");
    FINALIZED.store(true, Ordering::Release);
}

/// Registers callbacks with Orthanc. Orthanc only accepts registrations while
/// `OrthancPluginInitialize` runs, so a `Registrar` exists only then: [`initialize`]
/// lends one to its setup function, and it cannot leave that thread.
pub struct Registrar {
    _only_during_initialize: PhantomData<*const ()>,
}

impl Registrar {
    /// Sets the description shown for the plugin in Orthanc Explorer and `/plugins`.
    pub fn set_description(&self, description: &str) -> Result<(), SdkError> {
        let ctx = context()?;
        let description = to_cstring(description, "plugin description")?;
        // SAFETY: `ctx` is the live context and the string outlives the call. The SDK
        // function names the plugin through our exported `OrthancPluginGetName`.
        unsafe { sys::OrthancPluginSetDescription(ctx, description.as_ptr()) };
        Ok(())
    }
}

/// Runs the body of an `extern "C"` function Orthanc calls (or a handler inside one),
/// turning a panic into `on_panic()` after logging it, so that it never unwinds into
/// Orthanc.
pub fn guard<T>(what: impl fmt::Display, on_panic: impl FnOnce() -> T, body: impl FnOnce() -> T) -> T {
    // Handlers are shared between Orthanc's HTTP threads; a panic may leave their state
    // half-updated, exactly as in a Rust HTTP server that catches handler panics.
    catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|payload| {
        log_error(&format!("{what} panicked: {}", panic_message(payload.as_ref())));
        on_panic()
    })
}

/// What a caught panic says (its `&str` or `String` payload).
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("non-string panic payload")
}

/// A C string for Orthanc, or [`SdkError::InteriorNul`] naming `what`.
fn to_cstring(text: &str, what: &'static str) -> Result<CString, SdkError> {
    CString::new(text).map_err(|_| SdkError::InteriorNul(what))
}

/// A C string for a log line: NUL bytes cannot be sent, so they are shown escaped.
fn log_cstring(text: &str) -> CString {
    // No NUL byte is left after the replacement, so the fallback is never used.
    CString::new(text.replace('\0', "\\0")).unwrap_or_default()
}

/// Copies a C string from Orthanc. Invalid UTF-8 (e.g. a Latin-1 header) is replaced
/// with U+FFFD rather than rejected.
///
/// # Safety
///
/// `ptr` must be NULL or point to a NUL-terminated string valid for the call.
unsafe fn owned_string(ptr: *const c_char, what: &'static str) -> Result<String, SdkError> {
    if ptr.is_null() {
        return Err(SdkError::NullPointer(what));
    }
    // SAFETY: non-NULL and NUL-terminated per the caller's contract.
    let bytes = unsafe { CStr::from_ptr(ptr) }.to_bytes();
    // `from_utf8` checks ASCII a word at a time; the lossy decoder goes byte by byte
    // (it was 2.6 % of an `/api` request's instructions, for a dozen short strings).
    Ok(match std::str::from_utf8(bytes) {
        Ok(text) => text.to_owned(),
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
    })
}

/// Copies an array of `count` C strings from Orthanc.
///
/// # Safety
///
/// Unless `count` is 0, `items` must point to `count` pointers, each valid for
/// [`owned_string`].
unsafe fn owned_strings(count: u32, items: *const *const c_char, what: &'static str) -> Result<Vec<String>, SdkError> {
    if count == 0 {
        return Ok(Vec::new());
    }
    if items.is_null() {
        return Err(SdkError::NullPointer(what));
    }
    // SAFETY: `items` points to `count` pointers per the caller's contract.
    let items = unsafe { std::slice::from_raw_parts(items, count as usize) };
    // SAFETY: each item is NULL or a valid C string per the caller's contract.
    items.iter().map(|&item| unsafe { owned_string(item, what) }).collect()
}

/// Copies `count` key/value pairs given as two parallel arrays of C strings.
///
/// # Safety
///
/// `keys` and `values` must each satisfy the contract of [`owned_strings`] for `count`.
unsafe fn owned_pairs(
    count: u32,
    keys: *const *const c_char,
    values: *const *const c_char,
    what: &'static str,
) -> Result<Vec<(String, String)>, SdkError> {
    // SAFETY: forwarded from the caller's contract.
    let keys = unsafe { owned_strings(count, keys, what) }?;
    // SAFETY: forwarded from the caller's contract.
    let values = unsafe { owned_strings(count, values, what) }?;
    Ok(keys.into_iter().zip(values).collect())
}

/// Orthanc's method code as an `http::Method`.
fn method_from_raw(method: sys::OrthancPluginHttpMethod) -> Result<http::Method, SdkError> {
    match method {
        sys::OrthancPluginHttpMethod_Get => Ok(http::Method::GET),
        sys::OrthancPluginHttpMethod_Post => Ok(http::Method::POST),
        sys::OrthancPluginHttpMethod_Put => Ok(http::Method::PUT),
        sys::OrthancPluginHttpMethod_Delete => Ok(http::Method::DELETE),
        other => Err(SdkError::UnknownMethodCode(other)),
    }
}

/// The method code Orthanc expects, for the four methods its REST API knows.
fn method_to_raw(method: &http::Method) -> Result<sys::OrthancPluginHttpMethod, SdkError> {
    match *method {
        http::Method::GET => Ok(sys::OrthancPluginHttpMethod_Get),
        http::Method::POST => Ok(sys::OrthancPluginHttpMethod_Post),
        http::Method::PUT => Ok(sys::OrthancPluginHttpMethod_Put),
        http::Method::DELETE => Ok(sys::OrthancPluginHttpMethod_Delete),
        _ => Err(SdkError::UnsupportedMethod(method.clone())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_round_trip_through_orthanc_codes() {
        for method in [http::Method::GET, http::Method::POST, http::Method::PUT, http::Method::DELETE] {
            let raw = method_to_raw(&method).expect("known method");
            assert_eq!(method_from_raw(raw).expect("known code"), method);
        }
        assert!(matches!(method_to_raw(&http::Method::PATCH), Err(SdkError::UnsupportedMethod(_))));
        assert!(matches!(method_from_raw(99), Err(SdkError::UnknownMethodCode(99))));
    }

    #[test]
    fn log_lines_with_nul_bytes_are_escaped_not_dropped() {
        assert_eq!(log_cstring("a\0b").to_str(), Ok("a\\0b"));
    }

    #[test]
    fn null_strings_from_orthanc_are_errors() {
        // SAFETY: NULL is allowed by the contract and must be reported, not dereferenced.
        let result = unsafe { owned_string(std::ptr::null(), "resource id") };
        assert!(matches!(result, Err(SdkError::NullPointer("resource id"))));
        // SAFETY: a count of 0 never reads the (NULL) array.
        let empty = unsafe { owned_pairs(0, std::ptr::null(), std::ptr::null(), "headers") };
        assert_eq!(empty.expect("empty"), Vec::new());
    }
}
