//! Keeping secrets out of everything the runner prints or reports.
//!
//! Two layers, because either alone misses something: every `scheme://user:password@` in a text
//! loses its password, and every secret value the runner knows (the password, the whole URL, the
//! Atlas Cloud token) is replaced wherever it appears, even where Atlas quotes it without a URL
//! around it.

/// What a hidden value is replaced with.
pub const MASK: &str = "xxxxx";

/// Redacts texts before they are printed or reported.
#[derive(Clone, Debug, Default)]
pub struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    /// Remembers a secret value; values too short to be told apart from ordinary text (a
    /// password of one or two characters) are hidden by the URL rule only.
    pub fn add(&mut self, secret: impl Into<String>) {
        let secret = secret.into();
        if secret.len() >= 3 && !self.secrets.contains(&secret) {
            self.secrets.push(secret);
            // Longest first, so a URL is replaced whole before the password inside it.
            self.secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        }
    }

    pub fn redact(&self, text: &str) -> String {
        let mut out = redact_urls(text);
        for secret in &self.secrets {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), MASK);
            }
            let encoded = crate::url::encode_userinfo(secret);
            if encoded != *secret && out.contains(encoded.as_str()) {
                out = out.replace(encoded.as_str(), MASK);
            }
        }
        out
    }
}

/// Replaces the password of every `scheme://user:password@host` in `text` with [`MASK`].
pub fn redact_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("://") {
        let (before, after) = rest.split_at(start + 3);
        out.push_str(before);
        // The authority ends at the first '/', '?', '#' or whitespace; a password ends at its
        // last '@' within it (an unencoded '@' in a password must not leak the rest).
        let end = after
            .find(|c: char| c == '/' || c == '?' || c == '#' || c.is_whitespace() || c == '"')
            .unwrap_or(after.len());
        let authority = &after[..end];
        match (authority.rfind('@'), authority.find(':')) {
            (Some(at), Some(colon)) if colon < at => {
                out.push_str(&authority[..colon + 1]);
                out.push_str(MASK);
                out.push_str(&authority[at..]);
            }
            _ => out.push_str(authority),
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_urls_are_masked() {
        assert_eq!(
            redact_urls("connecting to postgres://root:pass@db:5432/app?sslmode=disable failed"),
            "connecting to postgres://root:xxxxx@db:5432/app?sslmode=disable failed"
        );
        assert_eq!(
            redact_urls("mysql://u:p@ss@h/db and sqlite://file.db"),
            "mysql://u:xxxxx@h/db and sqlite://file.db"
        );
        assert_eq!(redact_urls("no url here"), "no url here");
        assert_eq!(
            redact_urls("postgres://user@host/db"),
            "postgres://user@host/db"
        );
    }

    #[test]
    fn known_secrets_are_masked_anywhere() {
        let mut redactor = Redactor::default();
        redactor.add("p@ss:w/rd#%");
        let text = "pq: password authentication failed for p@ss:w/rd#% and p%40ss%3Aw%2Frd%23%25";
        let out = redactor.redact(text);
        assert!(!out.contains("p@ss"), "{out}");
        assert!(!out.contains("p%40ss"), "{out}");
    }
}
