//! The flags we write, and how existing command-line words are read.

use crate::{AuditFile, KubeVersion, Mode, PatchOptions};

/// The `--audit-webhook-batch-*` flags (kubernetes PR 56638) are first documented for 1.10.
pub(crate) const BATCH_FLAGS_SINCE: KubeVersion = KubeVersion::new(1, 10, 0);
/// Advanced auditing (policy file, webhook backend) became beta in 1.8.
pub(crate) const STATIC_SINCE: KubeVersion = KubeVersion::new(1, 8, 0);
/// DynamicAuditing existed from 1.13 and was removed in 1.19.
pub(crate) const DYNAMIC_SINCE: KubeVersion = KubeVersion::new(1, 13, 0);
pub(crate) const DYNAMIC_REMOVED: KubeVersion = KubeVersion::new(1, 19, 0);

pub(crate) const LOG_PATH: &str = "--audit-log-path";
pub(crate) const POLICY_FILE: &str = "--audit-policy-file";
pub(crate) const WEBHOOK_CONFIG: &str = "--audit-webhook-config-file";
pub(crate) const BATCH_MAX_WAIT: &str = "--audit-webhook-batch-max-wait";
pub(crate) const DYNAMIC_CONFIG: &str = "--audit-dynamic-configuration";
pub(crate) const FEATURE_GATES: &str = "--feature-gates";
pub(crate) const RUNTIME_CONFIG: &str = "--runtime-config";
pub(crate) const ROTATION_FLAGS: [&str; 3] = [
    "--audit-log-maxage",
    "--audit-log-maxbackup",
    "--audit-log-maxsize",
];

/// What a flag of ours must say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Want {
    Value(String),
    /// A boolean flag, written bare.
    Switch,
    /// One `key=value` entry in a comma-separated list flag.
    Entry {
        key: &'static str,
        value: &'static str,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FlagSpec {
    pub name: &'static str,
    pub want: Want,
}

impl FlagSpec {
    fn value(name: &'static str, value: impl Into<String>) -> Self {
        FlagSpec {
            name,
            want: Want::Value(value.into()),
        }
    }

    pub fn render(&self) -> String {
        match &self.want {
            Want::Value(v) => format!("{}={v}", self.name),
            Want::Switch => self.name.to_string(),
            Want::Entry { key, value } => format!("{}={key}={value}", self.name),
        }
    }

    /// The value as an error message shows it.
    pub fn shown(&self) -> String {
        match &self.want {
            Want::Value(v) => v.clone(),
            Want::Switch => "true".into(),
            Want::Entry { key, value } => format!("{key}={value}"),
        }
    }
}

pub(crate) fn log_file(opts: &PatchOptions) -> String {
    AuditFile::Log.path(opts)
}

pub(crate) const DYNAMIC_GATE: Want = Want::Entry {
    key: "DynamicAuditing",
    value: "true",
};
pub(crate) const DYNAMIC_API: Want = Want::Entry {
    key: "auditregistration.k8s.io/v1alpha1",
    value: "true",
};

/// The flags `patch` writes for `opts.mode`, in order. Below 1.10 the batch flag is
/// left out; an unknown version gets every flag.
pub(crate) fn specs(opts: &PatchOptions, version: Option<&KubeVersion>) -> Vec<FlagSpec> {
    let mut out = Vec::new();
    if opts.mode.logs() {
        out.push(FlagSpec::value(LOG_PATH, log_file(opts)));
        out.push(FlagSpec::value(POLICY_FILE, AuditFile::Policy.path(opts)));
    }
    if opts.mode.webhook() {
        out.push(FlagSpec::value(
            WEBHOOK_CONFIG,
            AuditFile::WebhookConfig.path(opts),
        ));
        if version.is_none_or(|v| *v >= BATCH_FLAGS_SINCE) {
            out.push(FlagSpec::value(BATCH_MAX_WAIT, opts.batch_max_wait.clone()));
        }
    }
    if let (true, Some(r)) = (opts.mode.logs(), opts.rotation) {
        for (name, v) in
            ROTATION_FLAGS
                .into_iter()
                .zip([r.max_age_days, r.max_backups, r.max_size_mb])
        {
            if let Some(v) = v {
                out.push(FlagSpec::value(name, v.to_string()));
            }
        }
    }
    if opts.mode.dynamic() {
        out.push(FlagSpec {
            name: DYNAMIC_CONFIG,
            want: Want::Switch,
        });
        out.push(FlagSpec {
            name: FEATURE_GATES,
            want: DYNAMIC_GATE,
        });
        out.push(FlagSpec {
            name: RUNTIME_CONFIG,
            want: DYNAMIC_API,
        });
    }
    out
}

/// Every flag any mode could have written with these options (what `revert` removes).
pub(crate) fn all_specs(opts: &PatchOptions) -> Vec<FlagSpec> {
    let mut all = PatchOptions {
        mode: Mode::Static,
        ..opts.clone()
    };
    let mut out = specs(&all, None);
    all.mode = Mode::Dynamic;
    out.extend(specs(&all, None));
    out
}

/// Splits `--name=value` (or a bare `--name`) into its parts.
pub(crate) fn split_flag(word: &str) -> Option<(&str, Option<&str>)> {
    if !word.starts_with("--") {
        return None;
    }
    Some(match word.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (word, None),
    })
}

