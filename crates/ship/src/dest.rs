//! Where to connect: `[user@]host[:port]`, and `ship cp` operands `[user@]host:path`.

use std::str::FromStr;

use crate::ShipError;

/// A host to connect to, with an optional user and port (unset ones come from ~/.ssh/config,
/// then from the defaults: the local user name and port 22).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
}

impl Destination {
    pub fn new(host: impl Into<String>) -> Destination {
        Destination {
            user: None,
            host: host.into(),
            port: None,
        }
    }

    /// Reads a jump list, `[user@]host[:port],...` as `ssh -J` takes it: the hops in the
    /// order they are connected.
    pub fn parse_jump(list: &str) -> Result<Vec<Destination>, ShipError> {
        if list.trim().is_empty() {
            return Err(invalid(list, "expected at least one jump host"));
        }
        list.split(',')
            .map(|hop| {
                if hop.is_empty() {
                    Err(invalid(list, "an empty jump host between commas"))
                } else {
                    hop.parse()
                }
            })
            .collect()
    }
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(user) = &self.user {
            write!(f, "{user}@")?;
        }
        match self.port {
            Some(port) if self.host.contains(':') => write!(f, "[{}]:{port}", self.host),
            Some(port) => write!(f, "{}:{port}", self.host),
            None => write!(f, "{}", self.host),
        }
    }
}

fn invalid(input: &str, reason: &'static str) -> ShipError {
    ShipError::InvalidDestination {
        input: input.to_owned(),
        reason,
    }
}

/// Splits `[user@]` off the front; the user part ends at the last '@' (user names may not
/// contain one, but nothing else may either, so this is unambiguous).
fn split_user(input: &str) -> Result<(Option<String>, &str), ShipError> {
    match input.rsplit_once('@') {
        Some(("", _)) => Err(invalid(input, "empty user name before '@'")),
        Some((user, rest)) => Ok((Some(user.to_owned()), rest)),
        None => Ok((None, input)),
    }
}

fn check_host<'a>(input: &str, host: &'a str) -> Result<&'a str, ShipError> {
    if host.is_empty() {
        return Err(invalid(input, "expected a host name"));
    }
    // A leading '-' would be read as an option by anything the name is handed to.
    if host.starts_with('-')
        || host
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '/')
    {
        return Err(invalid(
            input,
            "the host name contains characters a host name cannot have",
        ));
    }
    Ok(host)
}

/// `[user@]host`, `[user@]host:port` or `[user@][v6addr]:port`.
impl FromStr for Destination {
    type Err = ShipError;

    fn from_str(input: &str) -> Result<Destination, ShipError> {
        let (user, rest) = split_user(input)?;
        let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
            let (host, after) = inner
                .split_once(']')
                .ok_or_else(|| invalid(input, "missing ']' after an IPv6 address"))?;
            match after {
                "" => (host, None),
                _ => {
                    let port = after
                        .strip_prefix(':')
                        .ok_or_else(|| invalid(input, "expected ':port' after ']'"))?;
                    (host, Some(port))
                }
            }
        } else if rest.matches(':').count() > 1 {
            // A bare IPv6 address: colons are part of the address, there is no port.
            (rest, None)
        } else {
            match rest.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (rest, None),
            }
        };
        let port = port
            .map(|p| {
                p.parse::<u16>()
                    .ok()
                    .filter(|&p| p != 0)
                    .ok_or_else(|| invalid(input, "the port must be a number from 1 to 65535"))
            })
            .transpose()?;
        let host = check_host(input, host)?;
        Ok(Destination {
            user,
            host: host.to_owned(),
            port,
        })
    }
}

/// A `ship cp` operand that names a remote file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemotePath {
    pub dest: Destination,
    pub path: String,
}

impl RemotePath {
    /// Reads `[user@]host:path` (`[user@][v6]:path` for IPv6) the way scp does: an operand is
    /// remote when a ':' comes before any '/'. Returns `Ok(None)` for a local path.
    pub fn parse(operand: &str) -> Result<Option<RemotePath>, ShipError> {
        let colon = if operand.contains('@') || operand.starts_with('[') {
            // `[v6]:path`: the separating colon is the first one after ']'.
            let start = operand
                .find('[')
                .and_then(|open| operand[open..].find(']').map(|close| open + close))
                .unwrap_or(0);
            operand[start..].find(':').map(|i| start + i)
        } else {
            operand.find(':')
        };
        let Some(colon) = colon else { return Ok(None) };
        if operand[..colon].contains('/') {
            return Ok(None);
        }
        let (spec, path) = (&operand[..colon], &operand[colon + 1..]);
        let (user, host) = split_user(spec)?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let host = check_host(operand, host)?;
        if path.is_empty() {
            return Err(invalid(
                operand,
                "expected a path after ':' (an empty path is not the remote home here)",
            ));
        }
        Ok(Some(RemotePath {
            dest: Destination {
                user,
                host: host.to_owned(),
                port: None,
            },
            path: path.to_owned(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest(s: &str) -> Destination {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn destinations() {
        assert_eq!(
            dest("node"),
            Destination {
                user: None,
                host: "node".into(),
                port: None
            }
        );
        assert_eq!(
            dest("admin@node:2222"),
            Destination {
                user: Some("admin".into()),
                host: "node".into(),
                port: Some(2222)
            }
        );
        assert_eq!(dest("[::1]:22").host, "::1");
        assert_eq!(dest("fe80::1").port, None);
        assert_eq!(dest("admin@node:2222").to_string(), "admin@node:2222");
    }

    #[test]
    fn bad_destinations_say_why() {
        for (input, want) in [
            ("node:0", "1 to 65535"),
            ("node:x", "1 to 65535"),
            ("@node", "empty user"),
            ("", "expected a host"),
            ("-oProxyCommand=x", "cannot have"),
            ("[::1", "missing ']'"),
        ] {
            let err = input.parse::<Destination>().expect_err(input).to_string();
            assert!(err.contains(want), "{input}: {err}");
        }
    }

    #[test]
    fn jump_lists() {
        let hops = Destination::parse_jump("admin@bastion:2200,inner,[::1]:22").unwrap();
        assert_eq!(
            hops.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["admin@bastion:2200", "inner", "[::1]:22"]
        );
        for (input, want) in [
            ("", "at least one"),
            ("a,,b", "empty jump host"),
            ("a,", "empty jump host"),
            ("a,b:0", "1 to 65535"),
            ("a,-oProxyCommand=x", "cannot have"),
        ] {
            let err = Destination::parse_jump(input).expect_err(input).to_string();
            assert!(err.contains(want), "{input}: {err}");
        }
    }

    #[test]
    fn remote_operands() {
        let r = RemotePath::parse("admin@node:/var/lib/x y")
            .unwrap()
            .unwrap();
        assert_eq!(
            (
                r.dest.user.as_deref(),
                r.dest.host.as_str(),
                r.path.as_str()
            ),
            (Some("admin"), "node", "/var/lib/x y")
        );
        let r = RemotePath::parse("[::1]:/etc/a:b").unwrap().unwrap();
        assert_eq!((r.dest.host.as_str(), r.path.as_str()), ("::1", "/etc/a:b"));
        assert_eq!(RemotePath::parse("./a:b").unwrap(), None);
        assert_eq!(RemotePath::parse("-").unwrap(), None);
        assert_eq!(RemotePath::parse("/tmp/file").unwrap(), None);
        assert!(RemotePath::parse("node:").is_err());
    }
}
