//! Storage on SQLite or PostgreSQL, chosen by URL.
//!
//! Every query is written once, in portable SQL (`$1` placeholders, which sqlx's SQLite
//! driver also accepts; `RETURNING`; `ON CONFLICT`), and compiled for both drivers by the
//! [`on_db!`] macro. We do not use `sqlx::Any`: it cannot carry timestamps, and seafowl's
//! experience is that generic code over `sqlx::Database` drowns in trait bounds. Each
//! dialect keeps its native column types (TIMESTAMPTZ on PostgreSQL, RFC 3339 text on
//! SQLite); the row structs decode both.
//!
//! A [`Db`] is one connection, either a plain pooled one (reads) or a write transaction
//! from [`Store::begin`]. Services perform an action and its audit row on the same `Db`
//! and commit once, so the two land together or not at all.

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgConnection, PgPool, Postgres, Sqlite, SqliteConnection, SqlitePool, Transaction};

/// Runs the same body against whichever driver `$db` holds: `$c` is bound to a
/// `&mut SqliteConnection` or a `&mut PgConnection`, and the body is compiled for both.
macro_rules! on_db {
    ($db:expr, |$c:ident| $body:expr) => {
        match &mut $db.0 {
            $crate::store::Inner::Sqlite(h) => {
                let $c = h.conn();
                $body
            }
            $crate::store::Inner::Postgres(h) => {
                let $c = h.conn();
                $body
            }
        }
    };
}

/// The `users` columns of an [`users::AuthUser`], for the joins that authenticate a
/// request (`sessions.rs`, `tokens.rs`); `u` is the alias of `users` in those queries.
macro_rules! auth_user_columns {
    () => {
        "u.id AS user_id, u.email, u.role, u.status, u.group_id, u.first_name, u.last_name, u.created_at"
    };
}

pub mod audit;
pub mod groups;
pub mod journal;
pub mod patients;
pub mod sessions;
pub mod settings;
pub mod throttle;
pub mod tokens;
pub mod users;

/// A storage failure. Whether it means "the database is down" (503) or a bug (500) is
/// decided here, once.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("bad data in the database: {0}")]
    Corrupt(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

impl StoreError {
    /// True when the database cannot be reached or is shutting down, as opposed to a
    /// query that is wrong (or a full disk: [`StoreError::is_storage_full`]).
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Sqlx(e) => match e {
                sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::Tls(_) => !self.is_storage_full(),
                sqlx::Error::Database(db) => {
                    // PostgreSQL class 08 (connection exception), 57P01-03 (shutdown, and
                    // "the database system is starting up"), 53 (insufficient resources,
                    // except 53100, a full disk); SQLite BUSY/LOCKED after the timeout.
                    let code = db.code().unwrap_or_default();
                    match sqlite_primary_code(&code) {
                        Some(primary) if self.backend_is_sqlite() => primary == SQLITE_BUSY || primary == SQLITE_LOCKED,
                        _ => code.starts_with("08") || code.starts_with("57P") || (code.starts_with("53") && code != PG_DISK_FULL),
                    }
                }
                _ => false,
            },
            StoreError::Migrate(_) | StoreError::Corrupt(_) => false,
        }
    }

    /// True when the database could not write for lack of space: SQLite's `SQLITE_FULL`,
    /// PostgreSQL's `53100` (disk_full), or `ENOSPC`/`EDQUOT` from the file system.
    pub fn is_storage_full(&self) -> bool {
        match self {
            StoreError::Sqlx(sqlx::Error::Io(e)) => io_storage_full(e),
            StoreError::Sqlx(sqlx::Error::Database(db)) => {
                let code = db.code().unwrap_or_default();
                if self.backend_is_sqlite() {
                    sqlite_primary_code(&code) == Some(SQLITE_FULL)
                } else {
                    code == PG_DISK_FULL
                }
            }
            _ => false,
        }
    }

    /// Whether the error came from SQLite (whose codes are numbers, where PostgreSQL's
    /// SQLSTATEs are five characters, some of them all digits).
    fn backend_is_sqlite(&self) -> bool {
        matches!(self, StoreError::Sqlx(sqlx::Error::Database(db)) if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some())
    }

    /// True when PostgreSQL gave this transaction up to let another go on: chosen to
    /// break a deadlock (SQLSTATE 40P01) or unable to serialize it (40001). Running the
    /// whole transaction again is the remedy.
    pub fn is_transaction_conflict(&self) -> bool {
        matches!(self, StoreError::Sqlx(sqlx::Error::Database(db))
            if !self.backend_is_sqlite() && matches!(db.code().as_deref(), Some("40P01" | "40001")))
    }

    pub fn is_unique_violation(&self) -> bool {
        matches!(self, StoreError::Sqlx(sqlx::Error::Database(db)) if db.is_unique_violation())
    }

    pub fn is_foreign_key_violation(&self) -> bool {
        matches!(self, StoreError::Sqlx(sqlx::Error::Database(db)) if db.is_foreign_key_violation())
    }
}

