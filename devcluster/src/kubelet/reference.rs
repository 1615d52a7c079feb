//! Image references as a runtime reads them: `[registry[:port]/]path[:tag][@digest]`, split
//! into the parts the kubelet's image table ([`super::image`]) and the database images
//! ([`super::database`]) pick programs by.

/// The repository part of an image reference's last segment: `docker.io/library/busybox:1.36` →
/// `busybox`.
pub fn short_name(image: &str) -> &str {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    last.split(':').next().unwrap_or(last)
}

/// An image reference's repository: `ghcr.io/a/b:v1@sha256:…` → `ghcr.io/a/b` (a registry's
/// port, `registry:5000/b`, is not a tag).
pub fn repository(image: &str) -> &str {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last_slash = without_digest.rfind('/').map_or(0, |at| at + 1);
    match without_digest[last_slash..].find(':') {
        Some(colon) => &without_digest[..last_slash + colon],
        None => without_digest,
    }
}

/// An image reference's tag: `postgres:16-alpine` → `16-alpine`; none for `postgres` or
/// `registry:5000/postgres`.
pub fn tag(image: &str) -> Option<&str> {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    last.split_once(':').map(|(_, tag)| tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names() {
        assert_eq!(short_name("busybox"), "busybox");
        assert_eq!(short_name("docker.io/library/busybox:1.36"), "busybox");
        assert_eq!(short_name("registry:5000/debian@sha256:abc"), "debian");
        assert_eq!(short_name("ghcr.io/atlas-operator/runner:v1"), "runner");
    }

    #[test]
    fn repositories() {
        assert_eq!(
            repository("ghcr.io/atlas-operator/atlas-operator:dev"),
            "ghcr.io/atlas-operator/atlas-operator"
        );
        assert_eq!(
            repository("registry:5000/atlas-operator"),
            "registry:5000/atlas-operator"
        );
        assert_eq!(repository("a/b:1@sha256:abc"), "a/b");
        assert_eq!(repository("busybox"), "busybox");
    }

    #[test]
    fn tags() {
        assert_eq!(tag("postgres:16-alpine"), Some("16-alpine"));
        assert_eq!(tag("registry:5000/postgres"), None);
        assert_eq!(tag("registry:5000/mariadb:11@sha256:abc"), Some("11"));
        assert_eq!(tag("mysql"), None);
    }
}
