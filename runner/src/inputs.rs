//! The mounted inputs: read, checked against the digest the controller hashed, and copied into
//! the runner's private working directory for Atlas.
//!
//! A ConfigMap volume holds each key as a symlink into `..data/` (itself a symlink to a
//! timestamped directory, swapped atomically on update); following the symlinks and skipping
//! the dot-entries reads exactly the ConfigMap's keys.

use std::fs;
use std::path::{Path, PathBuf};

use contract::digest_files;

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("the mounted input {path} is missing: {source}")]
    Missing {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the mounted directory {0} holds no files")]
    Empty(String),
    #[error(
        "the mounted inputs changed after this Job was created (digest {found}, expected \
         {expected}); a newer Job applies the new content"
    )]
    Changed { expected: String, found: String },
    #[error("writing the working copy {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// The files of a mounted directory, by name, in name order.
pub fn read_dir(dir: &Path) -> Result<Vec<(String, Vec<u8>)>, InputError> {
    let missing = |source| InputError::Missing {
        path: dir.display().to_string(),
        source,
    };
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).map_err(missing)? {
        let entry = entry.map_err(missing)?;
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with('.') {
            continue;
        }
        // `metadata` follows symlinks: a ConfigMap key is a link to a regular file.
        let path = entry.path();
        let Ok(meta) = fs::metadata(&path) else {
            continue;
        };
        if meta.is_file() {
            let content = fs::read(&path).map_err(|source| InputError::Missing {
                path: path.display().to_string(),
                source,
            })?;
            files.push((name, content));
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(InputError::Empty(dir.display().to_string()));
    }
    Ok(files)
}

/// One mounted file, by its file name.
pub fn read_file(path: &Path) -> Result<(String, Vec<u8>), InputError> {
    let content = fs::read(path).map_err(|source| InputError::Missing {
        path: path.display().to_string(),
        source,
    })?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    Ok((name, content))
}

/// Refuses inputs whose digest is not the one the controller computed.
pub fn verify(files: &[(String, Vec<u8>)], expected: &str) -> Result<(), InputError> {
    let found = digest_files(files.iter().map(|(n, c)| (n.as_str(), c.as_slice())));
    if found != expected {
        return Err(InputError::Changed {
            expected: expected.to_string(),
            found,
        });
    }
    Ok(())
}

/// Writes `files` into `dir` (created), byte for byte.
pub fn write_copy(dir: &Path, files: &[(String, Vec<u8>)]) -> Result<PathBuf, InputError> {
    let write_err = |path: &Path, source| InputError::Write {
        path: path.display().to_string(),
        source,
    };
    fs::create_dir_all(dir).map_err(|e| write_err(dir, e))?;
    for (name, content) in files {
        let path = dir.join(name);
        fs::write(&path, content).map_err(|e| write_err(&path, e))?;
    }
    Ok(dir.to_path_buf())
}

/// A private working directory (mode 0700), removed when dropped.
pub struct WorkDir(PathBuf);

impl WorkDir {
    pub fn create(parent: &Path) -> Result<WorkDir, InputError> {
        use std::os::unix::fs::DirBuilderExt;
        let path = parent.join(format!("atlas-runner-{}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::DirBuilder::new()
            .mode(0o700)
            .recursive(true)
            .create(&path)
            .map_err(|source| InputError::Write {
                path: path.display().to_string(),
                source,
            })?;
        Ok(WorkDir(path))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory laid out as the kubelet lays out a ConfigMap volume.
    #[test]
    fn a_configmap_volume_reads_as_its_keys() {
        let root = std::env::temp_dir().join(format!("cm-volume-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let stamp = root.join("..2026_11_23_17_00_00.123");
        fs::create_dir_all(&stamp).unwrap();
        fs::write(stamp.join("1.sql"), "create table t (id int);\n").unwrap();
        fs::write(stamp.join("atlas.sum"), "h1:x\n").unwrap();
        std::os::unix::fs::symlink("..2026_11_23_17_00_00.123", root.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/1.sql", root.join("1.sql")).unwrap();
        std::os::unix::fs::symlink("..data/atlas.sum", root.join("atlas.sum")).unwrap();

        let files = read_dir(&root).unwrap();
        let names: Vec<_> = files.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["1.sql", "atlas.sum"]);
        let digest = digest_files(files.iter().map(|(n, c)| (n.as_str(), c.as_slice())));
        verify(&files, &digest).unwrap();
        assert!(matches!(
            verify(&files, "other"),
            Err(InputError::Changed { .. })
        ));
        fs::remove_dir_all(root).unwrap();
    }
}
