//! Assembling a database URL from `credentials`, with correct percent-encoding, so a password
//! like `p@ss:w/rd#%` reaches the database intact.

use std::collections::BTreeMap;
use std::fmt::Write;

/// Percent-encodes a user name or password for the userinfo part of a URL: everything but
/// RFC 3986's unreserved characters.
pub fn encode_userinfo(text: &str) -> String {
    encode(text, |b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

/// Percent-encodes a path segment (the database name) or a query key or value.
fn encode_component(text: &str) -> String {
    encode(text, |b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

fn encode(text: &str, keep: impl Fn(u8) -> bool) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if keep(byte) {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// The parts, resolved to values.
pub struct Parts<'a> {
    pub scheme: &'a str,
    pub user: Option<&'a str>,
    pub password: Option<&'a str>,
    pub host: &'a str,
    pub port: Option<i32>,
    pub database: Option<&'a str>,
    pub parameters: &'a BTreeMap<String, String>,
}

/// `scheme://user:password@host:port/database?key=value&…`.
pub fn assemble(parts: &Parts) -> String {
    let mut url = format!("{}://", parts.scheme);
    if let Some(user) = parts.user {
        url.push_str(&encode_userinfo(user));
        if let Some(password) = parts.password {
            url.push(':');
            url.push_str(&encode_userinfo(password));
        }
        url.push('@');
    }
    // An IPv6 literal needs brackets to keep its colons apart from the port's.
    if parts.host.contains(':') && !parts.host.starts_with('[') {
        let _ = write!(url, "[{}]", parts.host);
    } else {
        url.push_str(parts.host);
    }
    if let Some(port) = parts.port {
        let _ = write!(url, ":{port}");
    }
    if let Some(database) = parts.database {
        url.push('/');
        url.push_str(&encode_component(database));
    }
    let query: Vec<String> = parts
        .parameters
        .iter()
        .map(|(k, v)| format!("{}={}", encode_component(k), encode_component(v)))
        .collect();
    if !query.is_empty() {
        url.push('?');
        url.push_str(&query.join("&"));
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_characters_are_encoded() {
        let parameters = [("sslmode".to_string(), "disable".to_string())].into();
        let url = assemble(&Parts {
            scheme: "postgres",
            user: Some("app user"),
            password: Some("p@ss:w/rd#%"),
            host: "db.tenant-a.svc",
            port: Some(5432),
            database: Some("app"),
            parameters: &parameters,
        });
        assert_eq!(
            url,
            "postgres://app%20user:p%40ss%3Aw%2Frd%23%25@db.tenant-a.svc:5432/app?sslmode=disable"
        );
    }

    #[test]
    fn optional_parts_are_left_out() {
        let url = assemble(&Parts {
            scheme: "mysql",
            user: Some("root"),
            password: None,
            host: "::1",
            port: None,
            database: None,
            parameters: &BTreeMap::new(),
        });
        assert_eq!(url, "mysql://root@[::1]");
    }
}
