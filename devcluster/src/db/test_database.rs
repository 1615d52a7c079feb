//! A database of its own for each test, created on the shared servers and dropped with the
//! value.

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{
    DbError, PASSWORD, POSTGRES_DATABASE, QUERY_LIMIT, Servers, USER, command_error, shared,
};
use crate::cmd;

/// The database engines a test can ask a fresh database of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Postgres,
    MariaDb,
}

/// A database of its own for one test, dropped when the value is.
#[derive(Debug)]
pub struct TestDatabase {
    pub engine: Engine,
    pub name: String,
    /// The Atlas URL of the database, as the superuser.
    pub url: String,
    servers: Servers,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

impl TestDatabase {
    /// Creates a new, empty database on the shared server of `engine`.
    pub fn create(engine: Engine, hint: &str) -> Result<TestDatabase, DbError> {
        let servers = shared()?;
        let sanitized: String = hint
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .take(30)
            .collect();
        let name = format!(
            "t_{sanitized}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let database = TestDatabase {
            engine,
            url: match engine {
                Engine::Postgres => servers.postgres_url_for(&name),
                Engine::MariaDb => servers.mysql_url_for(&name),
            },
            name,
            servers,
        };
        database.admin(&format!("CREATE DATABASE {}", database.name))?;
        Ok(database)
    }

    /// Runs SQL as the superuser against this database; returns what the client printed
    /// (tab-separated rows, no headers).
    pub fn query(&self, sql: &str) -> Result<String, DbError> {
        self.run_sql(Some(&self.name), sql)
    }

    /// Runs SQL as the superuser on the server, outside this database.
    fn admin(&self, sql: &str) -> Result<String, DbError> {
        self.run_sql(None, sql)
    }

    fn run_sql(&self, database: Option<&str>, sql: &str) -> Result<String, DbError> {
        let mut client = match self.engine {
            Engine::Postgres => {
                let url = self
                    .servers
                    .postgres_url_for(database.unwrap_or(POSTGRES_DATABASE));
                let mut client = Command::new("psql");
                client
                    .arg(url)
                    .args(["-X", "-q", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1"])
                    .args(["-c", sql]);
                client
            }
            Engine::MariaDb => {
                let mut client = Command::new("mariadb");
                client
                    .arg("--no-defaults")
                    .args([
                        "-h",
                        "127.0.0.1",
                        "-P",
                        &self.servers.mysql_port.to_string(),
                    ])
                    .args(["-u", USER, "-B", "-N"])
                    .env("MYSQL_PWD", PASSWORD);
                if let Some(database) = database {
                    client.arg(database);
                }
                client.args(["-e", sql]);
                client
            }
        };
        cmd::output(&mut client, QUERY_LIMIT).map_err(command_error(format!(
            "running SQL on {:?} database {}",
            self.engine, self.name
        )))
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Best effort: the whole server directory goes with `db down` anyway.
        let drop = match self.engine {
            Engine::Postgres => format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            Engine::MariaDb => format!("DROP DATABASE IF EXISTS {}", self.name),
        };
        let _ = self.admin(&drop);
    }
}