/// SQLite's primary result codes (an extended code carries the primary one in its low byte).
const SQLITE_BUSY: i64 = 5;
const SQLITE_LOCKED: i64 = 6;
const SQLITE_FULL: i64 = 13;
/// PostgreSQL's SQLSTATE for "could not extend a file: no space left on device".
const PG_DISK_FULL: &str = "53100";

fn sqlite_primary_code(code: &str) -> Option<i64> {
    code.parse::<i64>().ok().map(|c| c & 0xff)
}

/// `ENOSPC` (no space left on the device) or `EDQUOT` (quota exceeded).
pub fn io_storage_full(e: &std::io::Error) -> bool {
    matches!(e.kind(), std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded) || matches!(e.raw_os_error(), Some(28 | 122))
}

/// Which database a store runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// The pool of one database, and whether it was last found unreachable.
#[derive(Clone, Debug)]
pub struct Store {
    pool: Pool,
    outage: Arc<Outage>,
    /// On SQLite, the one turn to hold a write transaction in this process (see
    /// [`Store::begin`]).
    writer: Arc<tokio::sync::Semaphore>,
}

#[derive(Clone, Debug)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Set when getting a connection failed because the database is down, cleared by the
/// next success. While it is set, requests wait [`OUTAGE_ACQUIRE_TIMEOUT`] instead of
/// [`ACQUIRE_TIMEOUT`]: during an outage every request (and `/api/health`) gets its 503
/// `database_unavailable` within about a second, and none piles up behind the others,
/// while each still tries the database, so the first one after it comes back succeeds.
#[derive(Debug, Default)]
struct Outage {
    down: AtomicBool,
}

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

/// How long a request waits for a pooled connection before the database counts as down.
/// A PostgreSQL that refuses connections (stopped, restarting) is retried by sqlx within
/// this delay, so it is also how long the first requests of an outage wait for their 503.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);
/// The same while the database is known to be down (see [`Outage`]).
const OUTAGE_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long SQLite waits for its write lock (`busy_timeout`), and a write transaction of
/// this process for its turn: past it, the database counts as unavailable.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// A pooled connection idle for longer is pinged before it is handed out (a database
/// restarted meanwhile closed it); one in use a moment ago is handed out as it is. sqlx
/// pings every connection by default: a round trip (on SQLite, two hand-overs to the
/// connection's thread) before each request's first query.
const PING_WHEN_IDLE: Duration = Duration::from_secs(1);

/// The pool's check before handing out a connection (see [`PING_WHEN_IDLE`]).
fn ping_when_idle<C: sqlx::Connection>(
    conn: &mut C,
    meta: sqlx::pool::PoolConnectionMetadata,
) -> futures_util::future::BoxFuture<'_, Result<bool, sqlx::Error>> {
    Box::pin(async move { Ok(meta.idle_for < PING_WHEN_IDLE || conn.ping().await.is_ok()) })
}

/// Whether a SQLite connection given back to the pool may serve again. SQLite rolls a
/// transaction back by itself on some errors (`SQLITE_FULL`, I/O errors); sqlx's own
/// `ROLLBACK` then fails and its count of open transactions stays at one, so that every
/// later `BEGIN` on the connection would fail. Such a connection is closed (the pool
/// opens another). A transaction dropped without commit has its rollback queued on the
/// connection: the ping runs it first, then the count is read.
async fn sqlite_reusable(conn: &mut SqliteConnection) -> Result<bool, sqlx::Error> {
    use sqlx::{Connection, TransactionManager};
    type Manager = <Sqlite as sqlx::Database>::TransactionManager;
    if Manager::get_transaction_depth(conn) == 0 {
        return Ok(true);
    }
    conn.ping().await?;
    let depth = Manager::get_transaction_depth(conn);
    if depth > 0 {
        tracing::warn!(depth, "a SQLite connection lost track of its transaction (rolled back by SQLite); closing it");
    }
    Ok(depth == 0)
}

