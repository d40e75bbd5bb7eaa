use std::fmt;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

use kube::client::ConfigExt;
use secrecy::{ExposeSecret, SecretString};
use tokio_rustls::rustls::{ClientConfig, ClientConnection, StreamOwned, pki_types::ServerName};

use crate::{Cluster, ClusterError, ProbeConfigMap, Readiness};

/// A health answer, a ConfigMap or a Status is a few hundred bytes; anything past this is not
/// read.
const MAX_RESPONSE: usize = 64 * 1024;
/// How much of a failing answer a message quotes.
const MAX_DETAIL: usize = 512;

/// What is needed to ask one node's own API server for `/readyz`, or to send it the verify
/// probe, over a byte stream the caller opens (an SSH direct-tcpip channel, a TCP connection):
/// the kubeconfig's TLS settings and credentials. The token is never printed, not even by
/// `Debug`.
#[derive(Clone)]
pub struct NodeProbe {
    tls: Arc<ClientConfig>,
    token: Option<Arc<SecretString>>,
}

impl fmt::Debug for NodeProbe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeProbe")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// What is needed to ask one node's API server for /readyz (or to send it the verify probe,
    /// [`NodeProbe::create_and_delete_probe`]) over a byte stream, verifying
    /// its certificate the way the kubeconfig says (its CA data/file, or
    /// insecure-skip-tls-verify), presenting the kubeconfig's client certificate if it has one
    /// and its static bearer token if it has one (never printed, never in errors).
    ///
    /// Credentials an exec plugin or an auth provider hands out are not used: an API server
    /// answers /readyz to anonymous requests unless `--anonymous-auth=false` (the probe, which
    /// writes, is then refused with 401 or 403).
    pub fn node_probe(&self) -> Result<NodeProbe, ClusterError> {
        let mut tls =
            self.config
                .rustls_client_config()
                .map_err(|source| ClusterError::NodeProbeTls {
                    server: self.server().to_string(),
                    source,
                })?;
        // Each request is written and read by hand, so the server must not pick HTTP/2.
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let auth = &self.config.auth_info;
        let token = match (&auth.token, &auth.token_file) {
            (Some(token), _) => Some(token.expose_secret().to_string()),
            (None, Some(path)) => Some(
                std::fs::read_to_string(path)
                    .map_err(|source| ClusterError::TokenFile {
                        path: PathBuf::from(path),
                        source,
                    })?
                    .trim()
                    .to_string(),
            ),
            (None, None) => None,
        };
        Ok(NodeProbe {
            tls: Arc::new(tls),
            token: token
                .filter(|t| !t.is_empty())
                .map(|t| Arc::new(SecretString::from(t))),
        })
    }
}

impl NodeProbe {
    /// GET /readyz over TLS on a stream `open()` returns, the server's certificate checked for
    /// `host` (an IP address or a DNS name); on 404, GET /healthz over a second stream (servers
    /// before 1.16). Never fails: every outcome is a Readiness.
    ///
    /// The stream's own time-outs bound the wait: a stream that blocks forever blocks this.
    pub fn readiness<S: Read + Write>(
        &self,
        host: &str,
        mut open: impl FnMut() -> io::Result<S>,
    ) -> Readiness {
        let get = |path| Request {
            method: "GET",
            path,
            json_body: None,
        };
        let answer = match self.exchange(host, &get("/readyz"), &mut open) {
            Ok(answer) if answer.status == 404 => self.exchange(host, &get("/healthz"), &mut open),
            other => other,
        };
        let readiness = match answer {
            Ok(answer) => answer.readiness(),
            Err(reason) => Readiness::Unreachable(reason),
        };
        match readiness {
            Readiness::Ready => Readiness::Ready,
            Readiness::NotReady(text) => Readiness::NotReady(self.scrub(text)),
            Readiness::Unreachable(text) => Readiness::Unreachable(self.scrub(text)),
        }
    }

