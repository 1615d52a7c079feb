//! The target and dev database URLs, resolved from the contract and the pod's environment, and a
//! bounded reachability check so an unreachable database fails fast instead of hanging.

use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::redact::Redactor;
use crate::url::{Parts, assemble};
use contract::{Target, Value};

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("the environment variable {0} is not set (its Secret or key may be missing)")]
    MissingEnv(String),
    #[error("cannot reach the database at {host}:{port}: {reason}")]
    Unreachable {
        host: String,
        port: u16,
        reason: String,
    },
}

fn value(value: &Value) -> Result<String, TargetError> {
    match value {
        Value::Literal(text) => Ok(text.clone()),
        Value::Env(name) => env(name),
    }
}

fn env(name: &str) -> Result<String, TargetError> {
    std::env::var(name).map_err(|_| TargetError::MissingEnv(name.to_string()))
}

/// The target's URL; every secret part is remembered by the redactor. None: the resource's own
/// project file names it, and Atlas reads it there.
pub fn url(target: &Target, redactor: &mut Redactor) -> Result<Option<String>, TargetError> {
    let url = match target {
        Target::FromConfig => return Ok(None),
        Target::UrlEnv(name) => env(name)?,
        Target::Credentials(credentials) => {
            let user = credentials.user.as_ref().map(value).transpose()?;
            let password = credentials.password_env.as_deref().map(env).transpose()?;
            if let Some(password) = &password {
                redactor.add(password.clone());
            }
            let host = value(&credentials.host)?;
            assemble(&Parts {
                scheme: &credentials.scheme,
                user: user.as_deref(),
                password: password.as_deref(),
                host: &host,
                port: credentials.port,
                database: credentials.database.as_deref(),
                parameters: &credentials.parameters,
            })
        }
    };
    redactor.add(url.clone());
    if let Some(password) = password_of(&url) {
        redactor.add(password);
    }
    Ok(Some(url))
}

/// A dev database URL from an environment variable.
pub fn dev_url(name: &str, redactor: &mut Redactor) -> Result<String, TargetError> {
    let url = env(name)?;
    redactor.add(url.clone());
    if let Some(password) = password_of(&url) {
        redactor.add(password);
    }
    Ok(url)
}

/// The password part of a URL, decoded, so it is hidden however Atlas quotes it.
fn password_of(url: &str) -> Option<String> {
    let authority = url.split_once("://")?.1;
    let authority = &authority[..authority.find(['/', '?', '#']).unwrap_or(authority.len())];
    let userinfo = &authority[..authority.rfind('@')?];
    let (_, password) = userinfo.split_once(':')?;
    Some(percent_decode(password))
}

pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(byte) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The database driver a dev database must match, from the URL's scheme: `postgres`, `mysql`
/// or `maria`; None for SQLite (an in-memory dev database serves) and unknown schemes.
pub fn server_driver(url: &str) -> Option<&'static str> {
    let scheme = url.split_once("://")?.0;
    match scheme.split('+').next()? {
        "postgres" | "postgresql" => Some("postgres"),
        "mysql" => Some("mysql"),
        "maria" | "mariadb" => Some("maria"),
        _ => None,
    }
}

/// What Atlas connects to behind a URL: one schema, or the whole realm (every schema of the
/// server or database). It decides how Atlas pairs the schemas of the database and of the
/// desired state: a URL bound to one schema diffs that schema with the desired one whatever
/// their names, a realm-level URL diffs schema by schema, by name (a schema only the database
/// has is dropped, `DROP SCHEMA … CASCADE`, with its tables and rows).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Schema,
    Realm,
}

/// The scope Atlas gives `url`, read as Atlas's drivers read it: MySQL and MariaDB are bound to
/// the database in the path, PostgreSQL to a `search_path` parameter, SQLite always to `main`.
/// None for a scheme the runner does not know (the caller must then not assume a binding).
pub fn scope(url: &str) -> Option<Scope> {
    let (scheme, rest) = url.split_once("://")?;
    let bound = |yes: bool| Some(if yes { Scope::Schema } else { Scope::Realm });
    let before_fragment = &rest[..rest.find('#').unwrap_or(rest.len())];
    let (location, query) = before_fragment
        .split_once('?')
        .unwrap_or((before_fragment, ""));
    match scheme.split('+').next()? {
        "sqlite" | "sqlite3" | "libsql" => bound(true),
        "mysql" | "maria" | "mariadb" => {
            let path = location.find('/').map_or("", |at| &location[at + 1..]);
            bound(!path.is_empty())
        }
        "postgres" | "postgresql" => {
            // As Go's `url.Query().Get`: the first `search_path`, decoded.
            let search_path = query
                .split('&')
                .filter_map(|pair| {
                    let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                    (query_decode(key) == "search_path").then(|| query_decode(value))
                })
                .next()
                .unwrap_or_default();
            bound(!search_path.is_empty())
        }
        _ => None,
    }
}