/// `sqlite::memory:` and `?mode=memory` databases have no file.
fn sqlite_in_memory(url: &str) -> bool {
    let rest = url.trim_start_matches("sqlite:").trim_start_matches("//");
    let (database, params) = rest.split_once('?').unwrap_or((rest, ""));
    database == ":memory:" || params.split('&').any(|p| p == "mode=memory")
}

/// The SQLite file holds the JWT secret and session ids: only its owner may read it.
/// Creates it with mode 0600 when missing (SQLite gives its `-wal` and `-shm` files the
/// mode of the database), and narrows an existing one, and those files, that others
/// could read.
fn make_private(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if path.as_os_str().is_empty() {
        return Ok(());
    }
    match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        let Ok(meta) = std::fs::metadata(&file) else { continue };
        if meta.is_file() && meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(file = %std::path::Path::new(&file).display(), "the database file was readable by others; narrowing it to 0600");
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    Ok(())
}

/// PostgreSQL connections a node opens at most by default: four per core of this
/// machine, at least 8 and at most 64. More connections than that do not answer more
/// requests a second, they make each wait longer: on 2 cores at a million patients, 32
/// clients paging through the middle of the registry got p99 18–21 ms with 8
/// connections, 25–45 ms with 16, at the same rate (docs/benchmarks.md).
pub fn postgres_connections() -> u32 {
    let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
    u32::try_from(cores.saturating_mul(4)).unwrap_or(u32::MAX).clamp(8, 64)
}

impl Store {
    /// Opens the database named by `url` (`sqlite://file.db`, created if missing, or
    /// `postgres://...`). Does not migrate; see [`Store::migrate`].
    pub async fn connect(url: &str) -> StoreResult<Store> {
        Store::connect_with(url, None).await
    }

