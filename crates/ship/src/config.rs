//! The subset of ~/.ssh/config that ship honours, read with the `ssh2-config` parser.
//!
//! Honoured: Host patterns, HostName, User, Port, IdentityFile, IdentitiesOnly,
//! UserKnownHostsFile, ConnectTimeout, ProxyJump. Keywords that would change where or how we
//! connect in ways ship does not implement (ProxyCommand, HostKeyAlias, ...) and `Match` blocks
//! are refused, never ignored.

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ssh2_config::{ParseRule, SshConfig};

use crate::ShipError;

/// What the config says about one host alias.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostConfig {
    pub host_name: Option<String>,
    pub user: Option<String>,
    pub port: Option<u16>,
    pub identity_files: Vec<PathBuf>,
    pub identities_only: bool,
    pub user_known_hosts: Vec<PathBuf>,
    pub connect_timeout: Option<Duration>,
    /// The ProxyJump hops as written (`[user@]host[:port]` each); empty for none or `none`.
    pub proxy_jump: Vec<String>,
}

/// Keywords we cannot honour and must not ignore: each changes the connection itself.
const REFUSED: &[&str] = &[
    "proxycommand",
    "hostkeyalias",
    "knownhostscommand",
    "bindaddress",
    "bindinterface",
    "certificatefile",
    "identityagent",
];

pub fn home() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

/// Reads `path` (or ~/.ssh/config when it exists) and resolves `alias`.
pub fn resolve(alias: &str, path: Option<&Path>) -> Result<HostConfig, ShipError> {
    let path = match path {
        Some(p) => p.to_owned(),
        None => match home().map(|h| h.join(".ssh/config")).filter(|p| p.exists()) {
            Some(p) => p,
            None => return Ok(HostConfig::default()),
        },
    };
    let text = std::fs::read_to_string(&path).map_err(|e| ShipError::Config {
        path: path.clone(),
        line: 0,
        message: format!("cannot read: {e}"),
    })?;
    resolve_text(alias, &path, &text)
}

fn resolve_text(alias: &str, path: &Path, text: &str) -> Result<HostConfig, ShipError> {
    let config_error = |line, message| ShipError::Config {
        path: path.to_owned(),
        line,
        message,
    };
    if let Some(line) = keyword_line(text, "match") {
        return Err(config_error(
            line,
            "`Match` blocks are not supported by ship; use `Host` blocks".to_owned(),
        ));
    }
    let parse = |text: &str| {
        let mut config = SshConfig::default();
        if let Some(home) = home() {
            config = config.home_dir(home);
        }
        config.parse(
            &mut BufReader::new(text.as_bytes()),
            ParseRule::ALLOW_UNKNOWN_FIELDS | ParseRule::ALLOW_UNSUPPORTED_FIELDS,
        )
    };
    let config = parse(text).map_err(|e| {
        // ssh2-config does not say where; the first prefix of the file that fails does.
        let lines: Vec<&str> = text.split_inclusive('\n').collect();
        let line = (1..=lines.len())
            .find(|&n| parse(&lines[..n].concat()).is_err())
            .unwrap_or(0);
        config_error(line, e.to_string())
    })?;
    let params = config.query(alias);

    let refused = params
        .unsupported_fields
        .keys()
        .chain(params.ignored_fields.keys())
        .find(|k| REFUSED.contains(&k.as_str()));
    if let Some(keyword) = refused {
        return Err(config_error(
            keyword_line(text, keyword).unwrap_or(0),
            format!(
                "{keyword} applies to {alias}, and ship does not support it (it would change where or how we connect)"
            ),
        ));
    }
    let flag = |name: &str| {
        params
            .unsupported_fields
            .get(name)
            .and_then(|a| a.first())
            .map(|v| v.to_ascii_lowercase())
    };
    let identities_only = flag("identitiesonly").is_some_and(|v| v == "yes" || v == "true");
    let user_known_hosts = params
        .unsupported_fields
        .get("userknownhostsfile")
        .map(|files| files.iter().map(|f| expand_tilde(f)).collect())
        .unwrap_or_default();
    Ok(HostConfig {
        host_name: params.host_name.clone(),
        user: params.user.clone(),
        port: params.port,
        identity_files: params.identity_file.clone().unwrap_or_default(),
        identities_only,
        user_known_hosts,
        connect_timeout: params.connect_timeout,
        proxy_jump: params
            .proxy_jump
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter(|hop| !hop.eq_ignore_ascii_case("none"))
            .collect(),
    })
}

