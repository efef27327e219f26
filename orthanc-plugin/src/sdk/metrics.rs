//! Figures published in Orthanc's own `/tools/metrics-prometheus`.

use std::sync::OnceLock;

use super::{context, guard, invoke, to_cstring, Registrar, SdkError};
use crate::sys;

type Refresh = Box<dyn Fn() -> Vec<(&'static str, f32)> + Send + Sync>;

static REFRESH: OnceLock<Refresh> = OnceLock::new();

impl Registrar {
    /// Calls `refresh` whenever Orthanc is asked for its metrics; each `(name, value)` it
    /// returns is published. Keep it cheap: it runs on the HTTP thread of that request.
    pub fn register_refresh_metrics(&self, refresh: impl Fn() -> Vec<(&'static str, f32)> + Send + Sync + 'static) -> Result<(), SdkError> {
        REFRESH.set(Box::new(refresh)).map_err(|_| SdkError::AlreadyRegistered("metrics callback"))?;
        let params = sys::_OrthancPluginRegisterRefreshMetricsCallback { callback: Some(refresh_trampoline) };
        // SAFETY: the struct `OrthancPluginRegisterRefreshMetricsCallback` builds; the
        // callback lives forever.
        unsafe { invoke("RegisterRefreshMetricsCallback", sys::_OrthancPluginService_RegisterRefreshMetricsCallback, &params) }
    }
}

fn set_metric(name: &str, value: f32) -> Result<(), SdkError> {
    let ctx = context()?;
    let name = to_cstring(name, "metric name")?;
    // SAFETY: `ctx` is the live context and the string outlives the call.
    unsafe { sys::OrthancPluginSetMetricsValue(ctx, name.as_ptr(), value, sys::OrthancPluginMetricsType_Default) };
    Ok(())
}

/// The callback Orthanc calls before answering `/tools/metrics-prometheus`.
///
/// # Safety
///
/// Called by Orthanc only.
unsafe extern "C" fn refresh_trampoline() {
    guard(
        "metrics callback",
        || (),
        || {
            if let Some(refresh) = REFRESH.get() {
                for (name, value) in refresh() {
                    if let Err(e) = set_metric(name, value) {
                        super::log_warning(&format!("metric {name}: {e}"));
                    }
                }
            }
        },
    )
}
