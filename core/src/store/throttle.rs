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

    pub async fn insert_login_failure(&mut self, email: &str, ip: Option<&str>) -> StoreResult<()> {
        on_db!(self, |c| sqlx::query("INSERT INTO login_failures (at, email, ip) VALUES ($1, $2, $3)")
            .bind(super::now())
            .bind(email)
            .bind(ip)
            .execute(c)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(())
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
        Ok(done)
    }
}