    /// [`Store::connect`] with at most `connections` in the pool (`DatabaseConnections`;
    /// default [`postgres_connections`] on PostgreSQL, 8 on SQLite).
    pub async fn connect_with(url: &str, connections: Option<u32>) -> StoreResult<Store> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            // PostgreSQL's own plan cache: a statement run often gets a generic plan
            // when it costs no more than one planned with its values (planning was as
            // much of PostgreSQL's time per list as running the statements). Searches,
            // whose plan depends on their text, are unnamed statements, planned every
            // time (`patients::Db::keeps_plan`).
            let options = PgConnectOptions::from_str(url)?.application_name("cohort");
            let pool = PgPoolOptions::new()
                .max_connections(connections.unwrap_or_else(postgres_connections))
                .min_connections(1)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .test_before_acquire(false)
                .before_acquire(ping_when_idle)
                .connect_with(options)
                .await?;
            Ok(Store::new(Pool::Postgres(pool)))
        } else {
            let options = SqliteConnectOptions::from_str(url)?;
            if !sqlite_in_memory(url) {
                make_private(options.get_filename()).map_err(|e| StoreError::Sqlx(sqlx::Error::Io(e)))?;
            }
            let options = options
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .foreign_keys(true)
                .busy_timeout(SQLITE_BUSY_TIMEOUT);
            let pool = SqlitePoolOptions::new()
                .max_connections(connections.unwrap_or(8))
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .test_before_acquire(false)
                .before_acquire(ping_when_idle)
                .after_release(|conn, _| Box::pin(async move { sqlite_reusable(conn).await }))
                .connect_with(options)
                .await?;
            Ok(Store::new(Pool::Sqlite(pool)))
        }
    }

    fn new(pool: Pool) -> Store {
        Store { pool, outage: Arc::default(), writer: Arc::new(tokio::sync::Semaphore::new(1)) }
    }

    /// Applies the pending migrations of this store's dialect.
    pub async fn migrate(&self) -> StoreResult<()> {
        match &self.pool {
            Pool::Sqlite(pool) => SQLITE_MIGRATIONS.run(pool).await?,
            Pool::Postgres(pool) => POSTGRES_MIGRATIONS.run(pool).await?,
        }
        Ok(())
    }

    pub fn backend(&self) -> Backend {
        match self.pool {
            Pool::Sqlite(_) => Backend::Sqlite,
            Pool::Postgres(_) => Backend::Postgres,
        }
    }

    /// Connections the pool holds and how many of them are idle.
    pub fn pool_use(&self) -> (u32, usize) {
        match &self.pool {
            Pool::Sqlite(pool) => (pool.size(), pool.num_idle()),
            Pool::Postgres(pool) => (pool.size(), pool.num_idle()),
        }
    }

    /// A pooled connection for reads and single-statement writes.
    pub async fn conn(&self) -> StoreResult<Db> {
        self.acquire(async {
            Ok(Db(
                match &self.pool {
                    Pool::Sqlite(pool) => Inner::Sqlite(Handle::Conn(pool.acquire().await?)),
                    Pool::Postgres(pool) => Inner::Postgres(Handle::Conn(pool.acquire().await?)),
                },
                None,
            ))
        })
        .await
    }

    /// A write transaction. On SQLite it takes the write lock at once (`BEGIN
    /// IMMEDIATE`), so a transaction that reads before it writes cannot fail on lock
    /// upgrade. SQLite has one writer at a time, and one waiting for its lock sleeps in
    /// steps of up to 100 ms (its busy handler) instead of being woken when the lock is
    /// free, holding a pooled connection all along: with 32 clients creating patients,
    /// p99 0.35–0.84 s. So this process's write transactions take turns first, in order
    /// (a semaphore held until the `Db` is committed, rolled back or dropped), and only
    /// another process's writer is waited for by the busy handler.
    pub async fn begin(&self) -> StoreResult<Db> {
        match &self.pool {
            Pool::Sqlite(pool) => {
                let turn = match tokio::time::timeout(SQLITE_BUSY_TIMEOUT, self.writer.clone().acquire_owned()).await {
                    Ok(Ok(turn)) => turn,
                    // As SQLite's own busy timeout would: the database counts as unavailable.
                    Ok(Err(_)) | Err(_) => return Err(StoreError::Sqlx(sqlx::Error::PoolTimedOut)),
                };
                self.acquire(async { Ok(Db(Inner::Sqlite(Handle::Tx(pool.begin_with("BEGIN IMMEDIATE").await?)), Some(turn))) }).await
            }
            Pool::Postgres(pool) => self.acquire(async { Ok(Db(Inner::Postgres(Handle::Tx(pool.begin().await?)), None)) }).await,
        }
    }

    /// A read-only transaction whose statements all see one snapshot of the database
    /// (PostgreSQL: `REPEATABLE READ`; SQLite: a deferred transaction, whose snapshot is
    /// taken by its first read), for reads that must agree with each other, such as a
    /// search's matches and the position of the change log they were read at. It takes
    /// no writer turn; end it with [`Db::commit`] (dropped, it is rolled back).
    pub async fn read_snapshot(&self) -> StoreResult<Db> {
        self.acquire(async {
            Ok(Db(
                match &self.pool {
                    Pool::Sqlite(pool) => Inner::Sqlite(Handle::Tx(pool.begin_with("BEGIN DEFERRED").await?)),
                    Pool::Postgres(pool) => {
                        Inner::Postgres(Handle::Tx(pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY").await?))
                    }
                },
                None,
            ))
        })
        .await
    }

    /// Runs `get` (taking a connection) within the acquire timeout of the moment, and
    /// records whether the database answered (see [`Outage`]). A timed-out `get` is
    /// dropped, which gives its pool slot back.
    async fn acquire(&self, get: impl std::future::Future<Output = StoreResult<Db>>) -> StoreResult<Db> {
        let was_down = self.outage.down.load(Ordering::Relaxed);
        let limit = if was_down { OUTAGE_ACQUIRE_TIMEOUT } else { ACQUIRE_TIMEOUT };
        let result = match tokio::time::timeout(limit, get).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Sqlx(sqlx::Error::PoolTimedOut)),
        };
        match &result {
            Ok(_) if was_down && self.outage.down.swap(false, Ordering::Relaxed) => {
                tracing::info!(backend = self.backend().as_str(), "the database answers again");
            }
            Err(e) if e.is_unavailable() && !self.outage.down.swap(true, Ordering::Relaxed) => {
                tracing::error!(backend = self.backend().as_str(), error = %e, "the database is unavailable; requests that need it answer 503 until it is back");
            }
            _ => {}
        }
        result
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> StoreResult<()> {
        let mut db = self.conn().await?;
        on_db!(db, |c| sqlx::query("SELECT 1").execute(c).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// The database's size on disk in bytes (SQLite: its pages, the WAL not counted;
    /// PostgreSQL: `pg_database_size`), for reports such as the bench's bytes per patient.
    pub async fn size_bytes(&self) -> StoreResult<i64> {
        let mut db = self.conn().await?;
        let sql = match self.pool {
            Pool::Sqlite(_) => "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
            Pool::Postgres(_) => "SELECT pg_database_size(current_database())",
        };
        Ok(on_db!(db, |c| sqlx::query_scalar(sql).fetch_one(c).await)?)
    }

    pub async fn close(&self) {
        match &self.pool {
            Pool::Sqlite(pool) => pool.close().await,
            Pool::Postgres(pool) => pool.close().await,
        }
    }
}

enum Handle<DB: sqlx::Database> {
    Conn(PoolConnection<DB>),
    Tx(Transaction<'static, DB>),
}

impl Handle<Sqlite> {
    fn conn(&mut self) -> &mut SqliteConnection {
        match self {
            Handle::Conn(c) => c,
            Handle::Tx(t) => t,
        }
    }
}

impl Handle<Postgres> {
    fn conn(&mut self) -> &mut PgConnection {
        match self {
            Handle::Conn(c) => c,
            Handle::Tx(t) => t,
        }
    }
}

enum Inner {
    Sqlite(Handle<Sqlite>),
    Postgres(Handle<Postgres>),
}

/// One database connection or transaction; the repository methods live on it. A SQLite
/// write transaction holds its process's writer turn ([`Store::begin`]) until it ends.
pub struct Db(Inner, Option<tokio::sync::OwnedSemaphorePermit>);

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            Inner::Sqlite(_) => "Db(sqlite)",
            Inner::Postgres(_) => "Db(postgres)",
        })
    }
}

