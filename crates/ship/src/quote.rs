//! POSIX sh quoting for every argument that reaches a remote shell.

/// Quotes `arg` so that a POSIX shell reads it back as exactly one word, unchanged.
///
/// Single quotes make every character literal, except a single quote itself, which is
/// written as `'\''` (close, escaped quote, reopen). Plain words are left readable.
pub fn quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
    if plain {
        return arg.to_owned();
    }
    let mut quoted = String::with_capacity(arg.len() + 2);
    quoted.push('\'');
    for c in arg.chars() {
        if c == '\'' {
            quoted.push_str("'\\''");
        } else {
            quoted.push(c);
        }
    }
    quoted.push('\'');
    quoted
}

/// Quotes each argument and joins them with spaces: one remote command line.
pub fn command_line(argv: &[&str]) -> String {
    argv.iter().map(|a| quote(a)).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// What /bin/sh makes of the quoted text: the real shell is the only trustworthy oracle.
    fn sh_roundtrip(args: &[&str]) -> Vec<String> {
        let script = format!(
            "for a in {}; do printf '%s\\0' \"$a\"; done",
            command_line(args)
        );
        let out = Command::new("/bin/sh")
            .arg("-c")
            .arg(script)
            .output()
            .expect("run /bin/sh");
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).expect("utf8");
        text.split_terminator('\0').map(str::to_owned).collect()
    }

    #[test]
    fn hostile_arguments_survive_the_shell() {
        let args = [
            "plain",
            "",
            "with space",
            "it's",
            "$(id)",
            "`id`",
            "a\nb",
            "*",
            "~",
            "-n",
            "'",
            "\\",
            "é ü",
        ];
        assert_eq!(sh_roundtrip(&args), args);
    }

    #[test]
    fn plain_words_stay_readable() {
        assert_eq!(quote("/var/lib/k8s_audit"), "/var/lib/k8s_audit");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("it's"), "'it'\\''s'");
    }

    proptest::proptest! {
        #[test]
        fn any_string_roundtrips(arg in "[^\\x00]{0,40}") {
            proptest::prop_assert_eq!(sh_roundtrip(&[&arg]), vec![arg.clone()]);
        }
    }
}