/// The schema `url` is bound to, as [`scope`] reads it: MySQL's and MariaDB's database, the
/// first schema of PostgreSQL's `search_path`, SQLite's `main`. None for a realm-level URL or
/// a scheme the runner does not know.
pub fn bound_schema(url: &str) -> Option<String> {
    if scope(url)? != Scope::Schema {
        return None;
    }
    let (scheme, rest) = url.split_once("://")?;
    let before_fragment = &rest[..rest.find('#').unwrap_or(rest.len())];
    let (location, query) = before_fragment
        .split_once('?')
        .unwrap_or((before_fragment, ""));
    match scheme.split('+').next()? {
        "mysql" | "maria" | "mariadb" => location
            .find('/')
            .map(|at| percent_decode(&location[at + 1..])),
        "postgres" | "postgresql" => query
            .split('&')
            .filter_map(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                (query_decode(key) == "search_path").then(|| query_decode(value))
            })
            .next()
            .map(|path| {
                path.split(',')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_string()
            }),
        _ => Some("main".to_string()),
    }
}

fn query_decode(text: &str) -> String {
    percent_decode(&text.replace('+', " "))
}

/// Waits until the database's port accepts connections, up to `limit` (a sidecar starting).
pub fn wait_reachable(url: &str, limit: Duration) -> Result<(), TargetError> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        match check_reachable(url, Duration::from_secs(2)) {
            Ok(()) => return Ok(()),
            Err(err) if std::time::Instant::now() >= deadline => return Err(err),
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}

/// Host and port of a network URL (`None` for SQLite and other file URLs).
pub fn host_port(url: &str) -> Option<(String, u16)> {
    let (scheme, rest) = url.split_once("://")?;
    let default_port = match scheme.split('+').next()? {
        "postgres" | "postgresql" => 5432,
        "mysql" | "maria" | "mariadb" => 3306,
        _ => return None,
    };
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    if let Some(rest) = host_port.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = after.strip_prefix(':').and_then(|p| p.parse().ok());
        return Some((host.to_string(), port.unwrap_or(default_port)));
    }
    match host_port.rsplit_once(':') {
        Some((host, port)) => Some((host.to_string(), port.parse().ok()?)),
        None => Some((host_port.to_string(), default_port)),
    }
}

/// Opens (and closes) a TCP connection to the database within `limit`, so an address that never
/// answers ends the run with a transient error instead of hanging in the driver.
pub fn check_reachable(url: &str, limit: Duration) -> Result<(), TargetError> {
    let Some((host, port)) = host_port(url) else {
        return Ok(());
    };
    let unreachable = |reason: String| TargetError::Unreachable {
        host: host.clone(),
        port,
        reason,
    };
    let addresses: Vec<_> = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|err| unreachable(format!("the name does not resolve ({err})")))?
        .collect();
    let mut last = String::from("no address");
    for address in addresses {
        match TcpStream::connect_timeout(&address, limit) {
            Ok(_) => return Ok(()),
            Err(err) => last = err.to_string(),
        }
    }
    Err(unreachable(last))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_schema_is_read_as_atlas_reads_it() {
        assert_eq!(
            bound_schema("mysql://u:p@db:3306/app?parseTime=true").as_deref(),
            Some("app")
        );
        assert_eq!(
            bound_schema("postgres://u@db/app?search_path=tenant%2Cpublic&sslmode=disable")
                .as_deref(),
            Some("tenant")
        );
        assert_eq!(bound_schema("sqlite://app.db").as_deref(), Some("main"));
        assert_eq!(bound_schema("postgres://u@db/app"), None);
        assert_eq!(bound_schema("mysql://u@db:3306"), None);
    }

    #[test]
    fn host_and_port_of_urls() {
        assert_eq!(
            host_port("postgres://u:p@db:5433/x?sslmode=disable"),
            Some(("db".into(), 5433))
        );
        assert_eq!(
            host_port("mysql://root:pass@mysql/myapp"),
            Some(("mysql".into(), 3306))
        );
        assert_eq!(
            host_port("maria://[::1]:3307/a"),
            Some(("::1".into(), 3307))
        );
        assert_eq!(host_port("sqlite:///tmp/a.db"), None);
    }

    #[test]
    fn drivers_of_urls() {
        assert_eq!(server_driver("postgres://u@h/db"), Some("postgres"));
        assert_eq!(
            server_driver("mysql://root:pass@mysql:3306/myapp"),
            Some("mysql")
        );
        assert_eq!(server_driver("maria://h/db"), Some("maria"));
        assert_eq!(server_driver("sqlite://file.db"), None);
    }

    #[test]
    fn scopes_of_urls_as_atlas_reads_them() {
        assert_eq!(scope("mysql://root:pass@h:3306/myapp"), Some(Scope::Schema));
        assert_eq!(scope("mysql://root:pass@h:3306/"), Some(Scope::Realm));
        assert_eq!(scope("maria://h?parseTime=true"), Some(Scope::Realm));
        assert_eq!(
            scope("postgres://u:p@h/db?sslmode=disable"),
            Some(Scope::Realm)
        );
        assert_eq!(
            scope("postgres://u:p@h/db?sslmode=disable&search_path=public"),
            Some(Scope::Schema)
        );
        assert_eq!(
            scope("postgres://u@h/db?search_path=&sslmode=disable"),
            Some(Scope::Realm)
        );
        assert_eq!(
            scope("postgres://u@h/db?search%5Fpath=app"),
            Some(Scope::Schema)
        );
        assert_eq!(scope("sqlite://file.db?_fk=1"), Some(Scope::Schema));
        assert_eq!(scope("clickhouse://h/db"), None);
    }

    #[test]
    fn the_password_is_found_decoded() {
        assert_eq!(
            password_of("postgres://u:p%40ss%3Aw%2Frd%23%25@h/db"),
            Some("p@ss:w/rd#%".into())
        );
        assert_eq!(password_of("postgres://u@h/db"), None);
    }
}