impl Db {
    /// Whether this is a SQLite connection (where a statement's SQL differs by dialect).
    fn is_sqlite(&self) -> bool {
        matches!(self.0, Inner::Sqlite(_))
    }

    /// Commits a transaction from [`Store::begin`]; a no-op on a plain connection.
    /// Dropping a `Db` without committing rolls the transaction back. The writer turn
    /// passes on once the transaction has ended.
    pub async fn commit(self) -> StoreResult<()> {
        let Db(inner, turn) = self;
        match inner {
            Inner::Sqlite(Handle::Tx(t)) => t.commit().await?,
            Inner::Postgres(Handle::Tx(t)) => t.commit().await?,
            Inner::Sqlite(Handle::Conn(_)) | Inner::Postgres(Handle::Conn(_)) => {}
        }
        drop(turn);
        Ok(())
    }

    /// Rolls a transaction back now (on SQLite: releases the write lock before the caller
    /// goes on); a no-op on a plain connection.
    pub async fn rollback(self) -> StoreResult<()> {
        let Db(inner, turn) = self;
        match inner {
            Inner::Sqlite(Handle::Tx(t)) => t.rollback().await?,
            Inner::Postgres(Handle::Tx(t)) => t.rollback().await?,
            Inner::Sqlite(Handle::Conn(_)) | Inner::Postgres(Handle::Conn(_)) => {}
        }
        drop(turn);
        Ok(())
    }
}

/// The current time as both databases store it (microsecond precision, UTC), so a value
/// read back compares equal to the one written.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// The arguments of a paginated list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageRequest {
    pub page: u32,
    pub page_size: u32,
}

impl PageRequest {
    pub fn limit(self) -> i64 {
        i64::from(self.page_size)
    }

    pub fn offset(self) -> i64 {
        i64::from(self.page.saturating_sub(1)) * i64::from(self.page_size)
    }
}