    /// Creates, then deletes, the probe ConfigMap through the API server on streams `open()`
    /// returns (one request per stream), its certificate checked for `host` as
    /// [`Self::readiness`] does, so that the events land in THAT server's audit log: through a
    /// load balancer a request reaches only one of the servers. The object is the one
    /// [`Cluster::create_and_delete_probe`] sends, and failures are sorted the same way (a 409
    /// on create or a 404 on delete is an error with that status).
    ///
    /// Unlike readiness, this needs credentials the server accepts: the kubeconfig's client
    /// certificate or static token (an exec plugin's are not used).
    pub fn create_and_delete_probe<S: Read + Write>(
        &self,
        host: &str,
        mut open: impl FnMut() -> io::Result<S>,
        probe: &ProbeConfigMap,
    ) -> Result<(), ClusterError> {
        let what = probe.describe();
        let collection = format!(
            "/api/v1/namespaces/{}/configmaps",
            path_segment(&probe.namespace)
        );
        let body = serde_json::to_vec(&probe.object()).map_err(|e| {
            ClusterError::NodeApiServerUnreachable {
                action: format!("creating {what} on the API server at {host}"),
                reason: format!("cannot encode the object: {e}"),
            }
        })?;
        let create = Request {
            method: "POST",
            path: &collection,
            json_body: Some(&body),
        };
        self.expect_success(host, &create, &mut open, format!("creating {what}"))?;
        let object = format!("{collection}/{}", path_segment(&probe.name));
        let delete = Request {
            method: "DELETE",
            path: &object,
            json_body: None,
        };
        self.expect_success(host, &delete, &mut open, format!("deleting {what}"))
    }

    fn expect_success<S: Read + Write>(
        &self,
        host: &str,
        request: &Request<'_>,
        open: &mut impl FnMut() -> io::Result<S>,
        action: String,
    ) -> Result<(), ClusterError> {
        let action = format!("{action} on the API server at {host}");
        match self.exchange(host, request, open) {
            Ok(answer) if (200..300).contains(&answer.status) => Ok(()),
            Ok(answer) => Err(ClusterError::from_status(
                action,
                answer.status,
                self.scrub(answer.detail()),
            )),
            Err(reason) => Err(ClusterError::NodeApiServerUnreachable {
                action,
                reason: self.scrub(reason),
            }),
        }
    }

    /// One request on a stream of its own: TLS with the server's certificate checked for
    /// `host`, the request, then the whole answer (`Connection: close`).
    fn exchange<S: Read + Write>(
        &self,
        host: &str,
        request: &Request<'_>,
        open: &mut impl FnMut() -> io::Result<S>,
    ) -> Result<Answer, String> {
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let name = ServerName::try_from(bare.to_string())
            .map_err(|_| format!("{host:?} is neither an IP address nor a DNS name"))?;
        let mut connection = ClientConnection::new(Arc::clone(&self.tls), name)
            .map_err(|e| format!("TLS with {host}: {e}"))?;
        let mut stream = open().map_err(|e| format!("cannot open a stream to {host}: {e}"))?;
        while connection.is_handshaking() {
            match connection.complete_io(&mut stream) {
                Ok((0, 0)) => return Err(format!("TLS handshake with {host}: connection closed")),
                Ok(_) => {}
                Err(e) => return Err(format!("TLS handshake with {host}: {e}")),
            }
        }
        let mut tls = StreamOwned::new(connection, stream);
        let Request { method, path, .. } = request;
        tls.write_all(&self.encode(bare, request))
            .and_then(|()| tls.flush())
            .map_err(|e| format!("sending {method} {path} to {host}: {e}"))?;
        read_answer(&mut tls)
            .map_err(|e| format!("reading the answer to {method} {path} from {host}: {e}"))
    }

    fn encode(&self, bare_host: &str, request: &Request<'_>) -> Vec<u8> {
        let host_header = if bare_host.contains(':') {
            format!("[{bare_host}]")
        } else {
            bare_host.to_string()
        };
        let authorization = self
            .token
            .as_ref()
            .map(|t| format!("Authorization: Bearer {}\r\n", t.expose_secret()))
            .unwrap_or_default();
        let content = request
            .json_body
            .map(|body| {
                format!(
                    "Content-Type: application/json\r\nContent-Length: {}\r\n",
                    body.len()
                )
            })
            .unwrap_or_default();
        let Request { method, path, .. } = request;
        let mut bytes = format!(
            "{method} {path} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: k8s-audit\r\nAccept: application/json, text/plain, */*\r\n{authorization}{content}Connection: close\r\n\r\n"
        )
        .into_bytes();
        bytes.extend_from_slice(request.json_body.unwrap_or_default());
        bytes
    }

