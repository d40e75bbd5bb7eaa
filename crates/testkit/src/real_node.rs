//! A real node ([`crate::node`]) for tests, with an sshd whose sessions run inside the node.
//!
//! The sshd listens on 127.0.0.1 of the host, like [`crate::sshd::Sshd`] (it is one), and every
//! session enters the node's mount and network namespaces (`ForceCommand nsenter ...`). A
//! pipeline that connects to it therefore reads and writes the node's own
//! `/etc/kubernetes/manifests`, `/var/lib/k8s_audit` and `/var/log/pods`, as on a real node,
//! with no `--root`. It reaches the API server at the node's address on the veth pair.
//!
//! Dropping a [`RealNode`] tears the node down completely.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub use crate::node::{BringUp, MirrorPod, Node, NodeSpec};
use crate::sshd::{Sshd, SshdOptions};

/// One node at a time per test process: each runs etcd and an API server (~400 MB, most of a
/// core while starting), and CI has two cores.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
static COUNTER: AtomicU32 = AtomicU32::new(0);
/// Test nodes are `testnode-<pid>-<n>`: the pid tells whether the process that owns it lives.
const NAME_PREFIX: &str = "testnode-";
/// When set (CI sets it), a machine that cannot run a node fails the test instead of skipping it.
pub const REQUIRE: &str = "TESTKIT_REQUIRE_REAL_NODE";

pub struct RealNode {
    // Dropped first: the ssh sessions end before the node goes.
    sshd: Sshd,
    node: Node,
    bring_up: BringUp,
    _dir: tempfile::TempDir,
    _one: std::sync::MutexGuard<'static, ()>,
}

impl RealNode {
    /// Starts a node, or returns `None` after saying why on stderr when this machine cannot
    /// run containers (not root, no cgroup access, tools missing). Panics when it can but the
    /// node does not come up, or when the binaries were not built
    /// (`cargo xtask apiserver build`).
    pub fn start() -> Option<RealNode> {
        if let Some(reason) = crate::node::unsupported_reason() {
            // CI sets this, so that a machine that lost the ability fails instead of passing.
            assert!(
                std::env::var_os(REQUIRE).is_none(),
                "{REQUIRE} is set, but this machine cannot run a real node: {reason}"
            );
            eprintln!("SKIPPED: this machine cannot run a real node: {reason}");
            return None;
        }
        let one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
        for name in crate::node::sweep_stale(NAME_PREFIX) {
            eprintln!("testkit::real_node: took down {name}, left by a test process that died");
        }
        let binary = crate::apiserver_cache::binary_path().expect("HOME or XDG_CACHE_HOME is set");
        let kubelet = crate::apiserver_cache::kubelet_path().expect("HOME is set");
        for path in [&binary, &kubelet] {
            assert!(
                path.is_file(),
                "{} is missing: run `cargo xtask apiserver build` (it builds kube-apiserver and kubelet)",
                path.display()
            );
        }
        let pause_source = crate::apiserver_cache::source_tree()
            .expect("HOME is set")
            .join("build/pause/linux/pause.c");
        let image_cache = binary
            .parent()
            .and_then(Path::parent)
            .map(|p| p.join("images"))
            .expect("the cache path has two parents");
        let dir = tempfile::Builder::new()
            .prefix("testkit-node.")
            .tempdir()
            .expect("tempdir");
        let name = format!(
            "{NAME_PREFIX}{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let spec = NodeSpec {
            name,
            dir: dir.path().join("node"),
            kube_apiserver: binary,
            kubelet,
            pause_source,
            image_cache,
        };
        let (node, bring_up) =
            Node::up(&spec, Duration::from_secs(120)).unwrap_or_else(|e| panic!("{e}"));
        let sshd = Sshd::start_with(SshdOptions {
            extra_config: vec![format!(
                "ForceCommand exec {} /bin/sh -c \"$SSH_ORIGINAL_COMMAND\"",
                node.enter_prefix()
            )],
            ..SshdOptions::default()
        });
        Some(RealNode {
            sshd,
            node,
            bring_up,
            _dir: dir,
            _one: one,
        })
    }

    pub fn node(&self) -> &Node {
        &self.node
    }

    pub fn sshd(&self) -> &Sshd {
        &self.sshd
    }

