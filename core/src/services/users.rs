//! User management (admins) and profile updates (every user).

use serde_json::json;

use super::{action, Actor, Outcome, Principal};
use crate::app::App;
use crate::auth::passwords::Passwords;
use crate::domain::{self, fold_for_search, like_contains, Id, Role, UserStatus};
use crate::error::{ApiError, ApiResult};
use crate::model::User;
use crate::store::users::{NewUser, UserRow};
use crate::store::{self, Db, Page, PageRequest};

/// The fields of a new account.
#[derive(Clone, Debug)]
pub struct NewUserInput {
    pub email: String,
    pub password: String,
    pub role: Role,
    pub group_id: Option<Id>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
}

/// An admin's changes to an account; `None` leaves a field as it is, and `group_id:
/// Some(None)` removes the user from their group.
#[derive(Clone, Debug, Default)]
pub struct UserChanges {
    pub role: Option<Role>,
    pub status: Option<UserStatus>,
    pub group_id: Option<Option<Id>>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
}

/// A user's changes to their own profile.
#[derive(Clone, Debug, Default)]
pub struct ProfileChanges {
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub email: Option<String>,
    pub new_password: Option<String>,
    pub current_password: Option<String>,
}

fn invalid(field: &str) -> impl Fn(domain::Invalid) -> ApiError + '_ {
    move |e| ApiError::validation(field, e)
}

fn email_taken() -> ApiError {
    ApiError::conflict("email_taken", "a user with this email already exists")
}

pub async fn list(app: &App, q: Option<&str>, page: PageRequest) -> ApiResult<Page<User>> {
    let like = q.map(str::trim).filter(|q| !q.is_empty()).map(|q| like_contains(&fold_for_search(q)));
    let mut db = app.store.conn().await?;
    let rows = db.list_users(like.as_deref(), page).await?;
    Ok(Page { items: rows.items.iter().map(User::from).collect(), total: rows.total })
}

pub async fn get(app: &App, id: Id) -> ApiResult<User> {
    let mut db = app.store.conn().await?;
    let row = db.user_by_id(id).await?.ok_or_else(|| ApiError::not_found("user"))?;
    Ok(User::from(&row))
}

/// Creates an account. Used by admins through the API and by `cohort user add` (the
/// system actor).
pub async fn create(app: &App, actor: &Actor, input: NewUserInput) -> ApiResult<User> {
    let email = domain::normalize_email(&input.email).map_err(invalid("email"))?;
    domain::check_password_rules(&input.password).map_err(invalid("password"))?;
    let first_name = input.first_name.as_deref().map(domain::clean_name).transpose().map_err(invalid("first_name"))?.flatten();
    let last_name = input.last_name.as_deref().map(domain::clean_name).transpose().map_err(invalid("last_name"))?.flatten();
    let hashed_password = app.passwords.hash(&input.password).await?;

    let mut tx = app.store.begin().await?;
    super::groups::check_exists(&mut tx, input.group_id).await?;
    if tx.user_by_email(&email).await?.is_some() {
        return Err(email_taken());
    }
    let new =
        NewUser { email, hashed_password, role: input.role, status: UserStatus::Active, group_id: input.group_id, first_name, last_name };
    let row = tx.insert_user(&new).await.map_err(|e| if e.is_unique_violation() { email_taken() } else { e.into() })?;
    tx.insert_audit(&actor.audit(action::CREATE, Outcome::Success).on("user", row.id).details(json!({
        "email": row.email, "role": row.role, "group_id": row.group_id
    })))
    .await?;
    tx.commit().await?;
    Ok(User::from(&row))
}

/// Refuses to leave the deployment without an active admin.
async fn ensure_not_last_admin(db: &mut Db, target: &UserRow) -> ApiResult<()> {
    if target.role == Role::Admin && target.status == UserStatus::Active {
        db.lock_active_admins().await?;
        if db.count_active_admins().await? <= 1 {
            return Err(ApiError::conflict("last_admin", "this is the last active admin; promote another admin first"));
        }
    }
    Ok(())
}

