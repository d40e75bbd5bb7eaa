//! Can the API server reach Falco? A static pod with hostNetwork shares the node's network
//! namespace, so a POST from the node, through the same session, is the API server's view. The
//! API server's batch webhook drops what it cannot deliver while the control plane looks
//! healthy, so static mode refuses to write a webhook that no one answers.
//!
//! The probe runs inside the command that takes the lock and reads the manifest
//! ([`crate::node::Node::lock_and_read`]): no extra round trip. Each candidate gets one POST of
//! an empty audit EventList, 3 s at most, with whatever the node has: curl, wget (GNU or
//! busybox), or bash's /dev/tcp under `timeout` (plain http only).

use std::fmt;

use crate::falco_url::FalcoUrl;

/// The shell half: defines `probe URL HOST PORT PATH`, which prints one line, `TOOL RESULT`.
/// `$cafile` is a CA bundle for https, or empty.
pub const PROBE_FN: &str = r#"body='{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{},"items":[]}'
one_line() { tr '\n\r' '  '; }
probe() {
  url=$1 host=$2 port=$3 path=$4
  if command -v curl >/dev/null 2>&1; then
    set -- -sS -o /dev/null -w '%{http_code}' --max-time 3 -X POST -H 'Content-Type: application/json' --data-binary "$body"
    if [ -n "$cafile" ]; then set -- "$@" --cacert "$cafile"; fi
    printf 'curl %s\n' "$(curl "$@" -- "$url" 2>&1 | one_line)"
  elif command -v wget >/dev/null 2>&1; then
    set -- -q -O /dev/null -T 3 --header 'Content-Type: application/json' --post-data "$body"
    if [ -n "$cafile" ]; then set -- "$@" "--ca-certificate=$cafile"; fi
    if out=$(wget "$@" "$url" 2>&1); then echo 'wget ok'; else printf 'wget failed %s\n' "$(printf '%s' "$out" | one_line)"; fi
  elif command -v bash >/dev/null 2>&1 && command -v timeout >/dev/null 2>&1; then
    case $url in https:*) echo 'none https needs curl or wget on the node'; return ;; esac
    out=$(timeout 3 bash -c 'exec 3<>"/dev/tcp/$1/$2" && printf "POST %s HTTP/1.0\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %s\r\n\r\n%s" "$3" "$1" "${#4}" "$4" >&3 && head -n 1 <&3' probe "$host" "$port" "$path" "$body" 2>&1)
    printf 'bash %s\n' "$(printf '%s' "${out:-no answer within 3 s}" | one_line)"
  else
    echo 'none no curl, wget, or bash with timeout on the node'
  fi
}
"#;

/// One candidate's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probed {
    pub url: FalcoUrl,
    /// curl, wget, bash, or none.
    pub tool: String,
    pub answer: Answer,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A 2xx (the status when the tool says it).
    Accepted(Option<u16>),
    /// Reached, but not a 2xx, or not reached: what the tool said.
    Failed(String),
    /// The node has no tool that can make this request.
    Unverified(String),
}

impl fmt::Display for Probed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.answer {
            Answer::Accepted(Some(code)) => {
                write!(
                    f,
                    "{} answered {code} ({} on the node)",
                    self.url, self.tool
                )
            }
            Answer::Accepted(None) => {
                write!(f, "{} answered 2xx ({} on the node)", self.url, self.tool)
            }
            Answer::Failed(why) => write!(f, "{}: {why} ({} on the node)", self.url, self.tool),
            Answer::Unverified(why) => write!(f, "{}: not verified: {why}", self.url),
        }
    }
}

/// The arguments the probe section of the lock script takes: the count, then
/// `URL HOST PORT PATH` per candidate (the host without IPv6 brackets, for /dev/tcp).
pub fn script_args(candidates: &[FalcoUrl]) -> Vec<String> {
    let mut args = vec![candidates.len().to_string()];
    for url in candidates {
        args.extend([
            url.to_url(),
            url.host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            url.port.to_string(),
            url.path.clone(),
        ]);
    }
    args
}

/// Reads the `probe INDEX TOOL RESULT` lines back, one per candidate, in order.
pub fn parse(output: &str, candidates: &[FalcoUrl]) -> Vec<Probed> {
    candidates
        .iter()
        .enumerate()
        .map(|(index, url)| {
            let prefix = format!("probe {index} ");
            let line = output
                .lines()
                .find_map(|l| l.strip_prefix(&prefix))
                .unwrap_or("none the node printed no result");
            let (tool, result) = line.split_once(' ').unwrap_or((line, ""));
            Probed {
                url: url.clone(),
                tool: tool.to_string(),
                answer: answer(tool, result.trim()),
            }
        })
        .collect()
}

