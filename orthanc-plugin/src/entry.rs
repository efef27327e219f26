//! The four functions every Orthanc plugin exports, written once: a library crate
//! expands [`export_plugin!`](crate::export_plugin) with its own setup function.

use std::ffi::CStr;

use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use crate::sdk::{self, OrthancLogLayer, Registrar, SdkError};
use crate::sys;

/// The plugin's name for Orthanc, which uses it to refuse loading the plugin twice.
pub const PLUGIN_NAME: &CStr = c"cohort";

/// The crate version as a C string.
pub const PLUGIN_VERSION: &CStr = match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
    Ok(version) => version,
    Err(_) => panic!("the crate version contains a NUL byte"),
};

/// What a library does in `OrthancPluginInitialize`: register its callbacks.
pub type Setup = fn(&Registrar) -> Result<(), SdkError>;

/// The body of `OrthancPluginInitialize`: logging into Orthanc's log, the plugin's
/// description, then `setup`. Returns 0, or -1 (with the reason in Orthanc's log) to make
/// Orthanc refuse to start.
///
/// # Safety
///
/// `context` is the context Orthanc passed to `OrthancPluginInitialize`.
pub unsafe fn initialize(context: *mut sys::OrthancPluginContext, setup: Setup) -> i32 {
    // SAFETY: forwarded from the caller's contract.
    unsafe {
        sdk::initialize(context, |plugin| {
            // Another subscriber may already be installed when the library is used in a
            // test binary; the plugin then keeps that one.
            let levels = Targets::new().with_default(LevelFilter::INFO).with_target("sqlx", LevelFilter::WARN);
            let _ = tracing_subscriber::registry().with(OrthancLogLayer.with_filter(levels)).try_init();
            plugin.set_description("Cohort: research cohorts and access control on top of Orthanc")?;
            setup(plugin)?;
            tracing::info!(
                version = env!("CARGO_PKG_VERSION"),
                orthanc = sdk::orthanc_version().unwrap_or_default(),
                "cohort plugin initialised"
            );
            Ok(())
        })
    }
}

/// The body of `OrthancPluginFinalize`: stops Cohort and retires the context. A panic is
/// logged and stops there: it never crosses into Orthanc.
pub fn finalize() {
    sdk::guard(
        "OrthancPluginFinalize",
        || (),
        || {
            crate::host::shutdown();
            sdk::finalize();
        },
    );
}

/// Defines the four exported entry points of an Orthanc plugin library around `setup`
/// (an [`entry::Setup`](crate::entry::Setup)).
#[macro_export]
macro_rules! export_plugin {
    ($setup:path) => {
        /// Called once by Orthanc when it loads the plugin.
        ///
        /// # Safety
        ///
        /// Only Orthanc calls this, with its plugin context.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn OrthancPluginInitialize(context: *mut $crate::sys::OrthancPluginContext) -> i32 {
            // SAFETY: Orthanc calls this entry point once, with its live context.
            unsafe { $crate::entry::initialize(context, $setup) }
        }

        /// Called once by Orthanc before it unloads the plugin.
        #[unsafe(no_mangle)]
        pub extern "C" fn OrthancPluginFinalize() {
            $crate::entry::finalize()
        }

        #[unsafe(no_mangle)]
        pub extern "C" fn OrthancPluginGetName() -> *const ::std::ffi::c_char {
            $crate::entry::PLUGIN_NAME.as_ptr()
        }

        #[unsafe(no_mangle)]
        pub extern "C" fn OrthancPluginGetVersion() -> *const ::std::ffi::c_char {
            $crate::entry::PLUGIN_VERSION.as_ptr()
        }
    };
}
