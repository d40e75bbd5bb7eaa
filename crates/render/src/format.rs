//! GNU's SHELL-FORMAT argument: which variables it references.

use crate::vars::{is_name_char, is_name_start};

/// The variable names a SHELL-FORMAT references, in order, duplicates kept (what `-v` prints).
///
/// Follows GNU's own parser, which is looser than the template scanner: `$$A` references `A`,
/// `${A` (no `}`) references nothing, and `${` followed by a non-name is skipped.
pub fn shell_format_variables(format: &[u8]) -> Vec<String> {
    let mut names = Vec::new();
    let mut i = 0;
    while i < format.len() {
        let c = format[i];
        i += 1;
        if c != b'$' {
            continue;
        }
        let braced = format.get(i) == Some(&b'{');
        if braced {
            i += 1;
        }
        let start = i;
        if !format.get(i).copied().is_some_and(is_name_start) {
            continue;
        }
        while format.get(i).copied().is_some_and(is_name_char) {
            i += 1;
        }
        let end = i;
        if braced {
            if format.get(i) != Some(&b'}') {
                continue;
            }
            i += 1;
        }
        // Name bytes are ASCII by construction.
        names.push(String::from_utf8_lossy(&format[start..end]).into_owned());
    }
    names
}

#[cfg(test)]
mod tests {
    use super::shell_format_variables as vars;

    #[test]
    fn follows_gnu_on_odd_formats() {
        assert_eq!(vars(b"$A ${B} $A"), ["A", "B", "A"]);
        assert_eq!(vars(b"${C $D $$E ${F"), ["D", "E"]);
        assert_eq!(vars(b"${$G} $1 ${} $ ${"), ["G"]);
        assert_eq!(vars(b"$H9_x-${_i}"), ["H9_x", "_i"]);
        assert!(vars(b"").is_empty());
    }
}