pub async fn update(app: &App, who: &Principal, id: Id, changes: UserChanges) -> ApiResult<User> {
    let first_name = changes.first_name.as_deref().map(domain::clean_name).transpose().map_err(invalid("first_name"))?;
    let last_name = changes.last_name.as_deref().map(domain::clean_name).transpose().map_err(invalid("last_name"))?;

    let mut tx = app.store.begin().await?;
    let demoted = changes.role.is_some_and(|r| r != Role::Admin) || changes.status == Some(UserStatus::Inactive);
    if demoted {
        // The admin-set lock comes before the row lock, in every path (see
        // `lock_active_admins`), so two demotions cannot deadlock.
        tx.lock_active_admins().await?;
    }
    let mut row = tx.user_by_id_for_update(id).await?.ok_or_else(|| ApiError::not_found("user"))?;
    if demoted {
        ensure_not_last_admin(&mut tx, &row).await?;
    }
    if let Some(group_id) = changes.group_id {
        super::groups::check_exists(&mut tx, group_id).await?;
    }
    let before = User::from(&row);
    if let Some(role) = changes.role {
        row.role = role;
    }
    if let Some(status) = changes.status {
        row.status = status;
    }
    if let Some(group_id) = changes.group_id {
        row.group_id = group_id;
    }
    if let Some(first_name) = first_name {
        row.first_name = first_name;
    }
    if let Some(last_name) = last_name {
        row.last_name = last_name;
    }
    tx.save_user(&mut row).await?;
    let after = User::from(&row);
    let (revoked, tokens_revoked) = if before.status == UserStatus::Active && after.status == UserStatus::Inactive {
        (tx.revoke_user_sessions(id, None, "user_deactivated").await?, tx.revoke_user_tokens(id).await?)
    } else {
        (Vec::new(), 0)
    };
    tx.insert_audit(&who.actor().audit(action::UPDATE, Outcome::Success).on("user", id).details(json!({
        "changes": changed_fields(&before, &after), "sessions_revoked": revoked.len(), "tokens_revoked": tokens_revoked
    })))
    .await?;
    tx.commit().await?;
    app.sessions.forget_where(|s| s.user.id == id);
    app.tokens.forget_where(|t| t.user.id == id);
    Ok(after)
}

/// `{"field": [old, new]}` for each field that changed.
fn changed_fields(before: &User, after: &User) -> serde_json::Value {
    let (b, a) = (json!(before), json!(after));
    let mut out = serde_json::Map::new();
    if let (Some(b), Some(a)) = (b.as_object(), a.as_object()) {
        for (k, new) in a {
            if b.get(k) != Some(new) {
                out.insert(k.clone(), json!([b.get(k), new]));
            }
        }
    }
    serde_json::Value::Object(out)
}

pub async fn delete(app: &App, who: &Principal, id: Id) -> ApiResult<()> {
    let mut tx = app.store.begin().await?;
    let row = tx.user_by_id(id).await?.ok_or_else(|| ApiError::not_found("user"))?;
    ensure_not_last_admin(&mut tx, &row).await?;
    // The audit row goes in first: if the admin deletes their own account, the foreign
    // key then clears its user_id and keeps the email.
    tx.insert_audit(&who.actor().audit(action::DELETE, Outcome::Success).on("user", id).details(json!({
        "email": row.email, "role": row.role
    })))
    .await?;
    tx.delete_user(id).await?;
    tx.commit().await?;
    app.sessions.forget_where(|s| s.user.id == id);
    app.tokens.forget_where(|t| t.user.id == id);
    Ok(())
}

