//! Failed-login bookkeeping for brute-force throttling, kept in the database so every
//! node sees the same counts.

use chrono::{DateTime, Utc};

use super::{Db, StoreResult};

/// Failures inside the window for one account key and for one client IP, with the
/// oldest of each (the window reopens when it ages out).
#[derive(Clone, Copy, Debug, Default)]
pub struct FailureCounts {
    pub account: i64,
    pub account_oldest: Option<DateTime<Utc>>,
    pub ip: i64,
    pub ip_oldest: Option<DateTime<Utc>>,
}

impl Db {
    pub async fn login_failures_since(&mut self, email: &str, ip: Option<&str>, since: DateTime<Utc>) -> StoreResult<FailureCounts> {
        let (account, account_oldest): (i64, Option<DateTime<Utc>>) =
            on_db!(self, |c| sqlx::query_as("SELECT COUNT(*), MIN(at) FROM login_failures WHERE email = $1 AND at > $2")
                .bind(email)
                .bind(since)
                .fetch_one(c)
                .await)?;
        let (ip_count, ip_oldest) = match ip {
            Some(ip) => on_db!(self, |c| sqlx::query_as("SELECT COUNT(*), MIN(at) FROM login_failures WHERE ip = $1 AND at > $2")
                .bind(ip)
                .bind(since)
                .fetch_one(c)
                .await)?,
            None => (0, None),
        };
        Ok(FailureCounts { account, account_oldest, ip: ip_count, ip_oldest })
    }

    /// Serialises login attempts on these throttling keys (an account, a client IP)
    /// until the transaction ends, so counting and recording an attempt is atomic. On
    /// PostgreSQL: transaction-scoped advisory locks, taken in a fixed order so two
    /// attempts never wait on each other crosswise. SQLite needs nothing: `BEGIN
    /// IMMEDIATE` already serialises writers.
    pub async fn lock_login_keys(&mut self, keys: &[&str]) -> StoreResult<()> {
        if let super::Inner::Postgres(h) = &mut self.0 {
            let mut ids: Vec<i64> = keys.iter().map(|k| advisory_key(k)).collect();
            ids.sort_unstable();
            ids.dedup();
            for id in ids {
                sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(id).execute(h.conn()).await?;
            }
        }
        Ok(())
    }

    /// Records one attempt as a failure (before its password is checked, so concurrent
    /// attempts see it) and returns its id.
    pub async fn insert_login_failure(&mut self, email: &str, ip: Option<&str>) -> StoreResult<i64> {
        Ok(on_db!(self, |c| sqlx::query_scalar("INSERT INTO login_failures (at, email, ip) VALUES ($1, $2, $3) RETURNING id")
            .bind(super::now())
            .bind(email)
            .bind(ip)
            .fetch_one(c)
            .await)?)
    }

    /// Forgets one recorded attempt (its password was right after all).
    pub async fn delete_login_failure(&mut self, id: i64) -> StoreResult<()> {
        on_db!(self, |c| sqlx::query("DELETE FROM login_failures WHERE id = $1").bind(id).execute(c).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// True the first time a throttling scope is noted in a window (the caller then
    /// audits the throttled attempt), false until `until` has passed.
    pub async fn note_throttled(&mut self, scope_key: &str, now: DateTime<Utc>, until: DateTime<Utc>) -> StoreResult<bool> {
        let first: Option<String> = on_db!(self, |c| sqlx::query_scalar(
            "INSERT INTO login_throttle_notes (scope_key, until) VALUES ($1, $2) \
             ON CONFLICT (scope_key) DO UPDATE SET until = excluded.until WHERE login_throttle_notes.until <= $3 \
             RETURNING scope_key"
        )
        .bind(scope_key)
        .bind(until)
        .bind(now)
        .fetch_optional(c)
        .await)?;
        Ok(first.is_some())
    }

    /// Forgets the failures of an account after a successful login.
    pub async fn clear_login_failures(&mut self, email: &str) -> StoreResult<()> {
        on_db!(self, |c| sqlx::query("DELETE FROM login_failures WHERE email = $1")
            .bind(email)
            .execute(c)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// Drops failures older than any window still in use.
    pub async fn prune_login_failures(&mut self, before: DateTime<Utc>) -> StoreResult<u64> {
        let done = on_db!(self, |c| sqlx::query("DELETE FROM login_failures WHERE at <= $1")
            .bind(before)
            .execute(c)
            .await
            .map(|r| r.rows_affected()))?;
        on_db!(self, |c| sqlx::query("DELETE FROM login_throttle_notes WHERE until <= $1")
            .bind(super::now())
            .execute(c)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(done)
    }
}

/// A 64-bit advisory-lock id for a throttling key (first 8 bytes of its SHA-256).
fn advisory_key(key: &str) -> i64 {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("cohort-login:{key}").as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
}
