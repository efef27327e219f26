//! The plugin the tests load, `libcohort_orthanc_testlib.so`, never shipped: Cohort with
//! a route that panics (to prove a panic becomes a 500 and Orthanc keeps serving), or,
//! with `COHORT_PLUGIN_SELFTEST=1`, the FFI layer's demo routes instead of Cohort
//! (`tests/ffi_selftest.rs`).

mod selftest;

use axum::Router;
use cohort_orthanc_bridge::sdk::{Registrar, SdkError};
use http::StatusCode;

fn setup(plugin: &Registrar) -> Result<(), SdkError> {
    if std::env::var(selftest::ENV).is_ok_and(|v| v == "1") {
        selftest::register(plugin)
    } else {
        cohort_orthanc_bridge::host::setup(plugin, with_panic_route)
    }
}

/// Adds `GET /api/__test__/panic`, which panics.
fn with_panic_route(router: Router) -> Router {
    router.route(
        "/api/__test__/panic",
        axum::routing::get(|| async {
            if std::hint::black_box(true) {
                panic!("deliberate panic in the test route");
            }
            StatusCode::NO_CONTENT
        }),
    )
}

cohort_orthanc_bridge::export_plugin!(setup);