/// Whether a command word is the kube-apiserver binary.
pub(crate) fn is_binary(word: &str) -> bool {
    word == "kube-apiserver" || word.ends_with("/kube-apiserver")
}

/// One shell word: its text without quotes, and its byte range in the string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Word {
    pub text: String,
    pub start: usize,
    pub end: usize,
}

/// The words of a POSIX shell command line up to and including the binary's arguments:
/// everything from the first word on, stopping at the first operator or redirection
/// after `start_at` has been found. Good enough for `exec /bin/x --flags 1>>log 2>&1`;
/// it need not understand every shell construct, only never misplace a word. A line with an
/// unterminated quote has no words at all: the shell would refuse it, and flags inserted
/// after a word would land inside the quote.
pub(crate) fn shell_words(s: &str) -> Vec<Vec<Word>> {
    // Commands separated by operators; each is a list of words.
    let mut commands = vec![Vec::new()];
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if b";&|()<>".contains(&c) {
            // A redirection's target word belongs to no command.
            let redirect = c == b'<' || c == b'>';
            while i < b.len() && b";&|()<>".contains(&b[i]) {
                i += 1;
            }
            if redirect {
                while i < b.len() && b[i].is_ascii_whitespace() {
                    i += 1;
                }
                match word_end(s, i) {
                    Some((end, _)) => i = end,
                    None => return Vec::new(),
                }
            }
            if commands.last().is_some_and(|c| !c.is_empty()) {
                commands.push(Vec::new());
            }
            continue;
        }
        let start = i;
        let Some((end, text)) = word_end(s, i) else {
            return Vec::new();
        };
        i = end;
        // `2>&1`: digits glued to a redirection are its file descriptor, not a word.
        if b.get(end).is_some_and(|&n| n == b'<' || n == b'>')
            && text.bytes().all(|d| d.is_ascii_digit())
        {
            continue;
        }
        if let Some(cmd) = commands.last_mut() {
            cmd.push(Word { text, start, end });
        }
    }
    commands.retain(|c| !c.is_empty());
    commands
}

/// Reads one word from `i`: returns its end and its unquoted text, or `None` when a quote in
/// it is never closed.
fn word_end(s: &str, mut i: usize) -> Option<(usize, String)> {
    let b = s.as_bytes();
    let mut text = String::new();
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() || b";&|()<>".contains(&c) {
            break;
        }
        match c {
            b'\'' => {
                let close = i + 1 + s[i + 1..].find('\'')?;
                text.push_str(&s[i + 1..close]);
                i = close + 1;
            }
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' && i + 1 < b.len() {
                        i += 1;
                    }
                    let ch = s[i..].chars().next().unwrap_or(' ');
                    text.push(ch);
                    i += ch.len_utf8();
                }
                if i >= b.len() {
                    return None;
                }
                i += 1;
            }
            b'\\' if i + 1 < b.len() => {
                let ch = s[i + 1..].chars().next().unwrap_or(' ');
                text.push(ch);
                i += 1 + ch.len_utf8();
            }
            _ => {
                let ch = s[i..].chars().next().unwrap_or(' ');
                text.push(ch);
                i += ch.len_utf8();
            }
        }
    }
    Some((i, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(s: &str) -> Vec<Vec<String>> {
        shell_words(s)
            .into_iter()
            .map(|c| c.into_iter().map(|w| w.text).collect())
            .collect()
    }

    #[test]
    fn shell_words_split_commands_and_drop_redirections() {
        assert_eq!(
            texts(
                "mkfifo /tmp/pipe; (tee -a /var/log/k.log < /tmp/pipe & ) ; exec /usr/local/bin/kube-apiserver --a=b --c='x y' 1>>/var/log/k.log 2>&1"
            ),
            vec![
                vec!["mkfifo", "/tmp/pipe"],
                vec!["tee", "-a", "/var/log/k.log"],
                vec!["exec", "/usr/local/bin/kube-apiserver", "--a=b", "--c=x y"],
            ]
        );
        assert_eq!(
            texts("exec x --a \"q\\\"s\" > /tmp/pipe 2>&1"),
            vec![vec!["exec", "x", "--a", "q\"s"]]
        );
        let w = &shell_words("exec  k --v=2")[0][2];
        assert_eq!((w.start, w.end), (8, 13));
    }

    #[test]
    fn unbalanced_quotes_mean_no_words() {
        for s in [
            "'",
            "\"",
            "a'b",
            "x \"é",
            "é'",
            "exec k'ube-apiserver --a=b",
            "x > 'y",
        ] {
            assert_eq!(shell_words(s), Vec::<Vec<Word>>::new(), "{s:?}");
        }
        for s in ["\\", "\\é", "a\\"] {
            let _ = shell_words(s);
        }
    }

    #[test]
    fn batch_wait_depends_on_version() {
        let o = PatchOptions::new(Mode::Static);
        let names = |v: Option<KubeVersion>| {
            specs(&o, v.as_ref())
                .into_iter()
                .map(|s| s.name)
                .collect::<Vec<_>>()
        };
        assert!(names(Some(KubeVersion::new(1, 10, 0))).contains(&BATCH_MAX_WAIT));
        assert!(!names(Some(KubeVersion::new(1, 9, 11))).contains(&BATCH_MAX_WAIT));
        assert!(names(None).contains(&BATCH_MAX_WAIT));
    }
}
