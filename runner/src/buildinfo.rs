//! The version the Atlas binary records of itself, read from the file: Go writes its build
//! information (main module, its version, the `-ldflags` it was built with) into an ELF section,
//! `.go.buildinfo`, which `go version -m` and Atlas's own `atlas version` read.
//!
//! Reading it costs a few small reads, where `atlas version` is a process start (~30 ms of CPU
//! on a 2-core node beside the apply's own Atlas). The version is only reported, never used to
//! decide what Atlas can do: where the file does not say (not ELF, a development build with no
//! version in its flags), the runner asks `atlas version` as before.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

const MAGIC: &[u8] = b"\xff Go buildinf:";
/// Go 1.18+: the version and module strings follow the header inline.
const FLAG_INLINE: u8 = 0x2;
/// No build information section is this large; a bigger one is not Go's.
const SECTION_LIMIT: u64 = 1 << 20;

/// `v0.13.1` for a binary whose build information names its version (the main module's, or
/// the one its `-ldflags` set), None otherwise.
pub fn version(binary: &Path) -> Option<String> {
    let info = module_info(binary)?;
    main_version(&info)
}

/// The main module's version, else a `…version=vX` its `-ldflags` set (how release builds
/// stamp it): `(devel)` and empty versions say nothing.
fn main_version(info: &str) -> Option<String> {
    let stamped = |version: &str| {
        version.starts_with('v') && version[1..].starts_with(|c: char| c.is_ascii_digit())
    };
    let from_module = info.lines().find_map(|line| {
        let mut fields = line.split('\t');
        (fields.next() == Some("mod"))
            .then(|| fields.nth(1))
            .flatten()
            .filter(|v| stamped(v))
    });
    if let Some(version) = from_module {
        return Some(version.to_string());
    }
    let flags = info
        .lines()
        .find_map(|line| line.strip_prefix("build\t-ldflags="))?;
    flags
        .split(|c: char| c.is_whitespace() || c == '"' || c == '\'')
        .filter_map(|part| part.split_once('='))
        .find(|(name, value)| name.ends_with(".version") && stamped(value))
        .map(|(_, value)| value.to_string())
}

/// The module information text of a Go ELF binary (the lines `go version -m` prints).
fn module_info(binary: &Path) -> Option<String> {
    let mut file = File::open(binary).ok()?;
    let section = section(&mut file, ".go.buildinfo")?;
    let header = section.get(..32)?;
    if !header.starts_with(MAGIC) || header[15] & FLAG_INLINE == 0 {
        return None;
    }
    let mut rest = &section[32..];
    let _go_version = take_string(&mut rest)?;
    let info = take_string(&mut rest)?;
    // Between two 16-byte sentinels.
    let info = info.get(16..info.len().checked_sub(16)?)?;
    String::from_utf8(info.to_vec()).ok()
}

/// A varint-length-prefixed string.
fn take_string<'a>(bytes: &mut &'a [u8]) -> Option<&'a [u8]> {
    let (mut length, mut shift, mut used) = (0usize, 0u32, 0usize);
    loop {
        let byte = *bytes.get(used)?;
        used += 1;
        length |= usize::from(byte & 0x7f).checked_shl(shift)?;
        if byte & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    let text = bytes.get(used..used.checked_add(length)?)?;
    *bytes = &bytes[used + length..];
    Some(text)
}

/// The bytes of the section named `name` of a 64-bit little-endian ELF file.
fn section(file: &mut File, name: &str) -> Option<Vec<u8>> {
    let mut header = [0u8; 64];
    file.read_exact(&mut header).ok()?;
    // "\x7fELF", 64-bit, little-endian.
    if &header[..4] != b"\x7fELF" || header[4] != 2 || header[5] != 1 {
        return None;
    }
    let u16_at = |b: &[u8], at: usize| u16::from_le_bytes(b[at..at + 2].try_into().unwrap());
    let u32_at = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
    let u64_at = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
    let table_offset = u64_at(&header, 0x28);
    let entry_size = usize::from(u16_at(&header, 0x3a));
    let entries = usize::from(u16_at(&header, 0x3c));
    let names_index = usize::from(u16_at(&header, 0x3e));
    if entry_size < 0x28 || names_index >= entries {
        return None;
    }
    let mut table = vec![0u8; entry_size * entries];
    file.seek(SeekFrom::Start(table_offset)).ok()?;
    file.read_exact(&mut table).ok()?;
    let entry = |index: usize| &table[index * entry_size..(index + 1) * entry_size];
    let mut read = |offset: u64, size: u64| -> Option<Vec<u8>> {
        if size > SECTION_LIMIT {
            return None;
        }
        let mut bytes = vec![0u8; size as usize];
        file.seek(SeekFrom::Start(offset)).ok()?;
        file.read_exact(&mut bytes).ok()?;
        Some(bytes)
    };
    let names_entry = entry(names_index);
    let names = read(u64_at(names_entry, 0x18), u64_at(names_entry, 0x20))?;
    (0..entries)
        .find_map(|index| {
            let e = entry(index);
            let start = u32_at(e, 0) as usize;
            let end = start + names.get(start..)?.iter().position(|b| *b == 0)?;
            (&names[start..end] == name.as_bytes()).then(|| (u64_at(e, 0x18), u64_at(e, 0x20)))
        })
        .and_then(|(offset, size)| read(offset, size))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As `go version -m` prints them: a `go install` of a tag, and a release build stamped by
    /// its flags (the official Atlas build's way).
    #[test]
    fn the_version_comes_from_the_module_or_the_flags() {
        let installed = "path\tariga.io/atlas/cmd/atlas\nmod\tariga.io/atlas/cmd/atlas\tv0.13.1\th1:wIC=\ndep\tariga.io/atlas\tv0.12.2\th1:x=\n";
        assert_eq!(main_version(installed).as_deref(), Some("v0.13.1"));
        let stamped = "path\tariga.io/atlas/cmd/atlas\nmod\tariga.io/atlas/cmd/atlas\t(devel)\t\nbuild\t-ldflags=\"-s -w -X ariga.io/atlas/cmd/atlas/internal/cmdapi.version=v1.1.0\"\n";
        assert_eq!(main_version(stamped).as_deref(), Some("v1.1.0"));
        let devel = "path\tx\nmod\tx\t(devel)\t\n";
        assert_eq!(main_version(devel), None);
    }

    /// Not every "atlas" is a Go binary (tests run scripts): nothing is read, nothing breaks.
    #[test]
    fn a_file_that_is_not_a_go_binary_has_no_version() {
        assert_eq!(version(Path::new("/bin/sh")), None);
        assert_eq!(version(Path::new("/nonexistent")), None);
        let script = std::env::temp_dir().join(format!("buildinfo-{}", std::process::id()));
        std::fs::write(&script, "#!/bin/sh\necho v1\n").unwrap();
        assert_eq!(version(&script), None);
        std::fs::remove_file(script).unwrap();
    }
}
