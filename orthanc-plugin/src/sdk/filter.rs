//! The incoming HTTP request filter (`RegisterIncomingHttpRequestFilter2`).

use std::ffi::c_char;
use std::sync::OnceLock;

use http::Method;

use super::{guard, log_error, method_from_raw, owned_pairs, owned_string, Registrar, SdkError};
use crate::sys;

type FilterHandler = Box<dyn Fn(FilterRequest) -> FilterDecision + Send + Sync>;

static FILTER: OnceLock<FilterHandler> = OnceLock::new();

/// What the filter sees of a request: everything but the body, which Orthanc has not read
/// yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterRequest {
    pub method: Method,
    /// The decoded path, without the query string.
    pub uri: String,
    /// The client's IP address.
    pub ip: String,
    /// The request headers, names in lower case, sorted, one value per name (as in
    /// [`RestRequest::headers`](super::RestRequest::headers)).
    pub headers: Vec<(String, String)>,
    /// The query arguments, still percent-encoded, for GET only (as in
    /// [`RestRequest::query`](super::RestRequest::query)).
    pub query: Vec<(String, String)>,
}

/// The filter's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterDecision {
    Allow,
    /// Orthanc answers 403 with an empty body; no other status or body is possible.
    Deny,
}

impl Registrar {
    /// Runs `filter` before Orthanc handles any HTTP request: the plugin's own routes and
    /// Orthanc's native ones alike, concurrently on the HTTP threads, but not the plugin's
    /// in-process REST calls. A panic, or a request Orthanc passed incompletely, is
    /// logged and denied.
    pub fn register_http_filter(&self, filter: impl Fn(FilterRequest) -> FilterDecision + Send + Sync + 'static) -> Result<(), SdkError> {
        let ctx = super::context()?;
        FILTER.set(Box::new(filter)).map_err(|_| SdkError::AlreadyRegistered("HTTP request filter"))?;
        // SAFETY: `ctx` is the live context, registration happens during Initialize, and
        // the callback lives forever.
        let code = unsafe { sys::OrthancPluginRegisterIncomingHttpRequestFilter2(ctx, Some(filter_trampoline)) };
        super::check("RegisterIncomingHttpRequestFilter2", code)
    }
}

/// The callback Orthanc calls for each incoming request: 1 allows, 0 denies (403).
///
/// # Safety
///
/// Called by Orthanc only, with the arguments of an incoming-request filter.
#[allow(clippy::too_many_arguments)] // The C signature.
unsafe extern "C" fn filter_trampoline(
    method: sys::OrthancPluginHttpMethod,
    uri: *const c_char,
    ip: *const c_char,
    headers_count: u32,
    headers_keys: *const *const c_char,
    headers_values: *const *const c_char,
    get_count: u32,
    get_keys: *const *const c_char,
    get_values: *const *const c_char,
) -> i32 {
    const ALLOW: i32 = 1;
    const DENY: i32 = 0;
    guard(
        "HTTP request filter",
        || DENY,
        || {
            let request = (|| {
                Ok::<_, SdkError>(FilterRequest {
                    method: method_from_raw(method)?,
                    // SAFETY: Orthanc passes C strings valid for the call.
                    uri: unsafe { owned_string(uri, "filtered URI") }?,
                    // SAFETY: as above.
                    ip: unsafe { owned_string(ip, "client IP") }?,
                    // SAFETY: Orthanc passes `headers_count` keys and values.
                    headers: unsafe { owned_pairs(headers_count, headers_keys, headers_values, "HTTP header") }?,
                    // SAFETY: Orthanc passes `get_count` keys and values.
                    query: unsafe { owned_pairs(get_count, get_keys, get_values, "GET argument") }?,
                })
            })();
            let request = match request {
                Ok(request) => request,
                Err(err) => {
                    log_error(&format!("HTTP request filter denies a request it cannot read: {err}"));
                    return DENY;
                }
            };
            match FILTER.get().map(|filter| filter(request)) {
                Some(FilterDecision::Allow) => ALLOW,
                Some(FilterDecision::Deny) | None => DENY,
            }
        },
    )
}
