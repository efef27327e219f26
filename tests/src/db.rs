//! Throwaway databases: a SQLite file in a temporary directory, or a PostgreSQL database
//! created for one test and dropped after it.
//!
//! PostgreSQL test databases are copies of a template migrated once (`cohort_tpl_<hash
//! of the migrations>`, shared by every test binary and kept between runs), so a test
//! does not pay for the migrations; [`TestDatabase::empty`] gives an unmigrated one.

use std::path::Path;
use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection};
use tokio::sync::OnceCell;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

pub fn admin_url() -> String {
    std::env::var("COHORT_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_string())
}

#[derive(Debug)]
pub struct TestDatabase {
    pub url: String,
    pub backend: Backend,
    /// Keeps the SQLite directory alive.
    _dir: Option<tempfile::TempDir>,
    pg_name: Option<String>,
}

impl TestDatabase {
    /// A database with Cohort's schema already applied on PostgreSQL (SQLite files start
    /// empty: migrating one costs little).
    pub async fn create(backend: Backend) -> TestDatabase {
        Self::create_from(backend, true).await
    }

    /// A database this harness did not make (a [`crate::faults::PgCluster`]'s, or a SQLite
    /// file on a [`crate::faults::PrivateTmpfs`]): nothing to drop afterwards.
    pub fn external(url: &str, backend: Backend) -> TestDatabase {
        TestDatabase { url: url.to_string(), backend, _dir: None, pg_name: None }
    }

    /// A database without any table, for tests of the migrations themselves.
    pub async fn empty(backend: Backend) -> TestDatabase {
        Self::create_from(backend, false).await
    }

    async fn create_from(backend: Backend, migrated: bool) -> TestDatabase {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}", dir.path().join("cohort.db").display());
                TestDatabase { url, backend, _dir: Some(dir), pg_name: None }
            }
            Backend::Postgres => {
                let admin = admin_url();
                let name = format!("cohort_test_{}_{}", std::process::id(), rand::random::<u32>());
                let mut conn = connect_admin().await;
                let create = if migrated {
                    let template = template().await;
                    format!("CREATE DATABASE {name} TEMPLATE {template}")
                } else {
                    format!("CREATE DATABASE {name}")
                };
                sqlx::query(&create).execute(&mut conn).await.unwrap_or_else(|e| panic!("{create}: {e}"));
                let _ = conn.close().await;
                TestDatabase { url: database_url(&admin, &name), backend, _dir: None, pg_name: Some(name) }
            }
        }
    }
}

impl TestDatabase {
    /// Runs `sql` (one or more statements) on this database, from a connection of its
    /// own: what a database administrator would do beside Cohort.
    pub async fn execute(&self, sql: &str) {
        match self.backend {
            Backend::Sqlite => {
                let mut conn = sqlx::SqliteConnection::connect(&self.url).await.expect("connect to SQLite");
                sqlx::raw_sql(sql).execute(&mut conn).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
                let _ = conn.close().await;
            }
            Backend::Postgres => {
                let mut conn = PgConnection::connect(&self.url).await.expect("connect to PostgreSQL");
                sqlx::raw_sql(sql).execute(&mut conn).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
                let _ = conn.close().await;
            }
        }
    }

    /// The value of a row of Cohort's `settings` table.
    pub async fn setting(&self, key: &str) -> Option<String> {
        let sql = "SELECT value FROM settings WHERE key = $1";
        match self.backend {
            Backend::Sqlite => {
                let mut conn = sqlx::SqliteConnection::connect(&self.url).await.expect("connect to SQLite");
                let value = sqlx::query_scalar(sql).bind(key).fetch_optional(&mut conn).await.expect("settings");
                let _ = conn.close().await;
                value
            }
            Backend::Postgres => {
                let mut conn = PgConnection::connect(&self.url).await.expect("connect to PostgreSQL");
                let value = sqlx::query_scalar(sql).bind(key).fetch_optional(&mut conn).await.expect("settings");
                let _ = conn.close().await;
                value
            }
        }
    }
}

fn database_url(admin: &str, name: &str) -> String {
    let mut url = url::Url::parse(admin).expect("PostgreSQL URL");
    url.set_path(name);
    url.to_string()
}

async fn connect_admin() -> PgConnection {
    let admin = admin_url();
    PgConnectOptions::from_str(&admin).expect("COHORT_TEST_POSTGRES_URL").connect().await.unwrap_or_else(|e| {
        panic!(
            "PostgreSQL is not reachable at {admin} ({e}). Start it, point COHORT_TEST_POSTGRES_URL at one, \
             or set COHORT_TEST_SKIP_POSTGRES=1 to skip the PostgreSQL variants explicitly."
        )
    })
}

/// The migrated template's name, creating it the first time (once per migration set,
/// across processes: an advisory lock serialises the creators).
async fn template() -> &'static str {
    static TEMPLATE: OnceCell<String> = OnceCell::const_new();
    TEMPLATE
        .get_or_init(|| async {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations/postgres");
            let migrator = sqlx::migrate::Migrator::new(dir.as_path()).await.expect("read migrations/postgres");
            let mut hasher = std::hash::DefaultHasher::new();
            for m in migrator.iter() {
                std::hash::Hash::hash(&(m.version, m.checksum.as_ref()), &mut hasher);
            }
            let key = std::hash::Hasher::finish(&hasher);
            let name = format!("cohort_tpl_{key:016x}");
            let lock = i64::from_ne_bytes(key.to_ne_bytes());
            let mut conn = connect_admin().await;
            sqlx::query("SELECT pg_advisory_lock($1)").bind(lock).execute(&mut conn).await.expect("advisory lock");
            let ready: Option<bool> = sqlx::query_scalar("SELECT datistemplate FROM pg_database WHERE datname = $1")
                .bind(&name)
                .fetch_optional(&mut conn)
                .await
                .expect("pg_database");
            if ready != Some(true) {
                // A half-made template (a creator that died) is made again.
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut conn).await.expect("drop template");
                sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.expect("create template");
                let mut tpl =
                    PgConnectOptions::from_str(&database_url(&admin_url(), &name)).expect("url").connect().await.expect("template");
                migrator.run_direct(&mut tpl).await.expect("migrate the template");
                let _ = tpl.close().await;
                sqlx::query(&format!("ALTER DATABASE {name} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false"))
                    .execute(&mut conn)
                    .await
                    .expect("mark the template");
            }
            sqlx::query("SELECT pg_advisory_unlock($1)").bind(lock).execute(&mut conn).await.expect("advisory unlock");
            let _ = conn.close().await;
            name
        })
        .await
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some(name) = self.pg_name.take() else { return };
        // Drop may run inside a runtime: use a thread with its own.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
            rt.block_on(async {
                let mut conn =
                    PgConnectOptions::from_str(&admin_url()).map_err(|e| e.to_string())?.connect().await.map_err(|e| e.to_string())?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut conn).await.map_err(|e| e.to_string())?;
                let _ = conn.close().await;
                Ok::<(), String>(())
            })
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!("warning: could not drop the test database: {e}");
        }
    }
}
