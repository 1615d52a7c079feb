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

/// Why the runner did not read the table itself: `atlas migrate status` is asked instead.
#[derive(Debug, thiserror::Error)]
pub enum Unread {
    /// A URL the runner cannot connect to as Atlas would (TLS, a socket, an unknown parameter,
    /// a driver it has no client for).
    #[error("{0}")]
    NotPlain(String),
    #[error("connecting: {0}")]
    Connect(String),
    #[error("querying {schema}.{TABLE}: {message}")]
    Query { schema: String, message: String },
    #[error("no answer within {0:?}")]
    Slow(Duration),
}

/// The revisions of the database behind `url`, ordered by version as Atlas orders them, within
/// `limit` whatever the server does: a server that accepts connections and never answers is
/// left to Atlas, whose calls the runner bounds (the clients bound the connection, not every
/// step of the handshake).
pub fn read(
    url: &str,
    revisions_schema: Option<&str>,
    limit: Duration,
) -> Result<Vec<Revision>, Unread> {
    let (url, revisions_schema) = (url.to_string(), revisions_schema.map(str::to_string));
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(read_now(&url, revisions_schema.as_deref(), limit));
    });
    // A thread still waiting is left behind: the runner exits at the end of its one apply.
    receiver
        .recv_timeout(limit)
        .unwrap_or(Err(Unread::Slow(limit)))
}

fn read_now(
    url: &str,
    revisions_schema: Option<&str>,
    limit: Duration,
) -> Result<Vec<Revision>, Unread> {
    let (scheme, _) = url
        .split_once("://")
        .ok_or_else(|| Unread::NotPlain("not a URL".into()))?;
    let mut revisions = match scheme {
        "postgres" | "postgresql" => postgres::read(url, revisions_schema, limit)?,
        "mysql" | "maria" | "mariadb" => mysql::read(url, revisions_schema, limit)?,
        _ => {
            return Err(Unread::NotPlain(format!(
                "the runner has no client of its own for {scheme}://"
            )));
        }
    };
    revisions.sort_by(|a, b| version_key(&a.version).cmp(&version_key(&b.version)));
    Ok(revisions)
}

/// Version strings compare by length first: Atlas versions are digits of any length.
pub fn version_key(version: &str) -> (usize, &str) {
    (version.len(), version)
}

/// A database URL taken apart as Go's `net/url` does, for the two clients below.
#[derive(Debug, PartialEq, Eq)]
struct Parts {
    user: String,
    password: Option<String>,
    host: String,
    port: Option<u16>,
    /// The path without its `/`, decoded.
    path: String,
    /// Decoded query parameters, in order.
    query: Vec<(String, String)>,
}

fn parts(url: &str) -> Result<Parts, Unread> {
    let not_plain = |why: &str| Unread::NotPlain(why.to_string());
    let (_, rest) = url
        .split_once("://")
        .ok_or_else(|| not_plain("not a URL"))?;
    if rest.contains('#') {
        return Err(not_plain("the URL has a fragment"));
    }
    let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, path) = location.split_once('/').unwrap_or((location, ""));
    let (userinfo, host_port) = match authority.rsplit_once('@') {
        Some((userinfo, host_port)) => (Some(userinfo), host_port),
        None => (None, authority),
    };
    let (user, password) = match userinfo {
        None => (String::new(), None),
        Some(info) => match info.split_once(':') {
            Some((user, password)) => (decode(user), Some(decode(password))),
            None => (decode(info), None),
        },
    };
    let (host, port) = if host_port.starts_with('[') {
        let (host, port) = target::host_port(url).ok_or_else(|| not_plain("no host"))?;
        (host, Some(port))
    } else {
        match host_port.rsplit_once(':') {
            Some((host, port)) => (
                host.to_string(),
                Some(
                    port.parse()
                        .map_err(|_| not_plain("the port is not a number"))?,
                ),
            ),
            None => (host_port.to_string(), None),
        }
    };
    if host.is_empty() {
        return Err(not_plain("no host (a socket)"));
    }
    let query = query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (
                decode(&key.replace('+', " ")),
                decode(&value.replace('+', " ")),
            )
        })
        .collect();
    Ok(Parts {
        user,
        password,
        host,
        port,
        path: decode(path),
        query,
    })
}

fn decode(text: &str) -> String {
    target::percent_decode(text)
}

/// Refuses a URL with a parameter outside `known`, or one of `known` with another value than
/// those its check allows: the runner must connect where, and as, Atlas does.
fn check_query(parts: &Parts, allowed: &dyn Fn(&str, &str) -> bool) -> Result<(), Unread> {
    match parts.query.iter().find(|(key, value)| !allowed(key, value)) {
        None => Ok(()),
        Some((key, value)) => Err(Unread::NotPlain(format!(
            "the URL sets {key}={value}, which the runner's own client does not follow"
        ))),
    }
}

/// `"name"` for PostgreSQL, `` `name` `` for MySQL: identifiers quoted, their quotes doubled.
fn quoted(name: &str, quote: char) -> String {
    let doubled = name.replace(quote, &format!("{quote}{quote}"));
    format!("{quote}{doubled}{quote}")
}

fn to_u32(value: i64) -> u32 {
    u32::try_from(value.max(0)).unwrap_or(u32::MAX)
}

mod postgres {
    use super::*;

