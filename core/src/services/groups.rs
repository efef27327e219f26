//! Research groups (admins).

use serde_json::json;

use super::{action, Outcome, Principal};
use crate::app::App;
use crate::domain::{self, ExportPolicy, Id};
use crate::error::{ApiError, ApiResult};
use crate::model::Group;
use crate::store::{Db, Page, PageRequest};

fn clean(name: &str) -> ApiResult<String> {
    domain::clean_name(name).map_err(|e| ApiError::validation("name", e))?.ok_or_else(|| ApiError::validation("name", "must not be empty"))
}

fn name_taken() -> ApiError {
    ApiError::conflict("group_exists", "a group with this name already exists")
}

/// A `group_id` given in a body must name an existing group (422 otherwise).
pub async fn check_exists(db: &mut Db, group_id: Option<Id>) -> ApiResult<()> {
    if let Some(id) = group_id {
        if db.group_by_id(id).await?.is_none() {
            return Err(ApiError::validation("group_id", format!("group {id} does not exist")));
        }
    }
    Ok(())
}

pub async fn list(app: &App, page: PageRequest) -> ApiResult<Page<Group>> {
    let mut db = app.store.conn().await?;
    let rows = db.list_groups(page).await?;
    Ok(Page { items: rows.items.into_iter().map(Group::from).collect(), total: rows.total })
}

pub async fn create(app: &App, who: &Principal, name: &str, export_policy: Option<ExportPolicy>) -> ApiResult<Group> {
    let name = clean(name)?;
    let mut tx = app.store.begin().await?;
    if tx.group_by_name(&name).await?.is_some() {
        return Err(name_taken());
    }
    let mut row = tx.insert_group(&name).await.map_err(|e| if e.is_unique_violation() { name_taken() } else { e.into() })?;
    if let Some(policy) = export_policy.filter(|p| *p != ExportPolicy::Any) {
        tx.set_group_export_policy(row.id, policy).await?;
        row.export_policy = policy;
    }
    tx.insert_audit(&who.actor().audit(action::CREATE, Outcome::Success).on("group", row.id).details(json!({
        "name": name, "export_policy": row.export_policy.as_str()
    })))
    .await?;
    tx.commit().await?;
    Ok(row.into())
}

/// Renames a group and/or changes its export policy.
pub async fn update(app: &App, who: &Principal, id: Id, name: Option<&str>, export_policy: Option<ExportPolicy>) -> ApiResult<Group> {
    let name = name.map(clean).transpose()?;
    let mut tx = app.store.begin().await?;
    let old = tx.group_by_id(id).await?.ok_or_else(|| ApiError::not_found("group"))?;
    let mut changes = serde_json::Map::new();
    if let Some(name) = name.filter(|n| *n != old.name) {
        if tx.group_by_name(&name).await?.is_some_and(|g| g.id != id) {
            return Err(name_taken());
        }
        tx.rename_group(id, &name).await?;
        changes.insert("name".into(), json!([old.name, name]));
    }
    if let Some(policy) = export_policy.filter(|p| *p != old.export_policy) {
        tx.set_group_export_policy(id, policy).await?;
        changes.insert("export_policy".into(), json!([old.export_policy.as_str(), policy.as_str()]));
    }
    if !changes.is_empty() {
        tx.insert_audit(&who.actor().audit(action::UPDATE, Outcome::Success).on("group", id).details(json!({"changes": changes}))).await?;
    }
    let row = tx.group_by_id(id).await?.ok_or_else(|| ApiError::not_found("group"))?;
    tx.commit().await?;
    app.export_policies.forget(&id);
    Ok(row.into())
}

/// Deletes an empty group; a group that still has users or patients answers 409.
pub async fn delete(app: &App, who: &Principal, id: Id) -> ApiResult<()> {
    let mut tx = app.store.begin().await?;
    let group = tx.group_by_id(id).await?.ok_or_else(|| ApiError::not_found("group"))?;
    let not_empty = || ApiError::conflict("group_not_empty", "the group still has users or patients; move them first");
    if group.members > 0 || tx.count_group_patients(id).await? > 0 {
        return Err(not_empty());
    }
    tx.insert_audit(&who.actor().audit(action::DELETE, Outcome::Success).on("group", id).details(json!({"name": group.name}))).await?;
    tx.delete_group(id).await.map_err(|e| if e.is_foreign_key_violation() { not_empty() } else { e.into() })?;
    tx.commit().await?;
    Ok(())
}
