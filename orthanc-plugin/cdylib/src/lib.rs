//! The production plugin, `libcohort_orthanc.so`: Cohort and nothing else. The test
//! library (`cohort-orthanc-testlib`) is a separate crate, so no test hook can ship here.

fn setup(plugin: &cohort_orthanc_bridge::sdk::Registrar) -> Result<(), cohort_orthanc_bridge::sdk::SdkError> {
    cohort_orthanc_bridge::host::setup(plugin, |router| router)
}

cohort_orthanc_bridge::export_plugin!(setup);
