//! REST routes: Orthanc's `RegisterRestCallbackNoLock` bridged to Rust closures that take
//! an owned [`RestRequest`] and return an `http::Response<Bytes>`.

use std::ffi::{c_char, CString};
use std::ptr::NonNull;
use std::sync::OnceLock;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, CONTENT_TYPE};
use http::{Method, Response, StatusCode};

use super::{guard, invoke, log_error, method_from_raw, owned_pairs, owned_string, owned_strings, to_cstring, Registrar, SdkError};
use crate::sys;

/// How many routes can be registered. Orthanc's REST callback carries no user data, so
/// each route needs its own `extern "C"` function; they are generated for this many
/// slots. Raise it (and the list in `TRAMPOLINES`) if a plugin needs more.
pub const MAX_REST_ROUTES: usize = 16;

type RestHandler = Box<dyn Fn(RestRequest) -> Response<Bytes> + Send + Sync>;

static ROUTES: [OnceLock<RestHandler>; MAX_REST_ROUTES] = [const { OnceLock::new() }; MAX_REST_ROUTES];

type RawRestCallback = unsafe extern "C" fn(
    *mut sys::OrthancPluginRestOutput,
    *const c_char,
    *const sys::OrthancPluginHttpRequest,
) -> sys::OrthancPluginErrorCode;

macro_rules! trampolines {
    ($($slot:literal)*) => { [$(rest_trampoline::<$slot> as RawRestCallback),*] };
}

/// One `extern "C"` callback per slot of [`ROUTES`].
static TRAMPOLINES: [RawRestCallback; MAX_REST_ROUTES] = trampolines!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);

/// Size of `OrthancPluginHttpRequest` in the 1.10.1 SDK. Newer SDKs append fields
/// (1.12.9 adds `authenticationPayload`) that Orthanc 1.10.1 does not provide.
const HTTP_REQUEST_SIZE_1_10_1: usize = if cfg!(target_pointer_width = "64") { 72 } else { 44 };

// Every field read in `RestRequest::from_raw` lies inside the 1.10.1 struct, so the
// bridge never reads past what Orthanc 1.10.1 passes, whatever header it is built against.
const _: () = assert!(
    std::mem::offset_of!(sys::OrthancPluginHttpRequest, headersValues) + std::mem::size_of::<*const *const c_char>()
        <= HTTP_REQUEST_SIZE_1_10_1
);
// Orthanc passes C enums as 32-bit integers (`OrthancPluginCheckVersion` verifies it).
const _: () = assert!(std::mem::size_of::<sys::OrthancPluginHttpMethod>() == 4);

/// A REST request as Orthanc delivered it, copied into owned data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestRequest {
    /// GET, POST, PUT or DELETE: the only methods Orthanc routes to plugins.
    pub method: Method,
    /// The whole path, URL-decoded by Orthanc, without the query string.
    pub path: String,
    /// The capture groups of the route's regular expression (an unmatched optional group
    /// is an empty string).
    pub groups: Vec<String>,
    /// The query arguments in URL order, **still percent-encoded**: Orthanc 1.10.1
    /// splits the query string on `&` and `=` but decodes nothing (`+` stays `+`).
    /// Orthanc parses them for GET only: for other methods this is always empty.
    pub query: Vec<(String, String)>,
    /// The request headers, names in lower case. Orthanc 1.10.1 keeps them in a map: they
    /// arrive sorted by name, and of a repeated header only the first value is kept
    /// (cookies arrive as the one raw `cookie` header browsers send).
    pub headers: Vec<(String, String)>,
    /// The request body (empty for GET and DELETE).
    pub body: Bytes,
}

