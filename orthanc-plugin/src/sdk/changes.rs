//! Change notifications (`RegisterOnChangeCallback`).

use std::ffi::c_char;
use std::sync::OnceLock;

use super::{guard, invoke, log_error, owned_string, Registrar, SdkError};
use crate::sys;

type ChangeHandler = Box<dyn Fn(ChangeEvent) + Send + Sync>;

static ON_CHANGE: OnceLock<ChangeHandler> = OnceLock::new();

/// One change Orthanc reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeEvent {
    pub change: ChangeType,
    /// `None` for events about no resource (start, stop, jobs, peers, modalities).
    pub resource_type: Option<ResourceType>,
    /// The Orthanc ID of the resource (of the job for `Job*` events); `None` when Orthanc
    /// passes NULL, as it does for `OrthancStarted` and `OrthancStopped`.
    pub resource_id: Option<String>,
}

/// `OrthancPluginChangeType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeType {
    CompletedSeries,
    Deleted,
    NewChildInstance,
    NewInstance,
    NewPatient,
    NewSeries,
    NewStudy,
    StablePatient,
    StableSeries,
    StableStudy,
    OrthancStarted,
    OrthancStopped,
    UpdatedAttachment,
    UpdatedMetadata,
    UpdatedPeers,
    UpdatedModalities,
    JobSubmitted,
    JobSuccess,
    JobFailure,
    /// A change type newer than the SDK this plugin was built against.
    Other(u32),
}

/// `OrthancPluginResourceType`, without `None` (see [`ChangeEvent::resource_type`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResourceType {
    Patient,
    Study,
    Series,
    Instance,
    /// A resource type newer than the SDK this plugin was built against.
    Other(u32),
}

impl ChangeType {
    fn from_raw(raw: sys::OrthancPluginChangeType) -> ChangeType {
        match raw {
            sys::OrthancPluginChangeType_CompletedSeries => ChangeType::CompletedSeries,
            sys::OrthancPluginChangeType_Deleted => ChangeType::Deleted,
            sys::OrthancPluginChangeType_NewChildInstance => ChangeType::NewChildInstance,
            sys::OrthancPluginChangeType_NewInstance => ChangeType::NewInstance,
            sys::OrthancPluginChangeType_NewPatient => ChangeType::NewPatient,
            sys::OrthancPluginChangeType_NewSeries => ChangeType::NewSeries,
            sys::OrthancPluginChangeType_NewStudy => ChangeType::NewStudy,
            sys::OrthancPluginChangeType_StablePatient => ChangeType::StablePatient,
            sys::OrthancPluginChangeType_StableSeries => ChangeType::StableSeries,
            sys::OrthancPluginChangeType_StableStudy => ChangeType::StableStudy,
            sys::OrthancPluginChangeType_OrthancStarted => ChangeType::OrthancStarted,
            sys::OrthancPluginChangeType_OrthancStopped => ChangeType::OrthancStopped,
            sys::OrthancPluginChangeType_UpdatedAttachment => ChangeType::UpdatedAttachment,
            sys::OrthancPluginChangeType_UpdatedMetadata => ChangeType::UpdatedMetadata,
            sys::OrthancPluginChangeType_UpdatedPeers => ChangeType::UpdatedPeers,
            sys::OrthancPluginChangeType_UpdatedModalities => ChangeType::UpdatedModalities,
            sys::OrthancPluginChangeType_JobSubmitted => ChangeType::JobSubmitted,
            sys::OrthancPluginChangeType_JobSuccess => ChangeType::JobSuccess,
            sys::OrthancPluginChangeType_JobFailure => ChangeType::JobFailure,
            other => ChangeType::Other(other),
        }
    }
}

impl ResourceType {
    fn from_raw(raw: sys::OrthancPluginResourceType) -> Option<ResourceType> {
        match raw {
            sys::OrthancPluginResourceType_Patient => Some(ResourceType::Patient),
            sys::OrthancPluginResourceType_Study => Some(ResourceType::Study),
            sys::OrthancPluginResourceType_Series => Some(ResourceType::Series),
            sys::OrthancPluginResourceType_Instance => Some(ResourceType::Instance),
            sys::OrthancPluginResourceType_None => None,
            other => Some(ResourceType::Other(other)),
        }
    }
}

impl Registrar {
    /// Calls `handler` for every change Orthanc reports.
    ///
    /// Keep `handler` cheap: push the event to a channel and return. Resource changes
    /// arrive one at a time on Orthanc's single change thread, so a slow or blocking
    /// handler (a database query, a REST call) delays every later notification;
    /// `OrthancStarted`/`OrthancStopped` arrive on the main thread and hold up start-up
    /// and shutdown. A panic is logged and reported to Orthanc as an error.
    pub fn register_on_change(&self, handler: impl Fn(ChangeEvent) + Send + Sync + 'static) -> Result<(), SdkError> {
        ON_CHANGE.set(Box::new(handler)).map_err(|_| SdkError::AlreadyRegistered("change callback"))?;
        let params = sys::_OrthancPluginOnChangeCallback { callback: Some(change_trampoline) };
        // SAFETY: the struct `OrthancPluginRegisterOnChangeCallback` builds; the callback
        // lives forever.
        unsafe { invoke("RegisterOnChangeCallback", sys::_OrthancPluginService_RegisterOnChangeCallback, &params) }
    }
}

/// The callback Orthanc calls for each change.
///
/// # Safety
///
/// Called by Orthanc only; `resource_id` is NULL or a C string valid for the call.
unsafe extern "C" fn change_trampoline(
    change: sys::OrthancPluginChangeType,
    resource_type: sys::OrthancPluginResourceType,
    resource_id: *const c_char,
) -> sys::OrthancPluginErrorCode {
    guard(
        "change callback",
        || sys::OrthancPluginErrorCode_Plugin,
        || {
            let resource_id = if resource_id.is_null() {
                None
            } else {
                // SAFETY: non-NULL, and a C string valid for the call.
                match unsafe { owned_string(resource_id, "resource id") } {
                    Ok(id) => Some(id),
                    Err(err) => {
                        log_error(&format!("change callback: {err}"));
                        return sys::OrthancPluginErrorCode_Plugin;
                    }
                }
            };
            if let Some(handler) = ON_CHANGE.get() {
                handler(ChangeEvent {
                    change: ChangeType::from_raw(change),
                    resource_type: ResourceType::from_raw(resource_type),
                    resource_id,
                });
            }
            sys::OrthancPluginErrorCode_Success
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_events_carry_no_resource_type_and_unknown_codes_are_kept() {
        assert_eq!(ChangeType::from_raw(sys::OrthancPluginChangeType_OrthancStarted), ChangeType::OrthancStarted);
        assert_eq!(ResourceType::from_raw(sys::OrthancPluginResourceType_None), None);
        assert_eq!(ChangeType::from_raw(1000), ChangeType::Other(1000));
    }
}
