//! In-process access to Orthanc: version, configuration, DICOM files and the REST API.
//! Usable from any thread once `OrthancPluginInitialize` has returned (REST and DICOM
//! calls fail during it: the database is not attached yet).

use std::ffi::{c_char, CString};

use http::Method;

use super::buffer::{OrthancBuffer, OrthancString};
use super::{check, context, method_to_raw, owned_string, to_cstring, SdkError};
use crate::sys;

/// The version of the running Orthanc, e.g. `"1.10.1"`.
pub fn orthanc_version() -> Result<String, SdkError> {
    let ctx = context()?;
    // SAFETY: `ctx` is the live context; `orthancVersion` is a C string Orthanc owns.
    unsafe { owned_string((*ctx).orthancVersion, "Orthanc version") }
}

/// Orthanc's whole configuration: every configuration file merged, comments removed.
/// A plugin reads its own section (e.g. `"Cohort"`) from it.
pub fn get_configuration() -> Result<serde_json::Value, SdkError> {
    let ctx = context()?;
    // SAFETY: `ctx` is the live context; the returned string is freed by `OrthancString`.
    let text = OrthancString::new(unsafe { sys::OrthancPluginGetConfiguration(ctx) });
    serde_json::from_slice(text.to_bytes("configuration")?).map_err(SdkError::InvalidConfiguration)
}

/// The path Orthanc was given to its configuration (a file or a directory), against which
/// it reads relative paths of its configuration (`StorageDirectory`...).
pub fn configuration_path() -> Result<std::path::PathBuf, SdkError> {
    let ctx = context()?;
    // SAFETY: `ctx` is the live context; the returned string is freed by `OrthancString`.
    let text = OrthancString::new(unsafe { sys::OrthancPluginGetConfigurationPath(ctx) });
    let bytes = text.to_bytes("configuration path")?;
    Ok(std::path::PathBuf::from(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(bytes)))
}

/// The DICOM file of an instance, by Orthanc ID. A missing instance is
/// [`SdkError::NotFound`].
pub fn get_dicom_for_instance(instance_id: &str) -> Result<OrthancBuffer, SdkError> {
    let ctx = context()?;
    let instance_id = to_cstring(instance_id, "instance id")?;
    let mut buffer = OrthancBuffer::empty();
    // SAFETY: `ctx` is the live context; Orthanc fills `buffer`, which frees it on drop.
    let code = unsafe { sys::OrthancPluginGetDicomForInstance(ctx, buffer.as_out_ptr(), instance_id.as_ptr()) };
    check("GetDicomForInstance", code)?;
    Ok(buffer)
}

/// The answer of an in-process REST call.
#[derive(Debug)]
pub struct RestApiAnswer {
    /// The HTTP status Orthanc's handler produced.
    pub status: u16,
    /// The answer body (always empty for DELETE).
    pub body: OrthancBuffer,
}

/// Calls Orthanc's built-in REST API in-process with `OrthancPluginCallRestApi`
/// (Orthanc 1.9.2+), with full rights and without going through HTTP, the
/// authentication or the HTTP filter.
///
/// Only the built-in API is reached: plugin routes, including this plugin's own, are
/// bypassed, so a call can never loop back into the plugin. A missing resource is
/// reported as [`SdkError::NotFound`] (Orthanc error 17), not as a 404 status; other
/// failures of Orthanc's handler are [`SdkError::Orthanc`] errors.
pub fn call_rest_api(method: Method, uri: &str, body: &[u8], headers: &[(&str, &str)]) -> Result<RestApiAnswer, SdkError> {
    let ctx = context()?;
    let raw_method = method_to_raw(&method)?;
    let uri = to_cstring(uri, "REST API URI")?;
    let body_size = u32::try_from(body.len()).map_err(|_| SdkError::TooLarge { what: "REST API request body", len: body.len() })?;
    let header_count = u32::try_from(headers.len()).map_err(|_| SdkError::TooLarge { what: "REST API headers", len: headers.len() })?;
    let keys = headers.iter().map(|(key, _)| to_cstring(key, "header name")).collect::<Result<Vec<CString>, _>>()?;
    let values = headers.iter().map(|(_, value)| to_cstring(value, "header value")).collect::<Result<Vec<CString>, _>>()?;
    let key_ptrs: Vec<*const c_char> = keys.iter().map(|key| key.as_ptr()).collect();
    let value_ptrs: Vec<*const c_char> = values.iter().map(|value| value.as_ptr()).collect();
    let mut answer = OrthancBuffer::empty();
    let mut status: u16 = 0;
    // SAFETY: `ctx` is the live context; every pointer outlives the call; Orthanc fills
    // `answer` (freed on drop) and `status`; NULL answer headers are allowed.
    let code = unsafe {
        sys::OrthancPluginCallRestApi(
            ctx,
            answer.as_out_ptr(),
            std::ptr::null_mut(),
            &mut status,
            raw_method,
            uri.as_ptr(),
            header_count,
            key_ptrs.as_ptr(),
            value_ptrs.as_ptr(),
            body.as_ptr().cast(),
            body_size,
            0, // built-in API only
        )
    };
    check("CallRestApi", code)?;
    Ok(RestApiAnswer { status, body: answer })
}