/// One page of a list and the total number of matching rows.
#[derive(Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: i64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn in_memory_databases_are_recognised() {
        assert!(sqlite_in_memory("sqlite::memory:"));
        assert!(sqlite_in_memory("sqlite://:memory:"));
        assert!(sqlite_in_memory("sqlite://x.db?mode=memory"));
        assert!(!sqlite_in_memory("sqlite:///var/lib/cohort/cohort.db"));
        assert!(!sqlite_in_memory("sqlite://cohort.db?mode=rwc"));
    }

    /// `DatabaseConnections` bounds the pool: with both of a two-connection pool taken, a
    /// third caller waits, and gets one as soon as one is given back.
    #[tokio::test]
    async fn the_pool_holds_at_most_the_configured_connections() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::connect_with(&format!("sqlite://{}", dir.path().join("pool.db").display()), Some(2)).await.expect("connect");
        let (a, b) = (store.conn().await.expect("first"), store.conn().await.expect("second"));
        assert!(tokio::time::timeout(Duration::from_millis(300), store.conn()).await.is_err(), "a third connection was opened");
        assert_eq!(store.pool_use().0, 2);
        drop(a);
        let c = tokio::time::timeout(Duration::from_secs(2), store.conn()).await.expect("given back").expect("third");
        drop((b, c));
        store.close().await;
    }

    /// SQLite write transactions of one process take turns before they take a
    /// connection: while one holds the write lock, the others waiting hold no pooled
    /// connection, so a read still gets one at once (waiting in SQLite's busy handler,
    /// they held the whole pool), and each gets its turn when the one before it ends,
    /// dropped without a commit included.
    #[tokio::test]
    async fn sqlite_writers_wait_for_their_turn_without_a_connection() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::connect_with(&format!("sqlite://{}", dir.path().join("turns.db").display()), Some(2)).await.expect("connect");
        let mut db = store.conn().await.expect("conn");
        on_db!(db, |c| sqlx::query("CREATE TABLE t (x INTEGER)").execute(&mut *c).await.map(|_| ())).expect("setup");
        drop(db);
        let mut first = store.begin().await.expect("first writer");
        let waiters: Vec<_> = (0..3)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    let mut tx = store.begin().await?;
                    on_db!(tx, |c| sqlx::query("INSERT INTO t VALUES (?)").bind(i).execute(&mut *c).await.map(|_| ()))?;
                    tx.commit().await
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let read = tokio::time::timeout(Duration::from_secs(1), store.conn()).await.expect("a read waited behind the writers");
        drop(read.expect("read connection"));
        on_db!(first, |c| sqlx::query("INSERT INTO t VALUES (100)").execute(&mut *c).await.map(|_| ())).expect("first write");
        drop(first);
        for w in waiters {
            tokio::time::timeout(Duration::from_secs(5), w).await.expect("a writer never got its turn").expect("join").expect("write");
        }
        let mut db = store.conn().await.expect("conn");
        let rows: Vec<i64> = on_db!(db, |c| sqlx::query_scalar("SELECT x FROM t ORDER BY x").fetch_all(&mut *c).await).expect("read");
        assert_eq!(rows, vec![0, 1, 2], "the dropped transaction's row must not be there, each waiter's must");
        drop(db);
        store.close().await;
    }

    /// A SQLite database that cannot grow (`max_page_count`, what a full disk looks like
    /// to it: `SQLITE_FULL`) is a 507, not a 500 or a 503.
    #[tokio::test]
    async fn a_full_sqlite_database_is_storage_full() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::connect(&format!("sqlite://{}", dir.path().join("full.db").display())).await.expect("connect");
        let mut db = store.conn().await.expect("conn");
        let filled = on_db!(db, |c| async {
            sqlx::query("CREATE TABLE t (x BLOB)").execute(&mut *c).await?;
            let pages: i64 = sqlx::query_scalar("PRAGMA page_count").fetch_one(&mut *c).await?;
            sqlx::query(&format!("PRAGMA max_page_count = {}", pages + 2)).execute(&mut *c).await?;
            sqlx::query("INSERT INTO t VALUES (zeroblob(1000000))").execute(&mut *c).await.map(|_| ())
        }
        .await);
        drop(db);
        let e = StoreError::from(filled.expect_err("the insert cannot fit"));
        assert!(e.is_storage_full(), "{e}");
        assert!(!e.is_unavailable(), "{e}");
        let api = crate::error::ApiError::from(e);
        assert_eq!((api.status.as_u16(), api.code), (507, "insufficient_storage"));
        // The database still answers reads.
        store.ping().await.expect("ping after SQLITE_FULL");
        store.close().await;
    }

    /// SQLite rolls a transaction back by itself on `SQLITE_FULL`; sqlx's own rollback then
    /// fails and the connection went back to the pool believing it was still in a
    /// transaction ("attempted to call begin_with at non-zero transaction depth" on every
    /// later write). Such connections are closed on release instead.
    #[tokio::test]
    async fn a_transaction_cut_by_a_full_disk_leaves_the_pool_usable() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::connect(&format!("sqlite://{}", dir.path().join("full.db").display())).await.expect("connect");
        let mut db = store.conn().await.expect("conn");
        on_db!(db, |c| sqlx::query("CREATE TABLE t (x BLOB)").execute(&mut *c).await.map(|_| ())).expect("setup");
        drop(db);
        for round in 0..12 {
            let mut tx = store.begin().await.unwrap_or_else(|e| panic!("round {round}: begin: {e}"));
            // The limit is the connection's (not kept in the file): set it each time.
            let small = on_db!(tx, |c| async {
                let pages: i64 = sqlx::query_scalar("PRAGMA page_count").fetch_one(&mut *c).await?;
                sqlx::query(&format!("PRAGMA max_page_count = {}", pages + 2)).execute(&mut *c).await?;
                sqlx::query("INSERT INTO t VALUES (x'00')").execute(&mut *c).await.map(|_| ())
            }
            .await);
            small.unwrap_or_else(|e| panic!("round {round}: a small insert: {e}"));
            let big = on_db!(tx, |c| sqlx::query("INSERT INTO t VALUES (zeroblob(1000000))").execute(&mut *c).await.map(|_| ()));
            let e = StoreError::from(big.expect_err("the big insert cannot fit"));
            assert!(e.is_storage_full(), "{e}");
            drop(tx);
        }
        store.close().await;
    }

    #[test]
    fn enospc_and_edquot_are_storage_full() {
        use std::io::Write;
        let full = std::fs::OpenOptions::new().write(true).open("/dev/full").expect("/dev/full");
        let e = (&full).write_all(&[0u8; 4096]).and_then(|()| (&full).flush()).expect_err("/dev/full refuses writes");
        assert!(io_storage_full(&e), "{e}");
        assert!(io_storage_full(&std::io::Error::from_raw_os_error(122)));
        assert!(!io_storage_full(&std::io::Error::from_raw_os_error(13)));
        let api = crate::error::ApiError::spool_io(e);
        assert_eq!((api.status.as_u16(), api.code), (507, "insufficient_storage"));
        let api = crate::error::ApiError::spool_io(std::io::Error::from_raw_os_error(5));
        assert_eq!((api.status.as_u16(), api.code), (500, "internal_error"));
    }

    #[test]
    fn sqlite_codes_are_read_by_their_primary_code() {
        assert_eq!(sqlite_primary_code("13"), Some(SQLITE_FULL));
        // SQLITE_BUSY_SNAPSHOT (517) is a BUSY.
        assert_eq!(sqlite_primary_code("517"), Some(SQLITE_BUSY));
        assert_eq!(sqlite_primary_code("XX000"), None);
    }

    #[tokio::test]
    async fn the_sqlite_file_and_its_companions_are_private() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mode = |p: &std::path::Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
        let fresh = dir.path().join("fresh.db");
        let store = Store::connect(&format!("sqlite://{}", fresh.display())).await.expect("connect");
        store.migrate().await.expect("migrate");
        for file in ["fresh.db", "fresh.db-wal", "fresh.db-shm"] {
            assert_eq!(mode(&dir.path().join(file)), 0o600, "{file}");
        }
        store.close().await;
        // A file left readable by an older version is narrowed.
        let old = dir.path().join("old.db");
        std::fs::write(&old, b"").expect("create");
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let store = Store::connect(&format!("sqlite://{}", old.display())).await.expect("connect");
        assert_eq!(mode(&old), 0o600);
        store.close().await;
    }
}
