//! `/api/health`: is the service and each dependency up? No authentication.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::SharedApp;

pub fn router() -> OpenApiRouter<SharedApp> {
    OpenApiRouter::new().routes(routes!(health))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok` or `degraded`.
    pub status: &'static str,
    /// `ok` or `unavailable`.
    pub database: &'static str,
    /// `ok` or `unavailable`.
    pub orthanc: &'static str,
}

/// A dependency that does not answer within this delay counts as down.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

fn verdict<E: std::fmt::Display>(what: &str, r: Result<Result<(), E>, tokio::time::error::Elapsed>) -> &'static str {
    match r {
        Ok(Ok(())) => "ok",
        Ok(Err(e)) => {
            tracing::warn!(dependency = what, error = %e, "health probe failed");
            "unavailable"
        }
        Err(_) => {
            tracing::warn!(dependency = what, "health probe timed out");
            "unavailable"
        }
    }
}

/// Service health: 200 when every dependency answers, 503 with the same document otherwise.
#[utoipa::path(get, path = "/health", tag = "health", responses(
    (status = 200, body = Health),
    (status = 503, description = "A dependency is down", body = Health),
))]
async fn health(State(app): State<SharedApp>) -> (StatusCode, Json<Health>) {
    let db = tokio::time::timeout(PROBE_TIMEOUT, app.store.ping());
    let orthanc = async {
        match &app.pacs {
            Some(pacs) => tokio::time::timeout(PROBE_TIMEOUT, pacs.ping()).await.map(|r| r.map_err(|e| e.to_string())),
            None => Ok(Err("no DICOM store configured".to_string())),
        }
    };
    let (db, orthanc) = tokio::join!(db, orthanc);
    let h = Health { status: "ok", database: verdict("database", db), orthanc: verdict("orthanc", orthanc) };
    if h.database == "ok" && h.orthanc == "ok" {
        (StatusCode::OK, Json(h))
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(Health { status: "degraded", ..h }))
    }
}
