//! `POST /api/patients/import/reconcile` (admins): completes, now, the imports a crash cut
//! short (what `cohort reconcile` does; the plugin deployment has no command line).

use axum::extract::State;
use axum::Json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::Admin;
use crate::app::SharedApp;
use crate::error::{ApiError, ErrorBody};
use crate::services::reconcile::{self as service, ReconcileOutcome};

pub fn router() -> OpenApiRouter<SharedApp> {
    OpenApiRouter::new().routes(routes!(reconcile_imports))
}

/// Complete the imports whose process died: what Orthanc holds of their studies is
/// registered under the importer's group and audited as `RECONCILE` by the system.
/// Imports with a sign of life in the last 10 seconds are left alone and counted in
/// `running`. Cohort does this by itself at start-up and every minute.
#[utoipa::path(post, path = "/import/reconcile", tag = "patients", responses(
    (status = 200, body = ReconcileOutcome),
    (status = 403, description = "Not an admin", body = ErrorBody),
    (status = 503, description = "Orthanc or the database unavailable", body = ErrorBody),
))]
async fn reconcile_imports(State(app): State<SharedApp>, _: Admin) -> Result<Json<ReconcileOutcome>, ApiError> {
    Ok(Json(service::reconcile(&app).await?))
}
