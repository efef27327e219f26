//! Cohort as an Orthanc plugin (`libcohort_orthanc.so`).
//!
//! All the `unsafe` code of the workspace lives in this crate, in three layers:
//! [`sys`] (bindings generated from the installed SDK header), [`sdk`] (the safe wrapper,
//! which owns every invariant) and the four C entry points below.

pub mod guard;
mod host;
pub mod sdk;
mod selftest;
pub mod sys;
mod transport;

use std::ffi::{c_char, CStr};

use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use crate::sdk::{OrthancLogLayer, Registrar, SdkError};

/// The plugin's name for Orthanc, which uses it to refuse loading the plugin twice.
const PLUGIN_NAME: &CStr = c"cohort";

/// The crate version as a C string.
const PLUGIN_VERSION: &CStr = match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
    Ok(version) => version,
    Err(_) => panic!("the crate version contains a NUL byte"),
};

/// Called once by Orthanc when it loads the plugin. Returns 0, or -1 (with the reason in
/// Orthanc's log) to make Orthanc refuse to start: when Orthanc is older than the SDK the
/// plugin was built against, or a registration fails.
///
/// # Safety
///
/// Only Orthanc calls this, with its plugin context.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn OrthancPluginInitialize(context: *mut sys::OrthancPluginContext) -> i32 {
    // SAFETY: Orthanc calls this entry point once, with its live context.
    unsafe { sdk::initialize(context, setup) }
}

fn setup(plugin: &Registrar) -> Result<(), SdkError> {
    // Another subscriber may already be installed when the rlib is used in a test binary;
    // the plugin then keeps that one.
    let levels = Targets::new().with_default(LevelFilter::INFO).with_target("sqlx", LevelFilter::WARN);
    let _ = tracing_subscriber::registry().with(OrthancLogLayer.with_filter(levels)).try_init();
    plugin.set_description("Cohort: research cohorts and access control on top of Orthanc")?;
    if std::env::var(selftest::ENV).is_ok_and(|v| v == "1") {
        // The FFI layer's own tests: demo routes only, no Cohort.
        selftest::register(plugin)?;
    } else {
        host::setup(plugin)?;
    }
    tracing::info!(version = env!("CARGO_PKG_VERSION"), orthanc = sdk::orthanc_version().unwrap_or_default(), "cohort plugin initialised");
    Ok(())
}

/// Called once by Orthanc before it unloads the plugin.
#[unsafe(no_mangle)]
pub extern "C" fn OrthancPluginFinalize() {
    host::shutdown();
    sdk::finalize();
}

#[unsafe(no_mangle)]
pub extern "C" fn OrthancPluginGetName() -> *const c_char {
    PLUGIN_NAME.as_ptr()
}

#[unsafe(no_mangle)]
pub extern "C" fn OrthancPluginGetVersion() -> *const c_char {
    PLUGIN_VERSION.as_ptr()
}
