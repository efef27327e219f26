//! The raw image route, `GET /api/patients/images/{instance_id}`, served past the router.
//!
//! A viewer fetches an instance per request, by the hundred: this route's fixed cost per
//! request is what the raw benchmark measures against Orthanc's own file route. Around a
//! 39 KB image, the router's machinery (the two `from_fn` layers' boxed futures and
//! cloned services, the nested routers' prefix stripping, the path parameters and the
//! matched path stored in the request's extensions) was 16–19 % of Orthanc's CPU per
//! image in the plugin: 68.7 and 87.3 µs per request through the router, 57.5 and 70.3
//! in the lane, in two A/B runs (Orthanc copies side by side, medians of 8 interleaved
//! rounds of `wrk -c32`, CPU from `/proc/PID/stat`).
//!
//! The lane takes only requests that the router would send to that route unchanged:
//! `GET`, the path exactly `/api/patients/images/` and an id in Orthanc's alphabet (hex
//! digits and `-`, at most 64: no escape to decode, no `/`), and no query string.
//! Anything else (a query, `HEAD`, an escape, a trailing slash) goes through the router,
//! which answers it as it always did. The lane then runs the router's steps in the
//! router's order, each by the same function: the outer layer's [`Edge::enter`], its
//! input rules ([`refuse_nul`], [`request_rules::check`]), the caller ([`Caller`]:
//! session or API token, its scope), the route's own handler
//! ([`patients::image_answer`]: the access check, then the file), the route named for the
//! log line and the metrics, and [`Edge::finish`] (the headers every answer carries).
//! The e2e test `the_image_lane_answers_as_the_router` compares both ways on both hosts.

use axum::extract::{FromRequestParts, Request};
use axum::http::Method;
use axum::response::{IntoResponse, Response};

use super::extract::Caller;
use super::{observe, patients, refuse_nul, request_rules, Edge};
use crate::app::SharedApp;

/// The route's template, as the router names it in the log line and the metrics.
const IMAGE_ROUTE: &str = "/api/patients/images/{instance_id}";
const IMAGE_PREFIX: &str = "/api/patients/images/";

/// The instance id of a request the lane takes; `None` for every other request.
pub fn image_id(req: &Request) -> Option<String> {
    if req.method() != Method::GET || req.uri().query().is_some() {
        return None;
    }
    let id = req.uri().path().strip_prefix(IMAGE_PREFIX)?;
    let plain = !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    plain.then(|| id.to_string())
}

/// Serves a request [`image_id`] took, as the router would have.
pub async fn image(app: SharedApp, mut req: Request, instance_id: String) -> Response {
    let edge = Edge::enter(&app, &mut req);
    let mut resp = match refuse_nul(&req).and_then(|()| request_rules::check(&req)) {
        Err(e) => e.into_response(),
        Ok(()) => {
            let (mut parts, _) = req.into_parts();
            match Caller::from_request_parts(&mut parts, &app).await {
                Ok(caller) => patients::image_answer(&app, caller, instance_id).await.into_response(),
                Err(e) => e.into_response(),
            }
        }
    };
    observe::name_route(IMAGE_ROUTE, &mut resp);
    edge.finish(&app, &mut resp);
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id_of(method: Method, uri: &str) -> Option<String> {
        image_id(&Request::builder().method(method).uri(uri).body(axum::body::Body::empty()).expect("request"))
    }

    #[test]
    fn the_lane_takes_only_what_the_router_would_pass_on_unchanged() {
        let id = "0d6d1c52-2bd4b3c9-a636f3a1-a5c22e1f-00000001";
        assert_eq!(id_of(Method::GET, &format!("{IMAGE_PREFIX}{id}")).as_deref(), Some(id));
        for uri in [
            format!("{IMAGE_PREFIX}{id}?_=1"),
            format!("{IMAGE_PREFIX}{id}/"),
            format!("{IMAGE_PREFIX}{id}/preview"),
            format!("{IMAGE_PREFIX}%30d6d"),
            format!("{IMAGE_PREFIX}../../users"),
            format!("{IMAGE_PREFIX}{}", "a".repeat(65)),
            IMAGE_PREFIX.to_string(),
            format!("/api/patients/image/{id}"),
        ] {
            assert_eq!(id_of(Method::GET, &uri), None, "{uri}");
        }
        assert_eq!(id_of(Method::HEAD, &format!("{IMAGE_PREFIX}{id}")), None);
        assert_eq!(id_of(Method::DELETE, &format!("{IMAGE_PREFIX}{id}")), None);
    }

    #[test]
    fn the_lane_names_the_route_as_the_router_does() {
        let doc = super::super::openapi();
        assert!(doc.paths.paths.get(IMAGE_ROUTE).is_some_and(|item| item.get.is_some()), "{IMAGE_ROUTE} is not a documented GET");
    }
}
