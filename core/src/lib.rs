//! Cohort's core: domain, services, storage, authentication and the whole `/api`
//! router, shared by the Orthanc plugin and the sidecar. No FFI and no `unsafe` here.

#![forbid(unsafe_code)]

pub mod api;
pub mod app;
pub mod auth;
pub mod budget;
pub mod config;
pub mod console;
pub mod deidentify;
pub mod dicom_keys;
pub mod domain;
pub mod error;
pub mod metrics;
pub mod model;
pub mod net;
pub mod pacs;
pub mod services;
pub mod spool;
pub mod store;
pub mod zipstream;

pub use app::{App, ClientAddr, Host, SharedApp, StartError};
pub use config::{Config, ConfigError};
