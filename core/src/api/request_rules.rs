//! Rules every `/api` request passes before any handler runs, on both hosts (DESIGN §6
//! "Input rules" and "Body size before reading"). They are written once here: the router
//! applies them in its outer layer, and the plugin's HTTP filter applies the same functions
//! before Orthanc reads a body.

use axum::extract::Request;
use axum::http::{header, HeaderMap, Method};

use crate::error::ApiError;

/// Bodies of every `/api` route but the import stay below this many bytes.
pub const MAX_BODY_BYTES: u64 = 1 << 20;
/// The one route that takes large bodies (within `MaxUploadBytes`).
pub const IMPORT_PATH: &str = "/api/patients/import";
/// Headers with which clients ask a server to treat a request as another method.
pub const METHOD_OVERRIDE_HEADERS: [&str; 3] = ["x-http-method-override", "x-http-method", "x-method-override"];
/// The query argument that does the same (Ruby on Rails style; Orthanc honours it).
pub const METHOD_OVERRIDE_ARG: &str = "_method";

/// Whether a request asks for another method than the one it was sent with, through a
/// header or a `_method` argument (any case, percent-encoded or not).
pub fn fakes_method<'a>(header_names: impl IntoIterator<Item = &'a str>, query: &str) -> bool {
    header_names.into_iter().any(|name| METHOD_OVERRIDE_HEADERS.iter().any(|h| name.eq_ignore_ascii_case(h)))
        || form_urlencoded::parse(query.as_bytes()).any(|(key, _)| key.trim().eq_ignore_ascii_case(METHOD_OVERRIDE_ARG))
}

/// Put in a request's extensions by a host that saw a method override the request no
/// longer shows (Orthanc applies `?_method=` itself and drops the query string before
/// the plugin's callback runs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MethodOverrideSeen;

/// 400 `method_override_refused`.
pub fn method_override_refused() -> ApiError {
    ApiError::bad_request(
        "method_override_refused",
        "method overrides (`_method`, `X-HTTP-Method-Override`, `X-HTTP-Method`, `X-Method-Override`) are refused; send the real method",
    )
}

/// What a request says of its body before any of it is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeclaredBody {
    /// Neither `Content-Length` nor `Transfer-Encoding`.
    None,
    Length(u64),
    /// `Transfer-Encoding` without a usable length: the size is unknown until read.
    Unbounded,
    /// A `Content-Length` that is not one decimal number.
    Invalid,
}

impl DeclaredBody {
    /// Reads `Content-Length` and `Transfer-Encoding` (`content_length` is the header's
    /// value as received). A `Transfer-Encoding` wins: servers then ignore the length.
    pub fn from_headers(content_length: Option<&str>, transfer_encoding: bool) -> DeclaredBody {
        if transfer_encoding {
            return DeclaredBody::Unbounded;
        }
        let Some(raw) = content_length else { return DeclaredBody::None };
        let digits = raw.trim();
        let digits = digits.strip_prefix('+').unwrap_or(digits);
        if digits.is_empty() || digits.len() > 19 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return DeclaredBody::Invalid;
        }
        digits.parse().map_or(DeclaredBody::Invalid, DeclaredBody::Length)
    }

    /// Whether the body is known to fit in `limit` bytes.
    pub fn within(self, limit: u64) -> bool {
        match self {
            DeclaredBody::None => true,
            DeclaredBody::Length(n) => n <= limit,
            DeclaredBody::Unbounded | DeclaredBody::Invalid => false,
        }
    }

    /// Whether the body is known to be over `limit` bytes (or its length is malformed).
    /// A body of unknown length is not: it is counted while it is read.
    pub fn exceeds(self, limit: u64) -> bool {
        match self {
            DeclaredBody::Length(n) => n > limit,
            DeclaredBody::Invalid => true,
            DeclaredBody::None | DeclaredBody::Unbounded => false,
        }
    }

    pub fn of(headers: &HeaderMap) -> DeclaredBody {
        let length = headers.get(header::CONTENT_LENGTH).map(|v| v.to_str().unwrap_or("invalid"));
        DeclaredBody::from_headers(length, headers.contains_key(header::TRANSFER_ENCODING))
    }
}

/// Whether `method path` is the import route, the one route allowed large bodies.
pub fn is_import(method: &Method, path: &str) -> bool {
    method == Method::POST && path.trim_end_matches('/') == IMPORT_PATH
}

/// 413 `too_large` for a body over [`MAX_BODY_BYTES`].
pub fn body_too_large() -> ApiError {
    ApiError::too_large(format!("request bodies are limited to {MAX_BODY_BYTES} bytes (imports: MaxUploadBytes)"))
}

/// Refuses method overrides (400) and bodies declared over the limit (413) before
/// routing; the router's outer layer applies it to every request. The import route
/// checks its own, larger limit once it knows the caller; bodies of unknown length are
/// counted while read (`ApiJson`, the import's spooling), so the sidecar never holds more
/// than the limit.
pub fn check(req: &Request) -> Result<(), ApiError> {
    let query = req.uri().query().unwrap_or_default();
    if req.extensions().get::<MethodOverrideSeen>().is_some() || fakes_method(req.headers().keys().map(|k| k.as_str()), query) {
        return Err(method_override_refused());
    }
    if !is_import(req.method(), req.uri().path()) && DeclaredBody::of(req.headers()).exceeds(MAX_BODY_BYTES) {
        return Err(body_too_large());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_overrides_are_recognised_in_every_spelling() {
        assert!(fakes_method(["x-http-method-override"], ""));
        assert!(fakes_method(["X-HTTP-Method"], ""));
        assert!(fakes_method(["x-method-override"], ""));
        assert!(fakes_method([], "_method=delete"));
        assert!(fakes_method([], "a=1&_METHOD=put"));
        assert!(fakes_method([], "%5Fmethod=DELETE"));
        assert!(fakes_method([], "_method"));
        assert!(!fakes_method(["content-type", "x-csrf-token"], "q=_method&method=x"));
    }

    #[test]
    fn declared_bodies() {
        use DeclaredBody::*;
        assert_eq!(DeclaredBody::from_headers(Option::None, false), None);
        assert_eq!(DeclaredBody::from_headers(Some("12"), false), Length(12));
        assert_eq!(DeclaredBody::from_headers(Some(" +12 "), false), Length(12));
        assert_eq!(DeclaredBody::from_headers(Some("12"), true), Unbounded);
        for bad in ["", "-1", "0x10", "1e9", "1 2", "99999999999999999999", "12,12"] {
            assert_eq!(DeclaredBody::from_headers(Some(bad), false), Invalid, "{bad:?}");
        }
        assert!(Length(MAX_BODY_BYTES).within(MAX_BODY_BYTES));
        assert!(!Length(MAX_BODY_BYTES + 1).within(MAX_BODY_BYTES));
        assert!(!Unbounded.within(u64::MAX) && !Invalid.within(u64::MAX) && None.within(0));
        assert!(Length(MAX_BODY_BYTES + 1).exceeds(MAX_BODY_BYTES) && Invalid.exceeds(u64::MAX));
        assert!(!Unbounded.exceeds(0) && !None.exceeds(0) && !Length(5).exceeds(5));
    }

    #[test]
    fn only_post_to_the_import_route_is_an_import() {
        assert!(is_import(&Method::POST, "/api/patients/import"));
        assert!(is_import(&Method::POST, "/api/patients/import/"));
        assert!(!is_import(&Method::PUT, "/api/patients/import"));
        assert!(!is_import(&Method::POST, "/api/patients/import/x"));
        assert!(!is_import(&Method::POST, "/api/auth/login"));
    }
}