    /// A server may quote what it was sent; the token must still never reach a message.
    fn scrub(&self, text: String) -> String {
        match &self.token {
            Some(token) => text.replace(token.expose_secret(), "<token>"),
            None => text,
        }
    }
}

/// What [`NodeProbe::exchange`] sends.
struct Request<'a> {
    method: &'static str,
    /// Already percent-encoded.
    path: &'a str,
    json_body: Option<&'a [u8]>,
}

/// A namespace or name as one path segment: the API refuses names that need escaping, and
/// escaping them lets it say so instead of reading a broken request line.
fn path_segment(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// One HTTP answer, its body possibly cut at [`MAX_RESPONSE`].
#[derive(Debug, PartialEq, Eq)]
struct Answer {
    status: u16,
    reason: String,
    body: String,
}

impl Answer {
    fn readiness(&self) -> Readiness {
        if (200..300).contains(&self.status) && self.body.trim() == "ok" {
            return Readiness::Ready;
        }
        Readiness::NotReady(format!("HTTP {}: {}", self.status, self.detail()))
    }

    /// The failing checks of a health body, the message of a Status object, or the body.
    fn detail(&self) -> String {
        let failed: Vec<&str> = self
            .body
            .lines()
            .map(str::trim)
            .filter(|line| line.starts_with("[-]"))
            .collect();
        let detail = if !failed.is_empty() {
            failed.join("; ")
        } else if let Some(message) = serde_json::from_str::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|status| status["message"].as_str().map(str::to_string))
        {
            message
        } else if self.body.trim().is_empty() {
            if self.reason.is_empty() {
                "empty answer".to_string()
            } else {
                self.reason.clone()
            }
        } else {
            self.body.trim().to_string()
        };
        cut(detail, MAX_DETAIL)
    }
}

fn cut(mut text: String, limit: usize) -> String {
    if text.len() > limit {
        let mut end = limit;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

/// Reads until the answer is complete by its framing, the peer closes, or [`MAX_RESPONSE`].
fn read_answer(stream: &mut impl Read) -> io::Result<Answer> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(answer) = parse(&buffer, false).map_err(invalid)? {
            return Ok(answer);
        }
        if buffer.len() >= MAX_RESPONSE {
            break;
        }
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buffer.extend_from_slice(&chunk[..n.min(MAX_RESPONSE - buffer.len())]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // A peer that closes without TLS close_notify after a whole answer is common.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && !buffer.is_empty() => break,
            Err(e) => return Err(e),
        }
    }
    match parse(&buffer, true).map_err(invalid)? {
        Some(answer) => Ok(answer),
        None if buffer.is_empty() => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the connection closed without an answer",
        )),
        None => Err(invalid("the answer ends inside its headers".to_string())),
    }
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// `Ok(None)` while more bytes are needed; at `end` (the peer closed, or the size bound) the
/// body is whatever arrived.
fn parse(buffer: &[u8], end: bool) -> Result<Option<Answer>, String> {
    let Some(head_len) = buffer.windows(4).position(|w| w == b"\r\n\r\n") else {
        if let Some(line_end) = buffer.windows(2).position(|w| w == b"\r\n") {
            status_line(&String::from_utf8_lossy(&buffer[..line_end]))?;
        }
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&buffer[..head_len]);
    let mut lines = head.split("\r\n");
    let (status, reason) = status_line(lines.next().unwrap_or_default())?;
    let mut content_length = None;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_length = value.parse::<usize>().ok();
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        }
    }
    let raw = &buffer[head_len + 4..];
    let answer = |body: &[u8]| Answer {
        status,
        reason: reason.clone(),
        body: String::from_utf8_lossy(body).into_owned(),
    };
    if status < 200 || status == 204 || status == 304 {
        return Ok(Some(answer(b"")));
    }
    if chunked {
        let (body, complete) = dechunk(raw);
        return Ok((complete || end).then(|| answer(&body)));
    }
    match content_length {
        Some(length) if raw.len() >= length => Ok(Some(answer(&raw[..length]))),
        _ => Ok(end.then(|| answer(raw))),
    }
}

