//! Atlas's `atlas.sum`, recomputed, to name the file a checksum mismatch is about: Atlas itself
//! only says that the directory does not match.
//!
//! The format: a first line `h1:<base64 sha256>` over the per-file entries, then a line
//! `<file> h1:<hash>` per `.sql` file in name order, where each file's hash is the running
//! sha256 over every file name and content up to and including that file.

use sha2::{Digest, Sha256};

/// The first `.sql` file whose line in `atlas.sum` is missing or differs, or a line for a file
/// that is gone. None when everything matches or there is no `atlas.sum`.
pub fn first_mismatch(files: &[(String, Vec<u8>)]) -> Option<String> {
    let sum = files
        .iter()
        .find(|(name, _)| name == "atlas.sum")
        .map(|(_, content)| String::from_utf8_lossy(content).into_owned())?;
    let recorded: Vec<(&str, &str)> = sum
        .lines()
        .skip(1)
        .filter_map(|line| line.rsplit_once(' '))
        .collect();
    let computed = entries(files);
    for (name, hash) in &computed {
        match recorded.iter().find(|(n, _)| n == name) {
            Some((_, h)) if h == hash => {}
            _ => return Some(name.clone()),
        }
    }
    recorded
        .iter()
        .find(|(n, _)| !computed.iter().any(|(name, _)| name == n))
        .map(|(n, _)| n.to_string())
}

/// `(file, "h1:…")` for every `.sql` file, as Atlas computes them.
pub fn entries(files: &[(String, Vec<u8>)]) -> Vec<(String, String)> {
    let mut sql: Vec<&(String, Vec<u8>)> = files
        .iter()
        .filter(|(name, _)| name.ends_with(".sql"))
        .collect();
    sql.sort_by(|a, b| a.0.cmp(&b.0));
    let mut running = Sha256::new();
    sql.into_iter()
        .map(|(name, content)| {
            running.update(name.as_bytes());
            running.update(content);
            (
                name.clone(),
                format!("h1:{}", base64(&running.clone().finalize())),
            )
        })
        .collect()
}

/// The first line of `atlas.sum`.
pub fn total(entries: &[(String, String)]) -> String {
    let mut hasher = Sha256::new();
    for (name, hash) in entries {
        hasher.update(name.as_bytes());
        hasher.update(hash.trim_start_matches("h1:").as_bytes());
    }
    format!("h1:{}", base64(&hasher.finalize()))
}

/// The whole `atlas.sum` of a directory, as `atlas migrate hash` writes it.
pub fn file(files: &[(String, Vec<u8>)]) -> String {
    let entries = entries(files);
    let mut text = format!("{}\n", total(&entries));
    for (name, hash) in &entries {
        text.push_str(&format!("{name} {hash}\n"));
    }
    text
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use devcluster::seed;

    fn seed() -> Vec<(String, Vec<u8>)> {
        vec![
            (
                seed::MIGRATION_FILE.into(),
                seed::MIGRATION_SQL.as_bytes().to_vec(),
            ),
            ("atlas.sum".into(), seed::MIGRATION_SUM.as_bytes().to_vec()),
        ]
    }

    #[test]
    fn the_seed_directory_hashes_as_its_atlas_sum_says() {
        let entries = entries(&seed());
        assert_eq!(
            entries,
            [(
                "20230316085611.sql".to_string(),
                "h1:ldFr73m6ZQzNi8q9dVJsOU/ZHmkBo4Sax03AaL0VUUs=".to_string()
            )]
        );
        assert_eq!(
            total(&entries),
            "h1:FwM0ApKo8xhcZFrSlpa6dYjvi0fnDPo/aZSzajtbHLc="
        );
        assert_eq!(first_mismatch(&seed()), None);
        assert_eq!(file(&seed()), seed::MIGRATION_SUM);
    }

    #[test]
    fn the_edited_or_added_file_is_named() {
        let mut edited = seed();
        edited[0].1 = seed::MIGRATION_SQL.replace("255", "1024").into_bytes();
        assert_eq!(
            first_mismatch(&edited).as_deref(),
            Some("20230316085611.sql")
        );
        let mut added = seed();
        added.push(("20230316085612.sql".into(), b"select 1;\n".to_vec()));
        assert_eq!(
            first_mismatch(&added).as_deref(),
            Some("20230316085612.sql")
        );
    }

    #[test]
    fn base64_pads() {
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
    }
}