fn answer(tool: &str, result: &str) -> Answer {
    let status = |code: &str| code.parse::<u16>().ok();
    match tool {
        // `-w '%{http_code}'` ends the output; curl's own error, if any, comes before it.
        "curl" => {
            let (said, code) = result.split_at(result.len().saturating_sub(3));
            match status(code) {
                Some(code @ 200..=299) => Answer::Accepted(Some(code)),
                Some(0) | None => Answer::Failed(nonempty(said, "no answer")),
                Some(code) => Answer::Failed(format!("HTTP {code}")),
            }
        }
        "wget" if result == "ok" => Answer::Accepted(None),
        "wget" => Answer::Failed(nonempty(
            result.strip_prefix("failed").unwrap_or(result),
            "no answer",
        )),
        "bash" => {
            let code = result
                .strip_prefix("HTTP/1.")
                .and_then(|rest| rest.get(2..5))
                .and_then(status);
            match code {
                Some(code @ 200..=299) => Answer::Accepted(Some(code)),
                Some(code) => Answer::Failed(format!("HTTP {code}")),
                None => Answer::Failed(nonempty(result, "no answer")),
            }
        }
        _ => Answer::Unverified(nonempty(result, "no tool on the node")),
    }
}

fn nonempty(text: &str, otherwise: &str) -> String {
    match text.trim() {
        "" => otherwise.to_string(),
        said => said.to_string(),
    }
}

/// What the probes say about where to send the events.
pub enum Verdict<'a> {
    /// The first candidate that answered 2xx.
    Reachable(&'a Probed),
    /// Nothing could be checked (no tool for this scheme): go on, with a warning.
    Unverified(&'a Probed),
    /// Every candidate was tried and none answered.
    Unreachable,
}

pub fn verdict(probed: &[Probed]) -> Verdict<'_> {
    if let Some(ok) = probed
        .iter()
        .find(|p| matches!(p.answer, Answer::Accepted(_)))
    {
        return Verdict::Reachable(ok);
    }
    match probed
        .iter()
        .find(|p| matches!(p.answer, Answer::Unverified(_)))
    {
        Some(unverified) => Verdict::Unverified(unverified),
        None => Verdict::Unreachable,
    }
}

/// The refusal when no candidate answered: what was tried, each error, and the usual causes.
pub fn unreachable_message(probed: &[Probed]) -> String {
    let mut text = String::from(
        "no Falco endpoint answered from the node, so the API server could not deliver audit events; nothing was written. Tried:",
    );
    for p in probed {
        text.push_str(&format!("\n  - {p}"));
    }
    text.push_str(
        "\nLikely causes: Falco is not running (or not with the k8saudit plugin on this port); the ClusterIP is not routable from the host network (kube-proxy-free CNIs): try --falco-via-nodeport; a NetworkPolicy drops it; a wrong --falco-url.\n--skip-reachability writes the webhook anyway.",
    );
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls() -> Vec<FalcoUrl> {
        vec![
            FalcoUrl::parse("http://10.96.0.10:9765/k8s-audit").unwrap(),
            FalcoUrl::parse("http://127.0.0.1:30007/k8s-audit").unwrap(),
        ]
    }

    #[test]
    fn each_tools_answer_is_read() {
        let output = "probe 0 curl curl: (7) Failed to connect to 10.96.0.10 port 9765: Network is unreachable 000\nprobe 1 curl 200\n";
        let probed = parse(output, &urls());
        assert_eq!(
            probed[0].answer,
            Answer::Failed(
                "curl: (7) Failed to connect to 10.96.0.10 port 9765: Network is unreachable"
                    .into()
            )
        );
        assert_eq!(probed[1].answer, Answer::Accepted(Some(200)));
        assert!(matches!(verdict(&probed), Verdict::Reachable(p) if p.url == urls()[1]));

        assert_eq!(answer("curl", "404"), Answer::Failed("HTTP 404".into()));
        assert_eq!(answer("wget", "ok"), Answer::Accepted(None));
        assert_eq!(
            answer("wget", "failed wget: can't connect"),
            Answer::Failed("wget: can't connect".into())
        );
        assert_eq!(
            answer("bash", "HTTP/1.1 200 OK"),
            Answer::Accepted(Some(200))
        );
        assert_eq!(
            answer("bash", "HTTP/1.0 503 x"),
            Answer::Failed("HTTP 503".into())
        );
        assert_eq!(
            answer("bash", "bash: connect: Connection refused"),
            Answer::Failed("bash: connect: Connection refused".into())
        );
        assert!(matches!(answer("none", "no curl"), Answer::Unverified(_)));
    }

    #[test]
    fn nothing_answering_is_refused_with_what_was_tried() {
        let probed = parse("probe 0 curl 000\nprobe 1 wget failed refused\n", &urls());
        assert!(matches!(verdict(&probed), Verdict::Unreachable));
        let text = unreachable_message(&probed);
        assert!(text.contains("http://10.96.0.10:9765/k8s-audit: no answer (curl on the node)"));
        assert!(text.contains("http://127.0.0.1:30007/k8s-audit: refused (wget on the node)"));
        assert!(text.contains("--falco-via-nodeport"));
    }

    #[test]
    fn ipv6_hosts_lose_their_brackets_for_dev_tcp() {
        let url = FalcoUrl::parse("http://[fd00::1]:9765/k8s-audit").unwrap();
        assert_eq!(
            script_args(&[url]),
            [
                "1",
                "http://[fd00::1]:9765/k8s-audit",
                "fd00::1",
                "9765",
                "/k8s-audit"
            ]
        );
    }
}
