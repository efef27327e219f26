//! Generates the Orthanc plugin SDK bindings at build time from the installed header.
//!
//! Every SDK function in `OrthancCPlugin.h` is `static inline`, so bindgen alone yields
//! types but nothing callable. `wrap_static_fns` writes one exported C wrapper per
//! inline function; `cc` compiles them into this crate, where they stay private to the
//! shared object. The header is never copied into the repository: it comes from the
//! `orthanc-dev` package (or `ORTHANC_SDK_INCLUDE`), so the bindings always match the SDK
//! the plugin is built against.

use std::env;
use std::path::{Path, PathBuf};
use std::process::exit;

/// Where Debian's `orthanc-dev` package installs the SDK header.
const DEFAULT_SDK_INCLUDE: &str = "/usr/include/orthanc";
const HEADER: &str = "OrthancCPlugin.h";
const INSTALL_HINT: &str = "install the Orthanc plugin SDK and libclang: \
     `apt-get install orthanc-dev libclang-dev` (or point ORTHANC_SDK_INCLUDE at the \
     directory holding OrthancCPlugin.h, and LIBCLANG_PATH at libclang)";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=ORTHANC_SDK_INCLUDE");
    println!("cargo:rerun-if-env-changed=LIBCLANG_PATH");

    let include_dir = env::var_os("ORTHANC_SDK_INCLUDE").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(DEFAULT_SDK_INCLUDE));
    let header = include_dir.join(HEADER);
    if !header.is_file() {
        fail(&format!("the Orthanc plugin SDK header {} is missing", header.display()));
    }
    let out_dir = match env::var_os("OUT_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => fail("cargo did not set OUT_DIR"),
    };

    let bindings = generate_bindings(&header, &out_dir);
    if let Err(err) = bindings.write_to_file(out_dir.join("bindings.rs")) {
        fail(&format!("cannot write the generated bindings: {err}"));
    }

    // bindgen names the wrapper source after `wrap_static_fns_path`, adding `.c`.
    cc::Build::new().file(out_dir.join("orthanc_static_fns.c")).include(&include_dir).compile("orthanc_static_fns");
}

fn generate_bindings(header: &Path, out_dir: &Path) -> bindgen::Bindings {
    let builder = bindgen::Builder::default()
        .header(header.to_string_lossy())
        .allowlist_function("OrthancPlugin.*")
        .allowlist_type("_?OrthancPlugin.*")
        .allowlist_var("ORTHANC_PLUGINS_MINIMAL_.*")
        // The one non-inline declaration is the entry point this crate itself exports.
        .blocklist_function("OrthancPluginGetName")
        // C enums stay integer constants (bindgen's default style): Orthanc may hand us
        // values a Rust `enum` could not hold, which would be undefined behaviour. Keep
        // the C names (`OrthancPluginHttpMethod_Get`) instead of doubling the prefix.
        .prepend_enum_name(false)
        .wrap_static_fns(true)
        .wrap_static_fns_path(out_dir.join("orthanc_static_fns"))
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()));

    // A missing libclang makes bindgen panic rather than return an error; turn that
    // panic into the same one-line advice as a missing header.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    // The builder is consumed by the call, so nothing half-updated is observed after a
    // panic: asserting unwind safety is sound.
    let generated = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || builder.generate()));
    std::panic::set_hook(default_hook);
    match generated {
        Ok(Ok(bindings)) => bindings,
        Ok(Err(err)) => fail(&format!("bindgen could not parse {}: {err}", header.display())),
        Err(panic) => {
            let reason = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("unknown reason");
            fail(&format!("bindgen failed (is libclang installed?): {reason}"))
        }
    }
}

fn fail(problem: &str) -> ! {
    eprintln!("error: cannot build the Orthanc plugin bindings: {problem}.\nFix: {INSTALL_HINT}.");
    exit(1)
}