    /// How long the bring-up took.
    pub fn bring_up(&self) -> BringUp {
        self.bring_up
    }

    pub fn name(&self) -> &str {
        &self.node.name
    }

    /// `BINARY COMMAND ssh REST...` (the `k8s-audit` binary) against this node through its sshd,
    /// with its kubeconfig and node name, a clean `home`, and no agent or KUBECONFIG of the
    /// caller's.
    pub fn k8s_audit(&self, binary: &Path, home: &Path, args: &[&str]) -> std::process::Command {
        let sshd = self.sshd();
        let (command, rest) = args.split_first().expect("a command");
        let mut cmd = std::process::Command::new(binary);
        cmd.arg(command)
            .arg("ssh")
            .args(rest)
            .args(["--host", "127.0.0.1", "--user", "root"])
            .args(["--port", &sshd.port().to_string()])
            .arg("-i")
            .arg(sshd.client_key())
            .arg("--known-hosts")
            .arg(sshd.known_hosts_file())
            .args(["--node", self.name()])
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .env("HOME", home)
            .env_remove("KUBECONFIG")
            .env_remove("SSH_AUTH_SOCK");
        cmd
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.node.kubeconfig()
    }

    /// The API server's manifest, where the host sees it.
    pub fn apiserver_manifest(&self) -> PathBuf {
        self.node.manifest("kube-apiserver")
    }

    /// Polls until `done` holds for the API server's mirror pod (and `/readyz`), or panics
    /// after `timeout` with the kubelet's log.
    pub fn wait_for(
        &self,
        timeout: Duration,
        done: impl Fn(&MirrorPod, bool) -> bool,
    ) -> MirrorPod {
        let started = Instant::now();
        loop {
            let ready = self.node.readyz();
            if let Some(pod) = self.node.mirror_pod("kube-apiserver")
                && done(&pod, ready)
            {
                return pod;
            }
            assert!(
                started.elapsed() < timeout,
                "the node did not get there in {timeout:?}; mirror pod: {:?}\n{}",
                self.node.mirror_pod("kube-apiserver"),
                self.node.log_tails(30)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl RealNode {
    /// A listener on the node's address, in the node's network namespace (a thread enters it
    /// just to create the socket), so the node's processes can reach it and nothing else can.
    pub fn listen(&self, port: u16) -> std::net::TcpListener {
        let netns = format!("/run/netns/{}", self.node.netns());
        let addr = format!("{}:{port}", self.node.ip());
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&netns).unwrap_or_else(|e| panic!("{netns}: {e}"));
            rustix::thread::move_into_link_name_space(
                std::os::fd::AsFd::as_fd(&ns),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .unwrap_or_else(|e| panic!("setns {netns}: {e}"));
            std::net::TcpListener::bind(&addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"))
        })
        .join()
        .expect("the listening thread")
    }

    /// A Falco stand-in inside the node: answers every request 200 and counts the requests
    /// that carry audit events (a reachability probe's empty list does not count).
    /// Returns its URL (`http://<node ip>:<port>/k8s_audit`) and the count.
    pub fn receiver(&self) -> (String, std::sync::Arc<AtomicU32>) {
        let listener = self.listen(0);
        let port = listener.local_addr().expect("local addr").port();
        let posts = std::sync::Arc::new(AtomicU32::new(0));
        let count = posts.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let count = count.clone();
                std::thread::spawn(move || answer_ok(stream, &count));
            }
        });
        (format!("http://{}:{port}/k8s_audit", self.node.ip()), posts)
    }
}

/// Reads HTTP/1.1 requests (headers, then Content-Length bytes) and answers each 200.
fn answer_ok(stream: std::net::TcpStream, events: &AtomicU32) {
    use std::io::{BufRead, BufReader, Read, Write};
    let mut writer = match stream.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0usize;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        if String::from_utf8_lossy(&body).contains("\"auditID\"") {
            events.fetch_add(1, Ordering::Relaxed);
        }
        if writer
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            .is_err()
        {
            return;
        }
    }
}

impl Drop for RealNode {
    fn drop(&mut self) {
        if let Err(e) = self.node.down() {
            eprintln!("testkit::real_node: tearing down {}: {e}", self.node.name);
        }
    }
}
