//! The `settings` table: small values every node on the database shares.

use super::{Db, StoreResult};

impl Db {
    pub async fn setting(&mut self, key: &str) -> StoreResult<Option<String>> {
        Ok(on_db!(self, |c| sqlx::query_scalar("SELECT value FROM settings WHERE key = $1").bind(key).fetch_optional(c).await)?)
    }

    /// Stores `value` under `key` unless a value is already there, and returns the value
    /// that won. Two nodes starting at once therefore agree on one value.
    pub async fn setting_or_insert(&mut self, key: &str, value: &str) -> StoreResult<String> {
        on_db!(self, |c| sqlx::query("INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
            .bind(key)
            .bind(value)
            .execute(c)
            .await
            .map(|r| r.rows_affected()))?;
        self.setting(key).await?.ok_or_else(|| super::StoreError::Corrupt(format!("setting {key} vanished")))
    }

    pub async fn set_setting(&mut self, key: &str, value: &str) -> StoreResult<()> {
        on_db!(self, |c| sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value"
        )
        .bind(key)
        .bind(value)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
        Ok(())
    }
}