impl RestRequest {
    /// Copies the request Orthanc passed to a REST callback.
    ///
    /// # Safety
    ///
    /// `url` and `request` must be the pointers Orthanc passed to the callback, which is
    /// still running.
    unsafe fn from_raw(url: *const c_char, request: *const sys::OrthancPluginHttpRequest) -> Result<Self, SdkError> {
        // SAFETY: `request` is NULL or valid for the callback's duration.
        let request = unsafe { request.as_ref() }.ok_or(SdkError::NullPointer("HTTP request"))?;
        let body = if request.bodySize == 0 {
            Bytes::new()
        } else if request.body.is_null() {
            return Err(SdkError::NullPointer("request body"));
        } else {
            // SAFETY: Orthanc passes `bodySize` readable bytes at `body`.
            Bytes::copy_from_slice(unsafe { std::slice::from_raw_parts(request.body.cast::<u8>(), request.bodySize as usize) })
        };
        Ok(RestRequest {
            method: method_from_raw(request.method)?,
            // SAFETY: `url` is NULL or a C string valid for the callback.
            path: unsafe { owned_string(url, "request URL") }?,
            // SAFETY: Orthanc passes `groupsCount` C strings in `groups`.
            groups: unsafe { owned_strings(request.groupsCount, request.groups, "regex group") }?,
            // SAFETY: Orthanc passes `getCount` keys and values.
            query: unsafe { owned_pairs(request.getCount, request.getKeys, request.getValues, "GET argument") }?,
            // SAFETY: Orthanc passes `headersCount` keys and values.
            headers: unsafe { owned_pairs(request.headersCount, request.headersKeys, request.headersValues, "HTTP header") }?,
            body,
        })
    }

    /// Converts to an `http::Request` (for an axum `Router`), validating the headers.
    ///
    /// The path is percent-encoded again; Orthanc decodes it before the plugin sees it, so
    /// an encoded slash (`%2F`) reaches the router as a plain `/`. The query arguments are
    /// joined back as Orthanc passed them (still encoded), only escaping what a URI cannot
    /// hold, so the router's query extractor decodes them exactly once.
    pub fn into_http_request(self) -> Result<http::Request<Bytes>, http::Error> {
        let mut uri = String::new();
        percent_encode_into(&mut uri, &self.path, PATH_LITERALS);
        for (index, (key, value)) in self.query.iter().enumerate() {
            uri.push(if index == 0 { '?' } else { '&' });
            percent_encode_into(&mut uri, key, QUERY_LITERALS);
            uri.push('=');
            percent_encode_into(&mut uri, value, QUERY_LITERALS);
        }
        let uri = http::Uri::try_from(uri)?;
        let mut headers = HeaderMap::with_capacity(self.headers.len());
        for (name, value) in self.headers {
            // The strings are moved into the header map, not copied.
            let value = http::HeaderValue::from_maybe_shared(Bytes::from(value)).map_err(http::Error::from)?;
            headers.append(HeaderName::from_bytes(name.as_bytes()).map_err(http::Error::from)?, value);
        }
        let mut request = http::Request::new(self.body);
        *request.method_mut() = self.method;
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        Ok(request)
    }
}

/// What may appear literally in a decoded path: RFC 3986 `pchar` and `/`, but not `%`,
/// which must be encoded again.
const PATH_LITERALS: &[u8] = b"-._~!$&'()*+,;=:@/";
/// What may stay literal in a still-encoded query argument: `pchar`, `/`, `?` and `%`
/// (its escapes are kept as they are).
const QUERY_LITERALS: &[u8] = b"-._~!$&'()*+,;=:@/?%";

/// Appends `text` to `out`, percent-encoding every byte that is not alphanumeric or in
/// `literals`.
fn percent_encode_into(out: &mut String, text: &str, literals: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.reserve(text.len());
    let mut rest = text;
    // Runs of literal bytes are copied whole; only the others are escaped one by one.
    while let Some(at) = rest.bytes().position(|b| !(b.is_ascii_alphanumeric() || literals.contains(&b))) {
        out.push_str(&rest[..at]);
        // A string slice must end on a character boundary: the whole character is
        // escaped, each of its bytes (none of a multi-byte character is literal).
        let width = rest[at..].chars().next().map_or(1, char::len_utf8);
        for &byte in &rest.as_bytes()[at..at + width] {
            out.push('%');
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 15)]));
        }
        rest = &rest[at + width..];
    }
    out.push_str(rest);
}