fn expand_tilde(path: &str) -> PathBuf {
    match (path.strip_prefix("~/"), home()) {
        (Some(rest), Some(home)) => home.join(rest),
        _ => PathBuf::from(path),
    }
}

/// The 1-based line of the first use of `keyword`, for pointing at it in an error.
fn keyword_line(text: &str, keyword: &str) -> Option<usize> {
    text.lines()
        .position(|line| {
            let word = line
                .trim_start()
                .split(|c: char| c.is_whitespace() || c == '=')
                .next()
                .unwrap_or("");
            word.eq_ignore_ascii_case(keyword)
        })
        .map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = "\
Host node
    HostName 10.0.0.5
    User admin
    Port 2222
    IdentityFile /keys/node
    IdentitiesOnly yes
    UserKnownHostsFile /keys/known_hosts
    ConnectTimeout 3

Host jumpy
    ProxyJump admin@bastion:2200,inner

Host direct
    ProxyJump none

Host direct jumpy
    ProxyCommand nc %h %p

Host *
    IdentityFile /keys/default
";

    fn resolve(alias: &str) -> Result<HostConfig, ShipError> {
        resolve_text(alias, Path::new("/cfg"), CONFIG)
    }

    #[test]
    fn honoured_keywords() {
        let c = resolve("node").unwrap();
        assert_eq!(c.host_name.as_deref(), Some("10.0.0.5"));
        assert_eq!(c.user.as_deref(), Some("admin"));
        assert_eq!(c.port, Some(2222));
        assert_eq!(
            c.identity_files,
            [PathBuf::from("/keys/node"), PathBuf::from("/keys/default")]
        );
        assert!(c.identities_only);
        assert_eq!(c.user_known_hosts, [PathBuf::from("/keys/known_hosts")]);
        assert_eq!(c.connect_timeout, Some(Duration::from_secs(3)));
    }

    #[test]
    fn other_hosts_get_only_the_wildcard_block() {
        let c = resolve("elsewhere").unwrap();
        assert_eq!(c.host_name, None);
        assert_eq!(c.identity_files, [PathBuf::from("/keys/default")]);
        assert!(!c.identities_only);
    }

    #[test]
    fn proxy_jump_is_read_and_none_means_none() {
        let text = CONFIG.replace("Host direct jumpy\n    ProxyCommand nc %h %p\n", "");
        let c = resolve_text("jumpy", Path::new("/cfg"), &text).unwrap();
        assert_eq!(c.proxy_jump, ["admin@bastion:2200", "inner"]);
        let c = resolve_text("direct", Path::new("/cfg"), &text).unwrap();
        assert_eq!(c.proxy_jump, Vec::<String>::new());
        assert_eq!(resolve("node").unwrap().proxy_jump, Vec::<String>::new());
    }

    #[test]
    fn proxy_command_and_match_are_refused_with_the_line() {
        // A ProxyJump beside it does not make a ProxyCommand acceptable.
        let err = resolve("jumpy").unwrap_err().to_string();
        assert!(
            err.starts_with("/cfg:17: proxycommand applies to jumpy"),
            "{err}"
        );
        let err = resolve_text("x", Path::new("/cfg"), "Host x\n  ProxyCommand nc %h %p\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("/cfg:2: proxycommand"), "{err}");
        let err = resolve_text("x", Path::new("/cfg"), "Match host x\n  User y\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("/cfg:1: `Match`"), "{err}");
    }

    #[test]
    fn bad_values_are_reported_with_their_line() {
        let text = "Host a\n  HostName 127.0.0.1\n\nHost b\n  Port abc\n  User c\n";
        let err = resolve_text("a", Path::new("/cfg"), text)
            .unwrap_err()
            .to_string();
        assert_eq!(err, "/cfg:5: expected port number");
    }
}