/// A user updates their own names, email or password. Changing the email or the
/// password needs the current password; a new password ends the user's other sessions.
pub async fn update_profile(app: &App, who: &Principal, changes: ProfileChanges) -> ApiResult<User> {
    let first_name = changes.first_name.as_deref().map(domain::clean_name).transpose().map_err(invalid("first_name"))?;
    let last_name = changes.last_name.as_deref().map(domain::clean_name).transpose().map_err(invalid("last_name"))?;
    let email = changes.email.as_deref().map(domain::normalize_email).transpose().map_err(invalid("email"))?;
    if let Some(p) = &changes.new_password {
        domain::check_password_rules(p).map_err(invalid("new_password"))?;
    }

    let gone = || ApiError::unauthorized("session_revoked", "the account no longer exists");
    // A first read, outside any transaction, for the (slow) password check and hash.
    let seen = {
        let mut db = app.store.conn().await?;
        db.user_by_id(who.id()).await?.ok_or_else(gone)?
    };
    let email = email.filter(|e| *e != seen.email);
    let sensitive = email.is_some() || changes.new_password.is_some();
    match &changes.current_password {
        Some(current) => check_current_password(app, who, &seen, current).await?,
        None if sensitive => {
            return Err(ApiError::validation("current_password", "required to change the email or the password"));
        }
        None => {}
    }
    let new_hash = match &changes.new_password {
        Some(p) => Some(app.passwords.hash(p).await?),
        None => None,
    };

    // Then the row as it is now, locked: an admin may have deactivated, demoted or
    // moved the user meanwhile, and only the profile's own columns are written back.
    let mut tx = app.store.begin().await?;
    let mut row = tx.user_by_id_for_update(who.id()).await?.ok_or_else(gone)?;
    if row.status != UserStatus::Active {
        return Err(ApiError::unauthorized("account_inactive", "this account is inactive"));
    }
    if row.password_changed_at != seen.password_changed_at {
        return Err(ApiError::conflict("password_changed", "the password changed meanwhile; try again"));
    }
    if let Some(email) = &email {
        if tx.user_by_email(email).await?.is_some_and(|other| other.id != row.id) {
            return Err(email_taken());
        }
    }
    let before = User::from(&row);
    if let Some(first_name) = first_name {
        row.first_name = first_name;
    }
    if let Some(last_name) = last_name {
        row.last_name = last_name;
    }
    if let Some(email) = email {
        row.email = email;
    }
    if let Some(hash) = &new_hash {
        row.hashed_password = hash.clone();
        row.password_changed_at = store::now();
    }
    tx.save_profile(&mut row).await.map_err(|e| if e.is_unique_violation() { email_taken() } else { e.into() })?;
    let after = User::from(&row);
    let actor = who.actor();
    if new_hash.is_some() {
        let revoked = tx.revoke_user_sessions(who.id(), Some(&who.session_id), "password_changed").await?;
        tx.insert_audit(
            &actor
                .audit(action::PASSWORD_CHANGE, Outcome::Success)
                .on("user", who.id())
                .details(json!({"sessions_revoked": revoked.len()})),
        )
        .await?;
    }
    let changed = changed_fields(&before, &after);
    if changed.as_object().is_some_and(|m| !m.is_empty()) {
        tx.insert_audit(&actor.audit(action::UPDATE, Outcome::Success).on("user", who.id()).details(json!({
            "changes": changed, "profile": true
        })))
        .await?;
    }
    tx.commit().await?;
    app.sessions.forget_where(|s| s.user.id == who.id());
    Ok(after)
}

pub(crate) async fn check_current_password(app: &App, who: &Principal, row: &UserRow, current: &str) -> ApiResult<()> {
    if verify(&app.passwords, current, &row.hashed_password).await? {
        return Ok(());
    }
    app.store
        .audit(&who.actor().audit(action::UPDATE, Outcome::Failure).on("user", who.id()).details(json!({
            "profile": true, "reason": "invalid_current_password"
        })))
        .await?;
    Err(ApiError::forbidden("invalid_current_password", "the current password is not correct"))
}

async fn verify(passwords: &Passwords, password: &str, hash: &str) -> ApiResult<bool> {
    Ok(passwords.verify(password, Some(hash)).await?)
}

/// Records that a user tried to change a field of their profile they may not change,
/// and returns the refusal.
pub async fn refuse_profile_escalation(app: &App, who: &Principal, fields: &[&str]) -> ApiError {
    let row = who.actor().audit(action::ACCESS_DENIED, Outcome::Denied).on("user", who.id()).details(json!({
        "reason": "profile_escalation", "fields": fields
    }));
    if let Err(e) = app.store.audit(&row).await {
        return e.into();
    }
    ApiError::validation(fields.first().copied().unwrap_or("role"), "cannot be changed through the profile; ask an admin")
}
