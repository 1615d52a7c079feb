//! The digest of a Job's inputs: the controller computes it from the ConfigMap data it mounts,
//! the runner from the mounted files, and the runner refuses files that no longer match (a
//! ConfigMap edited after the Job was made).

use sha2::{Digest, Sha256};

/// sha256 (hex) over each file's name and content, in name order, each prefixed by its length
/// so that bytes cannot move between a name and a content unnoticed.
pub fn digest_files<'a>(files: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> String {
    let mut files: Vec<_> = files.into_iter().collect();
    files.sort_by_key(|(name, _)| *name);
    let mut hasher = Sha256::new();
    for (name, content) in files {
        hasher.update((name.len() as u64).to_be_bytes());
        hasher.update(name.as_bytes());
        hasher.update((content.len() as u64).to_be_bytes());
        hasher.update(content);
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_depends_on_names_and_contents_not_order() {
        let a = digest_files([("1.sql", &b"a"[..]), ("atlas.sum", &b"b"[..])]);
        let b = digest_files([("atlas.sum", &b"b"[..]), ("1.sql", &b"a"[..])]);
        assert_eq!(a, b);
        assert_ne!(
            a,
            digest_files([("1.sql", &b"a"[..]), ("atlas.sum", &b"c"[..])])
        );
        // Moving bytes between name and content changes the digest.
        assert_ne!(
            digest_files([("ab", &b""[..])]),
            digest_files([("a", &b"b"[..])])
        );
    }
}
