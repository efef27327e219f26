//! Memory that Orthanc allocated and the plugin must give back.

use std::ffi::c_char;
use std::fmt;
use std::ops::Deref;

use super::{context, SdkError};
use crate::sys;

/// Bytes Orthanc returned in an `OrthancPluginMemoryBuffer` (a DICOM file, a REST
/// answer), freed with `OrthancPluginFreeMemoryBuffer` on drop.
///
/// It derefs to `[u8]`, and converts to [`bytes::Bytes`] without copying, so a large DICOM
/// file can be answered without a second copy in memory.
pub struct OrthancBuffer {
    raw: sys::OrthancPluginMemoryBuffer,
}

// SAFETY: the buffer is plain `malloc`ed memory owned by this value alone; Orthanc frees
// it with `free`, which any thread may call.
unsafe impl Send for OrthancBuffer {}
// SAFETY: shared access only reads the bytes.
unsafe impl Sync for OrthancBuffer {}

impl OrthancBuffer {
    /// An empty buffer for Orthanc to fill (an out parameter of the SDK).
    pub(super) fn empty() -> OrthancBuffer {
        OrthancBuffer { raw: sys::OrthancPluginMemoryBuffer { data: std::ptr::null_mut(), size: 0 } }
    }

    /// The out pointer to pass to an SDK function that fills this buffer.
    pub(super) fn as_out_ptr(&mut self) -> *mut sys::OrthancPluginMemoryBuffer {
        &mut self.raw
    }
}

impl Deref for OrthancBuffer {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        if self.raw.data.is_null() {
            return &[];
        }
        // SAFETY: Orthanc filled `data` with `size` initialised bytes that stay valid
        // until this value frees them in `drop`.
        unsafe { std::slice::from_raw_parts(self.raw.data.cast::<u8>().cast_const(), self.raw.size as usize) }
    }
}

impl AsRef<[u8]> for OrthancBuffer {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl From<OrthancBuffer> for bytes::Bytes {
    fn from(buffer: OrthancBuffer) -> bytes::Bytes {
        bytes::Bytes::from_owner(buffer)
    }
}

impl fmt::Debug for OrthancBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OrthancBuffer").field("len", &self.len()).finish()
    }
}

impl Drop for OrthancBuffer {
    fn drop(&mut self) {
        if self.raw.data.is_null() {
            return;
        }
        // After Finalize the SDK must not be used; leaking is the only safe choice then.
        if let Ok(ctx) = context() {
            // SAFETY: `raw` was filled by an SDK call and is freed exactly once. The SDK
            // function takes the buffer itself (not `data`) and frees `data`.
            unsafe { sys::OrthancPluginFreeMemoryBuffer(ctx, &mut self.raw) };
        }
    }
}

/// A `char*` Orthanc allocated, freed with `OrthancPluginFreeString` on drop.
pub(super) struct OrthancString(*mut c_char);

impl OrthancString {
    /// Takes ownership of a string an SDK function returned (NULL is allowed).
    pub(super) fn new(ptr: *mut c_char) -> OrthancString {
        OrthancString(ptr)
    }

    /// The string's bytes (its NUL left out); a NULL one is [`SdkError::NullPointer`].
    pub(super) fn to_bytes(&self, what: &'static str) -> Result<&[u8], SdkError> {
        if self.0.is_null() {
            return Err(SdkError::NullPointer(what));
        }
        // SAFETY: a non-NULL, NUL-terminated string the SDK returned, alive as long as `self`.
        Ok(unsafe { std::ffi::CStr::from_ptr(self.0) }.to_bytes())
    }
}

impl Drop for OrthancString {
    fn drop(&mut self) {
        if self.0.is_null() {
            return;
        }
        if let Ok(ctx) = context() {
            // SAFETY: the string was returned by an SDK function and is freed once.
            unsafe { sys::OrthancPluginFreeString(ctx, self.0) };
        }
    }
}
