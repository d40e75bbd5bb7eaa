//! The variable source: the environment, `--env-file` files and `--set` assignments.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::os::unix::ffi::OsStringExt;
use std::path::Path;

use crate::error::{AssignmentError, RenderError};
use crate::position::column_of;

/// FxHash's recipe, a word at a time. Names are short and come from the user's own
/// environment and template, so a DoS-resistant hash buys nothing here, while this lookup, once
/// per reference, was 40% of render time with a byte-at-a-time hash.
#[derive(Default)]
pub(crate) struct NameHasher(u64);

impl NameHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for NameHasher {
    fn finish(&self) -> u64 {
        // The multiply leaves its best bits at the top; hashbrown picks buckets from the bottom.
        self.0.rotate_left(26)
    }

    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        // Overlapping loads instead of copying the tail into a buffer: that copy stalled store
        // forwarding. The overlap is harmless because the length is hashed too.
        let mut rest = bytes;
        while let Some((word, tail)) = rest.split_first_chunk::<8>() {
            self.add(u64::from_le_bytes(*word));
            rest = tail;
        }
        if rest.is_empty() {
            return;
        }
        if let Some(last) = bytes.last_chunk::<8>() {
            self.add(u64::from_le_bytes(*last));
        } else if let (Some(head), Some(tail)) = (rest.first_chunk::<4>(), rest.last_chunk::<4>()) {
            self.add(
                u64::from(u32::from_le_bytes(*head)) | u64::from(u32::from_le_bytes(*tail)) << 32,
            );
        } else {
            let byte = |i: usize| u64::from(rest[i]);
            self.add(byte(0) | byte(rest.len() / 2) << 8 | byte(rest.len() - 1) << 16);
        }
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }
}

/// Maps a variable name (bytes, so template slices look up without conversion) to `V`.
pub(crate) type NameMap<V> = HashMap<Box<[u8]>, V, BuildHasherDefault<NameHasher>>;

/// Variable values by name. Values are bytes: the environment need not be UTF-8.
#[derive(Debug, Clone, Default)]
pub struct Vars {
    map: NameMap<Vec<u8>>,
}

impl Vars {
    pub fn new() -> Self {
        Vars::default()
    }

    /// The process environment. If a name appears twice, the first wins, as with `getenv`.
    pub fn from_env() -> Self {
        let mut vars = Vars::new();
        for (name, value) in std::env::vars_os() {
            vars.map
                .entry(name.into_vec().into_boxed_slice())
                .or_insert_with(|| value.into_vec());
        }
        vars
    }

    /// Sets (or overrides) one variable.
    pub fn set(&mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) {
        self.map
            .insert(name.into().into_bytes().into_boxed_slice(), value.into());
    }

    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.get_bytes(name.as_bytes())
    }

    #[inline]
    pub(crate) fn get_bytes(&self, name: &[u8]) -> Option<&[u8]> {
        self.map.get(name).map(Vec::as_slice)
    }

    /// Loads `KEY=VALUE` lines, overriding what is already set. See [`Vars::parse_env_file`].
    pub fn load_env_file(&mut self, path: &Path) -> Result<(), RenderError> {
        let contents = std::fs::read(path).map_err(|error| RenderError::EnvFileRead {
            path: path.to_path_buf(),
            error,
        })?;
        self.parse_env_file(&contents, path)
    }

    /// Parses an env file: one `KEY=VALUE` per line, optionally prefixed by `export `. Blank
    /// lines and lines starting with `#` are skipped; leading blanks and a trailing CR are
    /// ignored. The value is the rest of the line as bytes, except that one pair of matching
    /// surrounding quotes (`"..."` or `'...'`) is removed; there are no escapes and no
    /// expansion. Nothing is set unless the whole file is valid.
    pub fn parse_env_file(&mut self, contents: &[u8], path: &Path) -> Result<(), RenderError> {
        let mut parsed = Vec::new();
        for (index, raw) in contents.split(|&b| b == b'\n').enumerate() {
            let line = raw.strip_suffix(b"\r").unwrap_or(raw);
            let indent = line
                .iter()
                .take_while(|b| matches!(b, b' ' | b'\t'))
                .count();
            let mut body = &line[indent..];
            if body.is_empty() || body[0] == b'#' {
                continue;
            }
            if let Some(rest) = body.strip_prefix(b"export ") {
                body = rest;
            }
            let body_start = line.len() - body.len();
            let at = |offset: usize, problem| RenderError::EnvFile {
                path: path.to_path_buf(),
                line: index as u64 + 1,
                column: column_of(line, body_start + offset),
                problem,
            };
            let Some(eq) = body.iter().position(|&b| b == b'=') else {
                return Err(at(body.len(), AssignmentError::MissingEquals));
            };
            let name = &body[..eq];
            if !is_name_bytes(name) {
                let bad = name_error(name);
                return Err(at(0, bad));
            }
            let value = unquote(&body[eq + 1..]).map_err(|problem| at(eq + 1, problem))?;
            parsed.push((name.to_vec().into_boxed_slice(), value.to_vec()));
        }
        self.map.extend(parsed);
        Ok(())
    }
}