/// The JSON 500 answered when a handler panics or its answer cannot be sent.
pub fn internal_error_response() -> Response<Bytes> {
    let mut response = Response::new(Bytes::from_static(br#"{"error":{"code":"internal_error","message":"internal error"}}"#));
    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    response.headers_mut().insert(CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    response
}

impl Registrar {
    /// Serves the paths matching `regex` with `handler`, through
    /// `OrthancPluginRegisterRestCallbackNoLock`: requests run concurrently on Orthanc's
    /// HTTP threads (the locked variant serialises every plugin callback of the server).
    ///
    /// `regex` is a Boost regular expression matched against the whole decoded path; the
    /// first registered match wins, and plugin routes shadow Orthanc's own. A panic in
    /// `handler` is logged and answered with [`internal_error_response`].
    pub fn register_rest_route(
        &self,
        regex: &str,
        handler: impl Fn(RestRequest) -> Response<Bytes> + Send + Sync + 'static,
    ) -> Result<(), SdkError> {
        let regex = to_cstring(regex, "route regex")?;
        let mut handler: RestHandler = Box::new(handler);
        for (slot, cell) in ROUTES.iter().enumerate() {
            match cell.set(handler) {
                Ok(()) => {
                    let params =
                        sys::_OrthancPluginRestCallback { pathRegularExpression: regex.as_ptr(), callback: Some(TRAMPOLINES[slot]) };
                    // SAFETY: this is the struct `OrthancPluginRegisterRestCallbackNoLock`
                    // builds; Orthanc copies the regex; the trampoline lives forever.
                    return unsafe { invoke("RegisterRestCallbackNoLock", sys::_OrthancPluginService_RegisterRestCallbackNoLock, &params) };
                }
                Err(taken) => handler = taken,
            }
        }
        Err(SdkError::TooManyRoutes)
    }
}

/// The callback Orthanc calls for the route in slot `SLOT`.
///
/// # Safety
///
/// Called by Orthanc only, with the pointers of a REST callback.
unsafe extern "C" fn rest_trampoline<const SLOT: usize>(
    output: *mut sys::OrthancPluginRestOutput,
    url: *const c_char,
    request: *const sys::OrthancPluginHttpRequest,
) -> sys::OrthancPluginErrorCode {
    guard(
        "REST callback",
        || sys::OrthancPluginErrorCode_Plugin,
        || {
            // SAFETY: Orthanc passes valid pointers for the duration of this callback.
            unsafe { serve(SLOT, output, url, request) }
        },
    )
}

/// Copies the request, runs the handler, and sends its response.
///
/// # Safety
///
/// The pointers must be those of a running REST callback.
unsafe fn serve(
    slot: usize,
    output: *mut sys::OrthancPluginRestOutput,
    url: *const c_char,
    request: *const sys::OrthancPluginHttpRequest,
) -> sys::OrthancPluginErrorCode {
    let Some(output) = NonNull::new(output).map(RestOutput) else {
        log_error("REST callback received a NULL output; Orthanc answers with its own error");
        return sys::OrthancPluginErrorCode_Plugin;
    };
    // SAFETY: forwarded from the caller's contract.
    let response = match unsafe { RestRequest::from_raw(url, request) } {
        Ok(request) => match ROUTES[slot].get() {
            Some(handler) => {
                let path = request.path.clone();
                guard(format_args!("REST handler for {path}"), internal_error_response, || handler(request))
            }
            None => {
                log_error(&format!("REST callback for unregistered route slot {slot}"));
                internal_error_response()
            }
        },
        Err(err) => {
            log_error(&format!("cannot read a REST request from Orthanc: {err}"));
            internal_error_response()
        }
    };
    output.answer(response)
}

/// The answer channel of one REST callback: valid only during that callback, and only on
/// its thread, so it is never stored or sent elsewhere.
struct RestOutput(NonNull<sys::OrthancPluginRestOutput>);

/// Headers Orthanc writes itself: sending them too would duplicate or contradict its own.
const HEADERS_SET_BY_ORTHANC: [&str; 4] = ["content-length", "connection", "keep-alive", "transfer-encoding"];

impl RestOutput {
    /// Sends `response`; if Orthanc refuses it, sends the JSON 500 instead, and failing that
    /// returns an error code so that Orthanc answers with its own error.
    fn answer(&self, response: Response<Bytes>) -> sys::OrthancPluginErrorCode {
        let status = response.status();
        let content_type_sent = match self.send(response) {
            Ok(()) => return sys::OrthancPluginErrorCode_Success,
            Err(Failure { content_type_sent, error }) => {
                log_error(&format!("cannot send the {status} answer: {error}; answering 500 instead"));
                content_type_sent
            }
        };
        let fallback = internal_error_response();
        let sent = if content_type_sent {
            self.send_status(StatusCode::INTERNAL_SERVER_ERROR, fallback.body())
        } else {
            self.send(fallback).map_err(|failure| failure.error)
        };
        match sent {
            Ok(()) => sys::OrthancPluginErrorCode_Success,
            Err(error) => {
                log_error(&format!("cannot send the fallback 500 either: {error}"));
                sys::OrthancPluginErrorCode_Plugin
            }
        }
    }

    /// Sends a response with the SDK call its status needs.
    fn send(&self, response: Response<Bytes>) -> Result<(), Failure> {
        let (parts, body) = response.into_parts();
        let failure = |error| Failure { content_type_sent: false, error };
        match parts.status {
            // Orthanc refuses 301 and 405 in SendHttpStatus; their dedicated calls clear
            // the other headers and send no body.
            StatusCode::MOVED_PERMANENTLY => {
                let location = header_cstring(&parts.headers, http::header::LOCATION)
                    .ok_or_else(|| failure(SdkError::UnsendableResponse("a 301 answer needs a Location header".to_owned())))?;
                return self.output_plus_argument("Redirect", sys::_OrthancPluginService_Redirect, &location).map_err(failure);
            }
            StatusCode::METHOD_NOT_ALLOWED => {
                let allow = header_cstring(&parts.headers, http::header::ALLOW).unwrap_or_default();
                return self
                    .output_plus_argument("SendMethodNotAllowed", sys::_OrthancPluginService_SendMethodNotAllowed, &allow)
                    .map_err(failure);
            }
            _ => {}
        }
        // For 200, AnswerBuffer sets Content-Type from its MIME argument.
        let is_ok = parts.status == StatusCode::OK;
        let mut content_type_sent = false;
        for (name, value) in &parts.headers {
            if HEADERS_SET_BY_ORTHANC.contains(&name.as_str()) || (is_ok && name == CONTENT_TYPE) {
                continue;
            }
            self.set_header(name, value.as_bytes()).map_err(|error| Failure { content_type_sent, error })?;
            content_type_sent |= name == CONTENT_TYPE;
        }
        let failure = |error| Failure { content_type_sent, error };
        if is_ok {
            let mime = header_cstring(&parts.headers, CONTENT_TYPE).unwrap_or_else(|| c"application/octet-stream".into());
            return self.answer_buffer(&body, &mime).map_err(failure);
        }
        let status = substitute_status(parts.status).unwrap_or(parts.status);
        self.send_status(status, &body).map_err(failure)
    }

    fn set_header(&self, name: &HeaderName, value: &[u8]) -> Result<(), SdkError> {
        let key = to_cstring(name.as_str(), "header name")?;
        let value = CString::new(value).map_err(|_| SdkError::InteriorNul("header value"))?;
        let params = sys::_OrthancPluginSetHttpHeader { output: self.0.as_ptr(), key: key.as_ptr(), value: value.as_ptr() };
        // SAFETY: the struct `OrthancPluginSetHttpHeader` builds; all pointers outlive the call.
        unsafe { invoke("SetHttpHeader", sys::_OrthancPluginService_SetHttpHeader, &params) }
    }

    fn answer_buffer(&self, body: &[u8], mime: &CString) -> Result<(), SdkError> {
        let params = sys::_OrthancPluginAnswerBuffer {
            output: self.0.as_ptr(),
            answer: body.as_ptr().cast(),
            answerSize: body_size(body)?,
            mimeType: mime.as_ptr(),
        };
        // SAFETY: the struct `OrthancPluginAnswerBuffer` builds; body and MIME type
        // outlive the call (Orthanc copies the body).
        unsafe { invoke("AnswerBuffer", sys::_OrthancPluginService_AnswerBuffer, &params) }
    }

    /// A non-200 status: `SendHttpStatusCode` when there is no body, `SendHttpStatus`
    /// otherwise (which, unlike `SendUnauthorized`, adds no `WWW-Authenticate`).
    fn send_status(&self, status: StatusCode, body: &[u8]) -> Result<(), SdkError> {
        if body.is_empty() {
            let params = sys::_OrthancPluginSendHttpStatusCode { output: self.0.as_ptr(), status: status.as_u16() };
            // SAFETY: the struct `OrthancPluginSendHttpStatusCode` builds.
            return unsafe { invoke("SendHttpStatusCode", sys::_OrthancPluginService_SendHttpStatusCode, &params) };
        }
        let params = sys::_OrthancPluginSendHttpStatus {
            output: self.0.as_ptr(),
            status: status.as_u16(),
            body: body.as_ptr().cast(),
            bodySize: body_size(body)?,
        };
        // SAFETY: the struct `OrthancPluginSendHttpStatus` builds; the body outlives the call.
        unsafe { invoke("SendHttpStatus", sys::_OrthancPluginService_SendHttpStatus, &params) }
    }

    /// `Redirect` and `SendMethodNotAllowed`, which share one parameter struct.
    fn output_plus_argument(&self, call: &'static str, service: sys::_OrthancPluginService, argument: &CString) -> Result<(), SdkError> {
        let params = sys::_OrthancPluginOutputPlusArgument { output: self.0.as_ptr(), argument: argument.as_ptr() };
        // SAFETY: the struct both SDK functions build; the argument outlives the call.
        unsafe { invoke(call, service, &params) }
    }
}

/// A failed send, remembering whether a Content-Type header already went out, so the
/// fallback does not add a second one.
struct Failure {
    content_type_sent: bool,
    error: SdkError,
}

/// The status sent instead of one Orthanc 1.10.1 cannot send, when a close one exists.
///
/// Orthanc only sends the statuses of its `HttpStatus` enum and fails with "Parameter out
/// of range" (logging an error of its own) on the others, e.g. 429 and 308, which the
/// 1.10.1 binary does not know. These two are replaced up front; any other unknown status
/// fails when sent and becomes the JSON 500.
fn substitute_status(status: StatusCode) -> Option<StatusCode> {
    match status {
        // Both say "retry later"; a Retry-After header is kept.
        StatusCode::TOO_MANY_REQUESTS => Some(StatusCode::SERVICE_UNAVAILABLE),
        StatusCode::PERMANENT_REDIRECT => Some(StatusCode::TEMPORARY_REDIRECT),
        _ => None,
    }
}

fn header_cstring(headers: &HeaderMap, name: HeaderName) -> Option<CString> {
    headers.get(name).and_then(|value| CString::new(value.as_bytes()).ok())
}

fn body_size(body: &[u8]) -> Result<u32, SdkError> {
    u32::try_from(body.len()).map_err(|_| SdkError::TooLarge { what: "answer body", len: body.len() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_converts_to_http_with_path_encoded_again_and_query_kept() {
        let request = RestRequest {
            method: Method::POST,
            path: "/api/patients/é x%".to_owned(),
            groups: vec!["/patients/é x%".to_owned()],
            query: vec![("q".to_owned(), "a%26b+c".to_owned()), ("name".to_owned(), "é".to_owned())],
            headers: vec![("cookie".to_owned(), "a=1".to_owned()), ("x-csrf-token".to_owned(), "t".to_owned())],
            body: Bytes::from_static(b"{}"),
        };
        let http = request.into_http_request().expect("valid request");
        assert_eq!(http.method(), Method::POST);
        assert_eq!(http.uri(), "/api/patients/%C3%A9%20x%25?q=a%26b+c&name=%C3%A9");
        assert_eq!(http.headers()["cookie"], "a=1");
        assert_eq!(http.headers()["x-csrf-token"], "t");
        assert_eq!(http.body().as_ref(), b"{}");
    }

    #[test]
    fn internal_error_is_the_json_500_of_the_api() {
        let response = internal_error_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
        let body: serde_json::Value = serde_json::from_slice(response.body()).expect("json");
        assert_eq!(body["error"]["code"], "internal_error");
    }

    #[test]
    fn only_statuses_with_a_close_equivalent_are_substituted() {
        assert_eq!(substitute_status(StatusCode::TOO_MANY_REQUESTS), Some(StatusCode::SERVICE_UNAVAILABLE));
        assert_eq!(substitute_status(StatusCode::IM_A_TEAPOT), None);
    }
}
