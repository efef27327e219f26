//! Throwaway databases: a SQLite file in a temporary directory, or a fresh PostgreSQL
//! database created for one test and dropped after it.

use std::str::FromStr;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

fn admin_url() -> String {
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
    pub async fn create(backend: Backend) -> TestDatabase {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}", dir.path().join("cohort.db").display());
                TestDatabase { url, backend, _dir: Some(dir), pg_name: None }
            }
            Backend::Postgres => {
                let admin = admin_url();
                let name = format!("cohort_test_{}", rand::random::<u64>());
                let mut conn = PgConnectOptions::from_str(&admin).expect("COHORT_TEST_POSTGRES_URL").connect().await.unwrap_or_else(|e| {
                    panic!(
                        "PostgreSQL is not reachable at {admin} ({e}). Start it, point COHORT_TEST_POSTGRES_URL at one, \
                         or set COHORT_TEST_SKIP_POSTGRES=1 to skip the PostgreSQL variants explicitly."
                    )
                });
                sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.expect("create test database");
                let _ = conn.close().await;
                let mut url = url::Url::parse(&admin).expect("PostgreSQL URL");
                url.set_path(&name);
                TestDatabase { url: url.to_string(), backend, _dir: None, pg_name: Some(name) }
            }
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some(name) = self.pg_name.take() else { return };
        // Drop may run inside a runtime: use a thread with its own.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            rt.block_on(async {
                if let Ok(mut conn) = PgConnectOptions::from_str(&admin_url()).expect("url").connect().await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut conn).await;
                    let _ = conn.close().await;
                }
            });
        })
        .join();
    }
}