/// Parses a `--set` argument, `KEY=VALUE`; the value is taken verbatim.
pub fn parse_assignment(arg: &[u8]) -> Result<(String, Vec<u8>), AssignmentError> {
    let eq = arg
        .iter()
        .position(|&b| b == b'=')
        .ok_or(AssignmentError::MissingEquals)?;
    let name = &arg[..eq];
    if !is_name_bytes(name) {
        return Err(name_error(name));
    }
    Ok((
        String::from_utf8_lossy(name).into_owned(),
        arg[eq + 1..].to_vec(),
    ))
}

fn name_error(name: &[u8]) -> AssignmentError {
    AssignmentError::InvalidName(String::from_utf8_lossy(name).into_owned())
}

fn unquote(value: &[u8]) -> Result<&[u8], AssignmentError> {
    match value.first() {
        Some(&q @ (b'"' | b'\'')) => {
            if value.len() >= 2 && value.last() == Some(&q) {
                Ok(&value[1..value.len() - 1])
            } else {
                Err(AssignmentError::UnterminatedQuote(char::from(q)))
            }
        }
        _ => Ok(value),
    }
}

/// Whether `name` is a name the template syntax can reference: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn is_name(name: &str) -> bool {
    is_name_bytes(name.as_bytes())
}

fn is_name_bytes(name: &[u8]) -> bool {
    name.first().copied().is_some_and(is_name_start) && name.iter().copied().all(is_name_char)
}

/// Byte classes for names; a table load replaced three range checks per byte in the hot loop.
const NAME_START: u8 = 1;
const NAME_CHAR: u8 = 2;
static CLASS: [u8; 256] = {
    let mut class = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        if c.is_ascii_alphabetic() || c == b'_' {
            class[b] = NAME_START | NAME_CHAR;
        } else if c.is_ascii_digit() {
            class[b] = NAME_CHAR;
        }
        b += 1;
    }
    class
};

#[inline]
pub(crate) fn is_name_start(b: u8) -> bool {
    CLASS[usize::from(b)] & NAME_START != 0
}

#[inline]
pub(crate) fn is_name_char(b: u8) -> bool {
    CLASS[usize::from(b)] & NAME_CHAR != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(contents: &str) -> Result<Vars, RenderError> {
        let mut vars = Vars::new();
        vars.set("KEEP", "old");
        vars.set("A", "env");
        vars.parse_env_file(contents.as_bytes(), Path::new("x.env"))?;
        Ok(vars)
    }

    #[test]
    fn env_file_lines() {
        let err = parse(
            "# comment\n\n  A=1\r\nexport B=two words\nC=\"quoted # not a comment\"\nD='x'\nE=\nF=a=b\n\tG=\"\n",
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "x.env:9:4: unterminated \" quote: expected the value to end with \""
        );

        let vars =
            parse("# c\n\n  A=1\r\nexport B=two words\nC=\"q # x\"\nD='x'\nE=\nF=a=b\n").unwrap();
        assert_eq!(vars.get("A"), Some(&b"1"[..]));
        assert_eq!(vars.get("B"), Some(&b"two words"[..]));
        assert_eq!(vars.get("C"), Some(&b"q # x"[..]));
        assert_eq!(vars.get("D"), Some(&b"x"[..]));
        assert_eq!(vars.get("E"), Some(&b""[..]));
        assert_eq!(vars.get("F"), Some(&b"a=b"[..]));
        assert_eq!(vars.get("KEEP"), Some(&b"old"[..]));
    }

    #[test]
    fn env_file_errors_leave_vars_untouched() {
        let mut vars = Vars::new();
        vars.set("A", "env");
        let err = vars
            .parse_env_file(b"A=new\nno equals here\n", Path::new("e"))
            .unwrap_err();
        assert_eq!(err.to_string(), "e:2:15: expected KEY=VALUE, found no `=`");
        assert_eq!(vars.get("A"), Some(&b"env"[..]));
        let err = vars.parse_env_file(b"  1A=x", Path::new("e")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "e:1:3: expected a variable name ([A-Za-z_][A-Za-z0-9_]*) before `=`, found \"1A\""
        );
    }

    #[test]
    fn assignments() {
        assert_eq!(
            parse_assignment(b"A=b=c").unwrap(),
            ("A".into(), b"b=c".to_vec())
        );
        assert_eq!(
            parse_assignment(b"A=\xff").unwrap(),
            ("A".into(), vec![0xff])
        );
        assert_eq!(parse_assignment(b"A"), Err(AssignmentError::MissingEquals));
        assert!(matches!(
            parse_assignment(b"=x"),
            Err(AssignmentError::InvalidName(_))
        ));
        assert!(matches!(
            parse_assignment(b"A-B=x"),
            Err(AssignmentError::InvalidName(_))
        ));
    }

    #[test]
    fn byte_classes() {
        for b in 0..=255u8 {
            assert_eq!(
                is_name_start(b),
                b.is_ascii_alphabetic() || b == b'_',
                "{b}"
            );
            assert_eq!(
                is_name_char(b),
                b.is_ascii_alphanumeric() || b == b'_',
                "{b}"
            );
        }
    }

    #[test]
    fn names() {
        assert!(is_name("_a9"));
        assert!(!is_name("9a"));
        assert!(!is_name(""));
        assert!(!is_name("a-b"));
    }
}