fn status_line(line: &str) -> Result<(u16, String), String> {
    let not_http = || format!("not an HTTP answer: {:?}", cut(line.to_string(), 80));
    let (version, rest) = line.split_once(' ').ok_or_else(not_http)?;
    if !version.starts_with("HTTP/1.") {
        return Err(not_http());
    }
    let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
    let code = code
        .parse::<u16>()
        .ok()
        .filter(|c| (100..600).contains(c))
        .ok_or_else(not_http)?;
    Ok((code, reason.trim().to_string()))
}

/// The body so far, and whether its last (empty) chunk has arrived.
fn dechunk(mut raw: &[u8]) -> (Vec<u8>, bool) {
    let mut body = Vec::new();
    loop {
        let Some(line_end) = raw.windows(2).position(|w| w == b"\r\n") else {
            return (body, false);
        };
        let size_text = String::from_utf8_lossy(&raw[..line_end]);
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let Ok(size) = usize::from_str_radix(size_text, 16) else {
            // Not chunked after all: keep what was decoded and stop waiting.
            return (body, true);
        };
        if size == 0 {
            return (body, true);
        }
        let data = &raw[line_end + 2..];
        if data.len() < size + 2 {
            body.extend_from_slice(&data[..size.min(data.len())]);
            return (body, false);
        }
        body.extend_from_slice(&data[..size]);
        raw = &data[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> Answer {
        Answer {
            status,
            reason: String::new(),
            body: body.to_string(),
        }
    }

    #[test]
    fn framing_by_length_chunks_and_close() {
        let whole = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA";
        assert_eq!(parse(whole, false).unwrap().unwrap().body, "ok");
        assert_eq!(parse(&whole[..38], false).unwrap(), None);

        let chunked = b"HTTP/1.1 500 Internal Server Error\r\nTransfer-Encoding: chunked\r\n\r\n4;x=y\r\n[-]e\r\n3\r\ntcd\r\n0\r\n\r\n";
        let parsed = parse(chunked, false).unwrap().unwrap();
        assert_eq!((parsed.status, parsed.body.as_str()), (500, "[-]etcd"));
        assert_eq!(parse(&chunked[..chunked.len() - 7], false).unwrap(), None);

        let unframed = b"HTTP/1.0 200 OK\r\n\r\nok";
        assert_eq!(parse(unframed, false).unwrap(), None);
        assert_eq!(parse(unframed, true).unwrap().unwrap().body, "ok");

        assert!(parse(b"SSH-2.0-OpenSSH_9.2\r\n", false).is_err());
        assert!(parse(b"HTTP/1.1 abc OK\r\n\r\n", true).is_err());
        assert_eq!(parse(b"HTTP/1.1 20", true).unwrap(), None);
    }

    #[test]
    fn what_an_answer_says() {
        assert_eq!(answer(200, "ok\n").readiness(), Readiness::Ready);
        assert_eq!(
            answer(200, "fine").readiness(),
            Readiness::NotReady("HTTP 200: fine".into())
        );
        let etcd =
            "[+]ping ok\n[-]etcd failed: reason withheld\n[-]log failed\nreadyz check failed\n";
        assert_eq!(
            answer(500, etcd).readiness(),
            Readiness::NotReady("HTTP 500: [-]etcd failed: reason withheld; [-]log failed".into())
        );
        let status = r#"{"kind":"Status","message":"forbidden: User \"system:anonymous\" cannot get path \"/readyz\"","code":403}"#;
        assert_eq!(
            answer(403, status).readiness(),
            Readiness::NotReady(
                "HTTP 403: forbidden: User \"system:anonymous\" cannot get path \"/readyz\"".into()
            )
        );
        let long = answer(503, &"x".repeat(2000)).readiness();
        let Readiness::NotReady(text) = long else {
            panic!("{long:?}")
        };
        assert!(text.len() < MAX_DETAIL + 20, "{}", text.len());
    }

    #[test]
    fn reading_stops_at_the_bound() {
        let mut endless = io::repeat(b'x');
        let mut head = io::Cursor::new(b"HTTP/1.1 200 OK\r\n\r\n".to_vec()).chain(&mut endless);
        let answer = read_answer(&mut head).unwrap();
        assert_eq!(answer.body.len(), MAX_RESPONSE - 19);
        let mut nothing = io::empty();
        let err = read_answer(&mut nothing).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn node_probe_is_send_and_sync() {
        fn both<T: Send + Sync>() {}
        both::<NodeProbe>();
    }
}
