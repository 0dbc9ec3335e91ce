//! Test backends: a fresh SQLite file, or a fresh PostgreSQL database per test (created on
//! the server named by `PALISADE_TEST_POSTGRES_URL`, dropped when the test ends), so
//! tests run in parallel.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use palisade_store::{DynStore, open};
use sqlx::Connection;
use sqlx::postgres::PgConnection;

pub const PG_ENV: &str = "PALISADE_TEST_POSTGRES_URL";

pub struct Backend {
    pub name: &'static str,
    /// URL of this test's own store, for opening more handles ("replicas").
    pub url: String,
    pub store: DynStore,
    _guard: Guard,
}

enum Guard {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Postgres(PgDatabase),
}

impl Backend {
    pub async fn sqlite() -> Backend {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("s.db").display());
        let store = open(&url).await.unwrap();
        Backend {
            name: "sqlite",
            url,
            store,
            _guard: Guard::Sqlite(dir),
        }
    }

    /// `None` (after printing SKIPPED) when PostgreSQL is not configured outside CI.
    pub async fn postgres() -> Option<Backend> {
        let db = PgDatabase::create().await?;
        let url = db.url.clone();
        let store = open(&url).await.unwrap();
        Some(Backend {
            name: "postgres",
            url,
            store,
            _guard: Guard::Postgres(db),
        })
    }

    /// Another independent handle (own pool) on the same store: a second process.
    pub async fn reopen(&self) -> DynStore {
        open(&self.url).await.unwrap()
    }
}

/// The server URL from the environment; fails in CI when unset, else skips.
pub fn postgres_server_url() -> Option<String> {
    match std::env::var(PG_ENV) {
        Ok(u) if !u.trim().is_empty() => Some(u),
        _ => {
            if std::env::var_os("CI").is_some() {
                panic!("{PG_ENV} must be set in CI");
            }
            eprintln!("SKIPPED (set {PG_ENV})");
            None
        }
    }
}

/// `url` with its database name replaced by `db` (query string kept).
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let host_start = base.find("://").map(|i| i + 3).unwrap_or(0);
    let prefix = match base[host_start..].find('/') {
        Some(i) => &base[..host_start + i],
        None => base,
    };
    match query {
        Some(q) => format!("{prefix}/{db}?{q}"),
        None => format!("{prefix}/{db}"),
    }
}

/// A database of its own for one test, dropped (connections and all) on drop.
pub struct PgDatabase {
    pub server_url: String,
    pub name: String,
    pub url: String,
}

impl PgDatabase {
    pub async fn create() -> Option<PgDatabase> {
        let server_url = postgres_server_url()?;
        let name = format!("palisade_t_{}", uuid::Uuid::new_v4().simple());
        let mut conn = PgConnection::connect(&server_url).await.unwrap();
        // Parallel CREATE DATABASE from one template can collide; retry briefly.
        let mut attempt = 0;
        loop {
            match sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
                .execute(&mut conn)
                .await
            {
                Ok(_) => break,
                Err(e) if attempt < 20 => {
                    attempt += 1;
                    eprintln!("CREATE DATABASE retry {attempt}: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(e) => panic!("CREATE DATABASE {name}: {e}"),
            }
        }
        conn.close().await.unwrap();
        let url = with_database(&server_url, &name);
        Some(PgDatabase {
            server_url,
            name,
            url,
        })
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let server_url = self.server_url.clone();
        let name = self.name.clone();
        // Drop runs inside the test's runtime: do the async work on a thread of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(mut conn) = PgConnection::connect(&server_url).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                    )))
                    .execute(&mut conn)
                    .await;
                    let _ = conn.close().await;
                }
            });
        })
        .join();
    }
}

#[test]
fn database_name_is_replaced() {
    assert_eq!(
        with_database("postgres://postgres@127.0.0.1:5432/test", "x"),
        "postgres://postgres@127.0.0.1:5432/x"
    );
    assert_eq!(
        with_database("postgresql://u:p@h/test?sslmode=disable", "x"),
        "postgresql://u:p@h/x?sslmode=disable"
    );
    assert_eq!(
        with_database("postgres://h:5432", "x"),
        "postgres://h:5432/x"
    );
}
