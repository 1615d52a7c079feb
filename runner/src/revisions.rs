//! What the database has applied, read from Atlas's revisions table by the runner itself.
//!
//! Before an apply the runner must know the database's revisions: a database newer than the
//! directory is a protected "migrate down", and a file older than the database's version that
//! it never applied was added out of order (v0.13.1's `migrate apply` skips it silently).
//! `atlas migrate status` says it, but it is a second Atlas start per apply (about 40 ms on a
//! fresh database, 90 ms on one with revisions: Atlas inspects the table first). One query over
//! a plain connection costs a few milliseconds, so the runner asks the table itself where it
//! knows exactly where Atlas keeps it, and leaves every other case to `atlas migrate status`
//! ([`Unread`]): TLS, sockets, URL parameters it does not know, SQLite and other drivers, a
//! custom project file (it may move the table), and any failure (Atlas then says it in its own
//! words, which the reasons are classified from).
//!
//! Where Atlas keeps the table (`atlas_schema_revisions`): in `revisionsSchema` when set, else
//! in the schema the URL is bound to (PostgreSQL's `search_path`, MySQL's database), else, on a
//! realm-level URL, in a schema of its own named `atlas_schema_revisions`. A missing schema or
//! table is a database nothing was applied to.

use std::time::Duration;

use serde::Deserialize;

use crate::plain::{self, Connection, quoted};
use crate::target::{self, Scope};

/// Atlas's table, in every schema it may live in.
const TABLE: &str = "atlas_schema_revisions";

/// One row of the revisions table: the parts the runner reads (named as `atlas migrate status`
/// prints them, which it also reads).
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Revision {
    #[serde(default)]
    pub version: String,
    /// Statements of the file that ran, of `total`.
    #[serde(default)]
    pub applied: u32,
    #[serde(default)]
    pub total: u32,
    #[serde(default)]
    pub error: String,
}

impl Revision {
    /// Whether the file went through whole: a file that failed half-way on a database that does
    /// not roll DDL back (MySQL, MariaDB) leaves a revision with its error.
    pub fn is_complete(&self) -> bool {
        self.error.is_empty() && self.applied >= self.total
    }
}

pub use crate::plain::Unread;

/// The revisions of the database behind `url`, ordered by version as Atlas orders them, within
/// `limit` whatever the server does.
pub fn read(
    url: &str,
    revisions_schema: Option<&str>,
    limit: Duration,
) -> Result<Vec<Revision>, Unread> {
    let (url, revisions_schema) = (url.to_string(), revisions_schema.map(str::to_string));
    plain::within(limit, move || {
        read_now(&url, revisions_schema.as_deref(), limit)
    })
}

fn read_now(
    url: &str,
    revisions_schema: Option<&str>,
    limit: Duration,
) -> Result<Vec<Revision>, Unread> {
    let (connection, parts) = plain::connect(url, limit)?;
    let mut revisions = match connection {
        Connection::Postgres(client) => {
            let schema = match revisions_schema {
                Some(schema) => schema.to_string(),
                None => match target::scope(url) {
                    Some(Scope::Schema) => parts.param("search_path").unwrap_or_default().into(),
                    _ => TABLE.to_string(),
                },
            };
            postgres::read(client, &schema)?
        }
        Connection::MySql(connection) => {
            let schema = match revisions_schema {
                Some(schema) => schema.to_string(),
                None if !parts.path.is_empty() => parts.path.clone(),
                None => TABLE.to_string(),
            };
            mysql::read(connection, &schema)?
        }
    };
    revisions.sort_by(|a, b| version_key(&a.version).cmp(&version_key(&b.version)));
    Ok(revisions)
}

/// Version strings compare by length first: Atlas versions are digits of any length.
pub fn version_key(version: &str) -> (usize, &str) {
    (version.len(), version)
}

fn to_u32(value: i64) -> u32 {
    u32::try_from(value.max(0)).unwrap_or(u32::MAX)
}

fn query_error(schema: &str, message: impl ToString) -> Unread {
    Unread::Query {
        schema: format!("{schema}.{TABLE}"),
        message: message.to_string(),
    }
}

mod postgres {
    use super::*;

    pub fn read(mut client: ::postgres::Client, schema: &str) -> Result<Vec<Revision>, Unread> {
        let query = format!(
            "SELECT version, applied, total, coalesce(error, '') FROM {}.{}",
            quoted(schema, '"'),
            quoted(TABLE, '"')
        );
        let rows = match client.query(query.as_str(), &[]) {
            Ok(rows) => rows,
            Err(err) => {
                let missing = err.code().is_some_and(|code| {
                    *code == ::postgres::error::SqlState::UNDEFINED_TABLE
                        || *code == ::postgres::error::SqlState::INVALID_SCHEMA_NAME
                });
                if missing {
                    return Ok(Vec::new());
                }
                return Err(query_error(schema, err));
            }
        };
        rows.iter()
            .map(|row| {
                Ok(Revision {
                    version: row.try_get(0).map_err(|err| query_error(schema, err))?,
                    applied: to_u32(row.try_get(1).map_err(|err| query_error(schema, err))?),
                    total: to_u32(row.try_get(2).map_err(|err| query_error(schema, err))?),
                    error: row.try_get(3).map_err(|err| query_error(schema, err))?,
                })
            })
            .collect()
    }
}

mod mysql {
    use super::*;
    use ::mysql::prelude::Queryable;

    /// MySQL 8.0: table doesn't exist; unknown database.
    const NO_SUCH_TABLE: u16 = 1146;
    const NO_SUCH_DATABASE: u16 = 1049;

    pub fn read(mut connection: ::mysql::Conn, schema: &str) -> Result<Vec<Revision>, Unread> {
        let query = format!(
            "SELECT version, applied, total, coalesce(error, '') FROM {}.{}",
            quoted(schema, '`'),
            quoted(TABLE, '`')
        );
        match connection.query_map(query, |(version, applied, total, error)| Revision {
            version,
            applied: to_u32(applied),
            total: to_u32(total),
            error,
        }) {
            Ok(revisions) => Ok(revisions),
            Err(::mysql::Error::MySqlError(err))
                if err.code == NO_SUCH_TABLE || err.code == NO_SUCH_DATABASE =>
            {
                Ok(Vec::new())
            }
            Err(err) => Err(query_error(schema, err)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every URL the runner's own clients would not connect to exactly as Atlas does is left to
    /// `atlas migrate status`.
    #[test]
    fn urls_needing_what_the_clients_lack_are_left_to_atlas() {
        for url in [
            "postgres://u:p@h:5432/db?sslmode=require",
            "mysql://u:p@h:3306/db?tls=true",
            "sqlite://file.db",
        ] {
            let err = read(url, None, Duration::from_secs(1)).unwrap_err();
            assert!(matches!(err, Unread::NotPlain(_)), "{url}: {err}");
        }
    }
}
