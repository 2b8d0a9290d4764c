//! Throwaway databases for tests: a temp SQLite file, or a fresh PostgreSQL database
//! on the test cluster (`HOIST_TEST_POSTGRES_URL`, started by `scripts/testenv.sh`).
//!
//! Compiled into the store's unit tests and, by `#[path]`, into the story harness in
//! `tests/`, so both make and drop databases the same way. Uses only sqlx, url and
//! tempfile: nothing of hoist itself.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};

use sqlx::{Connection, Executor};

/// The variable `scripts/testenv.sh` exports: a superuser URL on the `postgres` database.
pub const POSTGRES_URL_VAR: &str = "HOIST_TEST_POSTGRES_URL";

/// A database that lives as long as this value.
pub struct TestDb {
    /// The store URL to give hoist.
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    /// (admin URL, database name) of a PostgreSQL database to drop at the end.
    postgres: Option<(String, String)>,
}

impl TestDb {
    /// A store file in a fresh temp directory.
    pub fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("hoist.db").display());
        TestDb {
            url,
            _dir: Some(dir),
            postgres: None,
        }
    }

    /// A fresh, empty PostgreSQL database. None when the test cluster is not configured,
    /// so the PostgreSQL half of a test is skipped on a developer's machine; in CI (`CI`
    /// set) that is a failure instead: the PostgreSQL tests must never skip silently there.
    pub async fn postgres(label: &str) -> Option<TestDb> {
        let Some(admin) = std::env::var(POSTGRES_URL_VAR)
            .ok()
            .filter(|v| !v.is_empty())
        else {
            if std::env::var_os("CI").is_some() {
                panic!(
                    "{POSTGRES_URL_VAR} is not set but CI is: the PostgreSQL tests cannot be \
                     skipped in CI (source scripts/testenv.sh and run testenv_up)"
                );
            }
            return None;
        };
        Some(TestDb::postgres_at(&admin, label).await)
    }

    /// A fresh database on the cluster `admin` (a URL whose user may create databases).
    pub async fn postgres_at(admin: &str, label: &str) -> TestDb {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let label: String = label
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(24)
            .collect::<String>()
            .to_ascii_lowercase();
        let name = format!(
            "hoist_{label}_{}_{}_{nanos}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let mut conn = sqlx::PgConnection::connect(admin)
            .await
            .unwrap_or_else(|e| panic!("cannot reach the test PostgreSQL: {e}"));
        conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .await
            .unwrap_or_else(|e| panic!("cannot create database {name}: {e}"));
        let _ = conn.close().await;
        let mut url = url::Url::parse(admin).expect("HOIST_TEST_POSTGRES_URL is a URL");
        url.set_path(&format!("/{name}"));
        TestDb {
            url: url.to_string(),
            _dir: None,
            postgres: Some((admin.to_string(), name)),
        }
    }

    pub fn is_postgres(&self) -> bool {
        self.postgres.is_some()
    }
}

impl Drop for TestDb {
    /// Drops the PostgreSQL database, also when the test panicked. `WITH (FORCE)` ends the
    /// store's pool connections; a thread of its own because this may run inside a runtime.
    fn drop(&mut self) {
        let Some((admin, name)) = self.postgres.take() else {
            return;
        };
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let mut conn = sqlx::PgConnection::connect(&admin)
                    .await
                    .map_err(|e| e.to_string())?;
                conn.execute(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                )))
                .await
                .map_err(|e| e.to_string())?;
                let _ = conn.close().await;
                Ok::<(), String>(())
            })
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!("test database not dropped: {e}");
        }
    }
}
