//! A tiny HTTP/1.1 server on 127.0.0.1 that answers each request from a script of recorded
//! Kubernetes API responses, so cluster-side code is tested against real response bodies
//! without a cluster. Routes match on method and path (query strings ignored); a route with
//! several responses plays them in order and then repeats the last one, which is how
//! "refused, refused, ready" sequences are written.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;

/// One scripted answer.
#[derive(Debug, Clone)]
pub enum Reply {
    /// An HTTP response with a JSON (or text) body.
    Http { status: u16, body: String },
    /// Close the connection without answering, as a restarting API server does.
    Drop,
}

impl Reply {
    pub fn json(status: u16, body: impl Into<String>) -> Self {
        Reply::Http {
            status,
            body: body.into(),
        }
    }
}

struct Route {
    method: String,
    path: String,
    replies: VecDeque<Reply>,
}

/// A request the server saw, for assertions on what the client sent.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub body: String,
}

#[derive(Default)]
struct State {
    routes: Vec<Route>,
    seen: Vec<Seen>,
}

pub struct ReplayServer {
    port: u16,
    state: Arc<Mutex<State>>,
}

impl ReplayServer {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local addr").port();
        let state = Arc::new(Mutex::new(State::default()));
        let shared = Arc::clone(&state);
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let state = Arc::clone(&shared);
                thread::spawn(move || serve(stream, &state));
            }
        });
        ReplayServer { port, state }
    }

    /// Adds a route; `path` is matched exactly, without the query string.
    pub fn route(
        &self,
        method: &str,
        path: &str,
        replies: impl IntoIterator<Item = Reply>,
    ) -> &Self {
        self.state.lock().unwrap().routes.push(Route {
            method: method.to_string(),
            path: path.to_string(),
            replies: replies.into_iter().collect(),
        });
        self
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every request so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    /// A kubeconfig pointing at this server with a bearer token, written into `dir`.
    pub fn write_kubeconfig(&self, dir: &std::path::Path) -> std::path::PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: replay\n  cluster:\n    server: {}\ncontexts:\n- name: replay\n  context:\n    cluster: replay\n    user: replay\ncurrent-context: replay\nusers:\n- name: replay\n  user:\n    token: replay-token\n",
            self.url()
        );
        std::fs::write(&path, text).expect("write kubeconfig");
        path
    }
}

fn serve(stream: TcpStream, state: &Mutex<State>) {
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut writer = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = request_line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_string();
        let target = parts.next().unwrap_or_default();
        let path = target.split('?').next().unwrap_or_default().to_string();
        let mut content_length = 0usize;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            if header == "\r\n" || header == "\n" {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                content_length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; content_length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let reply = {
            let mut state = state.lock().unwrap();
            state.seen.push(Seen {
                method: method.clone(),
                path: path.clone(),
                body: String::from_utf8_lossy(&body).into_owned(),
            });
            let route = state
                .routes
                .iter_mut()
                .find(|r| r.method == method && r.path == path);
            match route {
                Some(route) if route.replies.len() > 1 => route.replies.pop_front(),
                Some(route) => route.replies.front().cloned(),
                None => None,
            }
        };
        let (status, body) = match reply {
            Some(Reply::Drop) => return,
            Some(Reply::Http { status, body }) => (status, body),
            None => (
                404,
                r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"the server could not find the requested resource","reason":"NotFound","details":{},"code":404}"#
                    .to_string(),
            ),
        };
        let response = format!(
            "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            reason_phrase(status),
            body.len()
        );
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        409 => "Conflict",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}
