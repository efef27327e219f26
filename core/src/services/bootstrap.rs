//! Start-up chores shared by both hosts and the command line.

use serde_json::json;

use super::{action, Actor, Outcome};
use crate::app::App;
use crate::domain::{Role, UserStatus};
use crate::error::ApiError;
use crate::store::{Store, StoreResult};

const JWT_SECRET_KEY: &str = "jwt_secret";

/// The JWT secret every node on this database shares: generated (256 random bits) by the
/// first node that needs it.
pub async fn shared_jwt_secret(store: &Store) -> StoreResult<String> {
    let mut db = store.conn().await?;
    db.setting_or_insert(JWT_SECRET_KEY, &crate::auth::random_token(32)).await
}

/// Creates (or restores) the configured bootstrap admin when no active admin exists.
pub async fn bootstrap_admin(app: &App) -> Result<(), ApiError> {
    let (Some(email), Some(password)) = (&app.config.bootstrap_admin_email, &app.config.bootstrap_admin_password) else {
        return Ok(());
    };
    {
        let mut db = app.store.conn().await?;
        if db.count_active_admins().await? > 0 {
            return Ok(());
        }
    }
    let hash = app.passwords.hash(password).await?;
    let mut tx = app.store.begin().await?;
    if tx.count_active_admins().await? > 0 {
        return Ok(());
    }
    let actor = Actor::system();
    match tx.user_by_email(email).await? {
        Some(mut row) => {
            row.role = Role::Admin;
            row.status = UserStatus::Active;
            row.hashed_password = hash;
            row.password_changed_at = crate::store::now();
            tx.save_user(&mut row).await?;
            tx.insert_audit(&actor.audit(action::UPDATE, Outcome::Success).on("user", row.id).details(json!({
                "bootstrap_admin": true, "email": row.email
            })))
            .await?;
            tracing::info!(email = %row.email, "bootstrap admin restored: no active admin existed");
        }
        None => {
            let new = crate::store::users::NewUser {
                email: email.clone(),
                hashed_password: hash,
                role: Role::Admin,
                status: UserStatus::Active,
                group_id: None,
                first_name: None,
                last_name: None,
            };
            let row = tx.insert_user(&new).await?;
            tx.insert_audit(&actor.audit(action::CREATE, Outcome::Success).on("user", row.id).details(json!({
                "bootstrap_admin": true, "email": row.email, "role": "admin"
            })))
            .await?;
            tracing::info!(email = %row.email, "bootstrap admin created");
        }
    }
    tx.commit().await?;
    Ok(())
}