    /// `search_path` bound (one schema), or realm-level; TLS and sockets are Atlas's to handle.
    pub fn read(
        url: &str,
        revisions_schema: Option<&str>,
        limit: Duration,
    ) -> Result<Vec<Revision>, Unread> {
        let parts = parts(url)?;
        check_query(&parts, &|key, value| match key {
            "sslmode" => value == "disable",
            "search_path" => !value.contains(','),
            "application_name" | "connect_timeout" => true,
            _ => false,
        })?;
        if !parts.query.iter().any(|(key, _)| key == "sslmode") {
            // Atlas's driver (lib/pq) then requires TLS.
            return Err(Unread::NotPlain("the URL sets no sslmode (TLS)".into()));
        }
        let schema = match revisions_schema {
            Some(schema) => schema.to_string(),
            None => match target::scope(url) {
                Some(Scope::Schema) => parts
                    .query
                    .iter()
                    .find(|(key, _)| key == "search_path")
                    .map(|(_, value)| value.clone())
                    .unwrap_or_default(),
                _ => TABLE.to_string(),
            },
        };
        let mut config = ::postgres::Config::new();
        config
            .host(&parts.host)
            .port(parts.port.unwrap_or(5432))
            .user(&parts.user)
            .dbname(if parts.path.is_empty() {
                &parts.user
            } else {
                &parts.path
            })
            .application_name("atlas-runner")
            .connect_timeout(limit);
        if let Some(password) = &parts.password {
            config.password(password);
        }
        let mut client = config
            .connect(::postgres::NoTls)
            .map_err(|err| Unread::Connect(err.to_string()))?;
        let query = format!(
            "SELECT version, applied, total, coalesce(error, '') FROM {}.{}",
            quoted(&schema, '"'),
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
                return Err(Unread::Query {
                    schema,
                    message: err.to_string(),
                });
            }
        };
        rows.iter()
            .map(|row| {
                Ok(Revision {
                    version: row.try_get(0).map_err(|err| query_error(&schema, err))?,
                    applied: to_u32(row.try_get(1).map_err(|err| query_error(&schema, err))?),
                    total: to_u32(row.try_get(2).map_err(|err| query_error(&schema, err))?),
                    error: row.try_get(3).map_err(|err| query_error(&schema, err))?,
                })
            })
            .collect()
    }

    fn query_error(schema: &str, err: ::postgres::Error) -> Unread {
        Unread::Query {
            schema: schema.to_string(),
            message: err.to_string(),
        }
    }
}

mod mysql {
    use super::*;
    use ::mysql::prelude::Queryable;

    /// MySQL 8.0: table doesn't exist; unknown database.
    const NO_SUCH_TABLE: u16 = 1146;
    const NO_SUCH_DATABASE: u16 = 1049;

    /// The database in the path bound (one schema), or realm-level; TLS and sockets are Atlas's.
    pub fn read(
        url: &str,
        revisions_schema: Option<&str>,
        limit: Duration,
    ) -> Result<Vec<Revision>, Unread> {
        let parts = parts(url)?;
        // Atlas's own defaults (parseTime) and the Go driver's plain-connection setting.
        check_query(&parts, &|key, value| match key {
            "tls" => value == "false",
            "parseTime" | "charset" | "timeout" | "readTimeout" | "writeTimeout" => true,
            _ => false,
        })?;
        let schema = match revisions_schema {
            Some(schema) => schema.to_string(),
            None if !parts.path.is_empty() => parts.path.clone(),
            None => TABLE.to_string(),
        };
        let options = ::mysql::OptsBuilder::new()
            .ip_or_hostname(Some(parts.host.clone()))
            .tcp_port(parts.port.unwrap_or(3306))
            .user(Some(parts.user.clone()))
            .pass(parts.password.clone())
            // Never "upgrade" to a socket: connect where Atlas does.
            .prefer_socket(false)
            .tcp_connect_timeout(Some(limit))
            .read_timeout(Some(limit))
            .write_timeout(Some(limit));
        let mut connection =
            ::mysql::Conn::new(options).map_err(|err| Unread::Connect(err.to_string()))?;
        let query = format!(
            "SELECT version, applied, total, coalesce(error, '') FROM {}.{}",
            quoted(&schema, '`'),
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
            Err(err) => Err(Unread::Query {
                schema,
                message: err.to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_taken_apart_as_go_does() {
        let p =
            parts("postgres://us%40er:p%3Ass@db.example:5433/app?sslmode=disable&search_path=a+b")
                .unwrap();
        assert_eq!(p.user, "us@er");
        assert_eq!(p.password.as_deref(), Some("p:ss"));
        assert_eq!(p.host, "db.example");
        assert_eq!(p.port, Some(5433));
        assert_eq!(p.path, "app");
        assert_eq!(
            p.query,
            vec![
                ("sslmode".into(), "disable".into()),
                ("search_path".into(), "a b".into())
            ]
        );
        let p = parts("mysql://root@[::1]/").unwrap();
        assert_eq!((p.host.as_str(), p.port), ("::1", Some(3306)));
        assert!(parts("postgres:///db?host=/run/postgresql").is_err());
    }

    /// Every URL the runner's own clients would not connect to exactly as Atlas does is left to
    /// `atlas migrate status`.
    #[test]
    fn urls_needing_what_the_clients_lack_are_left_to_atlas() {
        for url in [
            "postgres://u:p@h:5432/db",
            "postgres://u:p@h:5432/db?sslmode=require",
            "postgres://u:p@h:5432/db?sslmode=disable&search_path=a,b",
            "postgres://u:p@h:5432/db?sslmode=disable&host=/tmp",
            "mysql://u:p@h:3306/db?tls=true",
            "mysql://u:p@h:3306/db?multiStatements=true",
            "mysql+unix:///run/mysqld.sock",
            "sqlite://file.db",
            "clickhouse://h:9000/db",
        ] {
            let err = read(url, None, Duration::from_secs(1)).unwrap_err();
            assert!(matches!(err, Unread::NotPlain(_)), "{url}: {err}");
        }
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quoted(r#"a"b"#, '"'), r#""a""b""#);
        assert_eq!(quoted("a`b", '`'), "`a``b`");
    }
}
