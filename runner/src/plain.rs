//! The runner's own plain connections to PostgreSQL and MySQL/MariaDB (the `postgres` and
//! `mysql` crates), for what one query says faster than an Atlas start ([`crate::revisions`])
//! and for what Atlas does not look at ([`crate::devdb`]).
//!
//! The runner connects only where it connects exactly as Atlas does: TLS, sockets, URL
//! parameters it does not know, SQLite and other drivers are [`Unread::NotPlain`], and its
//! callers then leave the work to Atlas (or, for the dev database, say they could not check).
//! Every use is bounded by [`within`], whatever the server does.

use std::time::Duration;

use crate::target;

/// Why the runner did not read the database itself.
#[derive(Debug, thiserror::Error)]
pub enum Unread {
    /// A URL the runner cannot connect to as Atlas would (TLS, a socket, an unknown parameter,
    /// a driver it has no client for).
    #[error("{0}")]
    NotPlain(String),
    #[error("connecting: {0}")]
    Connect(String),
    #[error("querying {schema}: {message}")]
    Query { schema: String, message: String },
    #[error("no answer within {0:?}")]
    Slow(Duration),
}

/// A database URL taken apart as Go's `net/url` does, for the two clients.
#[derive(Debug, PartialEq, Eq)]
pub struct Parts {
    pub user: String,
    pub password: Option<String>,
    pub host: String,
    pub port: Option<u16>,
    /// The path without its `/`, decoded.
    pub path: String,
    /// Decoded query parameters, in order.
    pub query: Vec<(String, String)>,
}

impl Parts {
    /// The value of query parameter `key`, if set.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, value)| value.as_str())
    }
}

/// An open connection of the runner's own (one per use, so its size does not matter).
#[allow(clippy::large_enum_variant)]
pub enum Connection {
    Postgres(::postgres::Client),
    MySql(::mysql::Conn),
}

/// `f(url)` on a thread of its own, within `limit`: a server that accepts connections and
/// never answers is left behind (the clients bound the connection, not every step of the
/// handshake), and the runner exits at the end of its one apply.
pub fn within<T: Send + 'static>(
    limit: Duration,
    f: impl FnOnce() -> Result<T, Unread> + Send + 'static,
) -> Result<T, Unread> {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(f());
    });
    receiver
        .recv_timeout(limit)
        .unwrap_or(Err(Unread::Slow(limit)))
}

/// Connects to `url` as Atlas would, or says why it cannot ([`Unread::NotPlain`]).
pub fn connect(url: &str, limit: Duration) -> Result<(Connection, Parts), Unread> {
    let (scheme, _) = url
        .split_once("://")
        .ok_or_else(|| Unread::NotPlain("not a URL".into()))?;
    let parts = parts(url)?;
    let connection = match scheme {
        "postgres" | "postgresql" => Connection::Postgres(postgres(&parts, limit)?),
        "mysql" | "maria" | "mariadb" => Connection::MySql(mysql(&parts, limit)?),
        _ => {
            return Err(Unread::NotPlain(format!(
                "the runner has no client of its own for {scheme}://"
            )));
        }
    };
    Ok((connection, parts))
}

/// `search_path` bound (one schema), or realm-level; TLS and sockets are Atlas's to handle.
fn postgres(parts: &Parts, limit: Duration) -> Result<::postgres::Client, Unread> {
    check_query(parts, &|key, value| match key {
        "sslmode" => value == "disable",
        "search_path" => !value.contains(','),
        "application_name" | "connect_timeout" => true,
        _ => false,
    })?;
    if parts.param("sslmode").is_none() {
        // Atlas's driver (lib/pq) then requires TLS.
        return Err(Unread::NotPlain("the URL sets no sslmode (TLS)".into()));
    }
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
    config
        .connect(::postgres::NoTls)
        .map_err(|err| Unread::Connect(err.to_string()))
}

/// The database in the path bound (one schema), or realm-level; TLS and sockets are Atlas's.
fn mysql(parts: &Parts, limit: Duration) -> Result<::mysql::Conn, Unread> {
    // Atlas's own defaults (parseTime) and the Go driver's plain-connection setting.
    check_query(parts, &|key, value| match key {
        "tls" => value == "false",
        "parseTime" | "charset" | "timeout" | "readTimeout" | "writeTimeout" => true,
        _ => false,
    })?;
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
    ::mysql::Conn::new(options).map_err(|err| Unread::Connect(err.to_string()))
}

pub fn parts(url: &str) -> Result<Parts, Unread> {
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
pub fn quoted(name: &str, quote: char) -> String {
    let doubled = name.replace(quote, &format!("{quote}{quote}"));
    format!("{quote}{doubled}{quote}")
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

    /// Every URL the runner's own clients would not connect to exactly as Atlas does is
    /// refused before any connection is tried.
    #[test]
    fn urls_needing_what_the_clients_lack_are_not_plain() {
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
            let err = connect(url, Duration::from_secs(1)).err().unwrap();
            assert!(matches!(err, Unread::NotPlain(_)), "{url}: {err}");
        }
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quoted(r#"a"b"#, '"'), r#""a""b""#);
        assert_eq!(quoted("a`b", '`'), "`a``b`");
    }
}
