//! Cohort as an Orthanc plugin: everything but the exported entry points, which the
//! library crates generate with [`export_plugin!`]: `cohort-orthanc`
//! (`libcohort_orthanc.so`, the production plugin, with nothing but Cohort) and
//! `cohort-orthanc-testlib` (the same plus the routes the tests need: a panicking route,
//! and the FFI layer's demo routes). Test code thus never ships in the production library.
//!
//! All the `unsafe` code of the workspace lives under `orthanc-plugin/`, in three layers:
//! [`sys`] (bindings generated from the installed SDK header), [`sdk`] (the safe wrapper,
//! which owns every invariant) and the entry points ([`entry`], [`export_plugin!`]).

pub mod entry;
pub mod guard;
pub mod host;
pub mod sdk;
pub mod sys;
mod transport;
