//! A real kube-apiserver v1.20.2 (built by `cargo xtask apiserver build`) on 127.0.0.1, backed by
//! Debian's etcd, with a static admin token.
//!
//! [`ControlPlane`] holds what survives API-server restarts (etcd, keys, token, port, log), so
//! that the kubelet stand-in can stop and start the server while clients keep one kubeconfig.
//! [`ApiServer`] is a control plane plus one running server, for tests that need no restarts.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub use crate::apiserver_cache::{DEBIAN_VERSION, kubeadm_path};
const ETCD: &str = "/usr/bin/etcd";

#[derive(thiserror::Error)]
pub enum Error {
    #[error(
        "the kube-apiserver binary is not built: {path} is missing; run `cargo xtask apiserver build` first"
    )]
    NotBuilt { path: PathBuf },
    #[error("{ETCD} is missing; install Debian's etcd-server (`apt-get install etcd-server`)")]
    NoEtcd,
    #[error("neither XDG_CACHE_HOME nor HOME is set, so the kube-apiserver cache cannot be found")]
    NoCacheDir,
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("`{command}` failed: {detail}")]
    Tool { command: String, detail: String },
    #[error("etcd did not listen on 127.0.0.1:{port} within {waited:?}; its log:\n{log}")]
    EtcdNotUp {
        port: u16,
        waited: Duration,
        log: String,
    },
    #[error("kube-apiserver exited with {status} before it was ready; last log lines:\n{log}")]
    Exited { status: ExitStatus, log: String },
    #[error("kube-apiserver was not ready within {waited:?}; last log lines:\n{log}")]
    NotReady { waited: Duration, log: String },
    #[error(
        "kube-apiserver kept running for {waited:?} although it was expected to fail; last log lines:\n{log}"
    )]
    DidNotFail { waited: Duration, log: String },
    #[error("kube client: {0}")]
    Client(String),
}

// Tests `unwrap()` these errors; showing the message rather than the variant's fields is what
// tells a developer to run `cargo xtask apiserver build`.
impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

/// Where `cargo xtask apiserver build` puts the binary (`$XDG_CACHE_HOME` or `~/.cache`).
pub fn binary_path() -> Result<PathBuf, Error> {
    crate::apiserver_cache::binary_path().ok_or(Error::NoCacheDir)
}

/// The cached binary, or [`Error::NotBuilt`] saying how to build it.
pub fn binary() -> Result<PathBuf, Error> {
    let path = binary_path()?;
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::NotBuilt { path })
    }
}

/// Each real API server takes ~340 MB and both cores while starting; tests hold this so that
/// the tests of one binary start them one at a time.
/// An async lock, because the guard is held across the test's awaits.
pub async fn exclusive() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

fn free_port() -> Result<u16, Error> {
    crate::ports::server_port(&[Ipv4Addr::LOCALHOST], &[]).map_err(io("picking a free port"))
}

fn run(command: &mut Command) -> Result<(), Error> {
    let shown = format!("{command:?}");
    let output = command.output().map_err(io(format!("running {shown}")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(Error::Tool {
            command: shown,
            detail: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

/// The last `lines` lines of a log file (empty if it cannot be read).
pub fn tail(path: &Path, lines: usize) -> String {
    let Ok(mut file) = File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(64 << 10)));
    let mut text = Vec::new();
    let _ = file.read_to_end(&mut text);
    let text = String::from_utf8_lossy(&text);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A child process that is killed and reaped when dropped.
#[derive(Debug)]
pub struct Process {
    child: Child,
}

impl Process {
    fn spawn(command: &mut Command, log: &Path) -> Result<Process, Error> {
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(io(format!("opening {}", log.display())))?;
        let err = out.try_clone().map_err(io("duplicating the log handle"))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(io(format!("starting {:?}", command.get_program())))?;
        Ok(Process { child })
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// `Some(status)` once the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGTERM, as a kubelet stops a container, then SIGKILL after `grace`.
    pub fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        if let Some(status) = self.exited() {
            return Some(status);
        }
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        self.child.wait().ok()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where one API server of a control plane serves, and where its output goes. The control
/// plane's own ([`ControlPlane::endpoint`]) is 127.0.0.1 with a self-signed certificate; the HA
/// harness gives each node's server its own address, certificate, log and kubeconfig.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub address: Ipv4Addr,
    pub port: u16,
    /// Also pass `--advertise-address`, as kubeadm does on each control-plane node. Off for the
    /// single server, which keeps the default (the host's own address).
    pub advertise: bool,
    /// The serving certificate; `None`: the server makes a self-signed one in the plane's cert dir.
    pub tls: Option<ServingCert>,
    /// stdout and stderr of every start, appended.
    pub log: PathBuf,
    /// A kubeconfig with the admin token whose server is this endpoint.
    pub kubeconfig: PathBuf,
}

#[derive(Debug, Clone)]
pub struct ServingCert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Endpoint {
    pub fn url(&self) -> String {
        format!("https://{}:{}", self.address, self.port)
    }
}

/// etcd, credentials and a fixed secure port in a temp dir; survives API-server restarts.
pub struct ControlPlane {
    dir: TempDir,
    binary: PathBuf,
    _etcd: Process,
    etcd_url: String,
    port: u16,
    token: String,
    kubeconfig: PathBuf,
    log: PathBuf,
}

impl ControlPlane {
    /// Starts etcd and writes the service-account keys, token file and kubeconfig.
    pub fn start() -> Result<ControlPlane, Error> {
        let binary = binary()?;
        if !Path::new(ETCD).is_file() {
            return Err(Error::NoEtcd);
        }
        let dir = tempfile::Builder::new()
            .prefix("apiserver-")
            .tempdir()
            .map_err(io("creating a temp dir"))?;
        let (client, peer) = (free_port()?, free_port()?);
        let etcd_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let etcd_log = dir.path().join("etcd.log");
        let etcd = Process::spawn(
            Command::new(ETCD)
                .arg("--name=test")
                .arg(format!("--data-dir={}", dir.path().join("etcd").display()))
                .arg(format!("--listen-client-urls={etcd_url}"))
                .arg(format!("--advertise-client-urls={etcd_url}"))
                .arg(format!("--listen-peer-urls={peer_url}"))
                .arg(format!("--initial-advertise-peer-urls={peer_url}"))
                .arg(format!("--initial-cluster=test={peer_url}")),
            &etcd_log,
        )?;
        let mut etcd = etcd;
        let waited = Duration::from_secs(20);
        let deadline = Instant::now() + waited;
        while TcpStream::connect(("127.0.0.1", client)).is_err() {
            if Instant::now() > deadline || etcd.exited().is_some() {
                return Err(Error::EtcdNotUp {
                    port: client,
                    waited,
                    log: tail(&etcd_log, 20),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }

        let key = dir.path().join("sa.key");
        run(Command::new("openssl")
            .args(["genrsa", "-out"])
            .arg(&key)
            .arg("2048"))?;
        run(Command::new("openssl")
            .args(["rsa", "-pubout", "-in"])
            .arg(&key)
            .arg("-out")
            .arg(dir.path().join("sa.pub")))?;
        let token = random_token()?;
        write_private(
            &dir.path().join("tokens.csv"),
            &format!("{token},admin,admin-uid,system:masters\n"),
        )?;
        let port = free_port()?;
        let kubeconfig = dir.path().join("kubeconfig");
        write_private(
            &kubeconfig,
            &kubeconfig_yaml(&format!("https://127.0.0.1:{port}"), None, &token),
        )?;
        let log = dir.path().join("kube-apiserver.log");
        Ok(ControlPlane {
            dir,
            binary,
            _etcd: etcd,
            etcd_url,
            port,
            token,
            kubeconfig,
            log,
        })
    }

    /// The flags every start gets; callers add the ones under test.
    pub fn base_flags(&self) -> Vec<String> {
        let mut flags = self.shared_flags();
        flags.splice(1..1, self.endpoint_flags(&self.endpoint()));
        flags
    }

    /// What every server of this control plane shares: etcd and the credentials.
    fn shared_flags(&self) -> Vec<String> {
        let d = self.dir.path().display();
        vec![
            format!("--etcd-servers={}", self.etcd_url),
            "--authorization-mode=RBAC".to_owned(),
            format!("--token-auth-file={d}/tokens.csv"),
            format!("--service-account-key-file={d}/sa.pub"),
            format!("--service-account-signing-key-file={d}/sa.key"),
            "--service-account-issuer=https://kubernetes.default.svc".to_owned(),
            "--service-cluster-ip-range=10.96.0.0/12".to_owned(),
        ]
    }

    fn endpoint_flags(&self, endpoint: &Endpoint) -> Vec<String> {
        let mut flags = vec![
            format!("--bind-address={}", endpoint.address),
            format!("--secure-port={}", endpoint.port),
        ];
        if endpoint.advertise {
            flags.push(format!("--advertise-address={}", endpoint.address));
        }
        match &endpoint.tls {
            Some(tls) => flags.extend([
                format!("--tls-cert-file={}", tls.cert.display()),
                format!("--tls-private-key-file={}", tls.key.display()),
            ]),
            None => flags.push(format!("--cert-dir={}/certs", self.dir.path().display())),
        }
        flags
    }

    /// The single server's endpoint: 127.0.0.1, the plane's port, kubeconfig and log.
    pub fn endpoint(&self) -> Endpoint {
        Endpoint {
            address: Ipv4Addr::LOCALHOST,
            port: self.port,
            advertise: false,
            tls: None,
            log: self.log.clone(),
            kubeconfig: self.kubeconfig.clone(),
        }
    }

    /// Starts kube-apiserver with the base flags plus `extra`, logging to [`Self::log_path`].
    pub fn spawn(&self, extra: &[String]) -> Result<Process, Error> {
        self.spawn_at(&self.endpoint(), extra)
    }

    /// Starts kube-apiserver serving at `endpoint`, sharing etcd and credentials, plus `extra`.
    pub fn spawn_at(&self, endpoint: &Endpoint, extra: &[String]) -> Result<Process, Error> {
        Process::spawn(
            Command::new(&self.binary)
                .args(self.shared_flags())
                .args(self.endpoint_flags(endpoint))
                .args(extra),
            &endpoint.log,
        )
    }

    /// Writes a kubeconfig with the admin token for `server`, verifying its certificate with
    /// `ca` (without one, not verifying at all).
    pub fn write_kubeconfig(
        &self,
        path: &Path,
        server: &str,
        ca: Option<&Path>,
    ) -> Result<(), Error> {
        write_private(path, &kubeconfig_yaml(server, ca, &self.token))
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    /// A kubeconfig with the admin token (TLS verification off: the serving cert is self-signed).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// stdout and stderr of every start, appended.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }

    /// The temp dir holding everything; tests may put their policy files here.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub async fn client(&self) -> Result<kube::Client, Error> {
        Self::client_from(&self.kubeconfig).await
    }

    /// A client from any kubeconfig file (an [`Endpoint`]'s, a load balancer's).
    pub async fn client_from(kubeconfig: &Path) -> Result<kube::Client, Error> {
        let config = kube::config::Kubeconfig::read_from(kubeconfig)
            .map_err(|e| Error::Client(e.to_string()))?;
        let config = kube::Config::from_custom_kubeconfig(
            config,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .map_err(|e| Error::Client(e.to_string()))?;
        kube::Client::try_from(config).map_err(|e| Error::Client(e.to_string()))
    }

    /// One `/readyz` probe.
    pub async fn is_ready(client: &kube::Client) -> bool {
        let Ok(request) = http::Request::get("/readyz").body(Vec::new()) else {
            return false;
        };
        matches!(tokio::time::timeout(Duration::from_secs(5), client.request_text(request)).await, Ok(Ok(body)) if body.trim() == "ok")
    }

    /// Waits until `process` answers `/readyz`, or fails with its exit status and log.
    pub async fn wait_ready(&self, process: &mut Process, timeout: Duration) -> Result<(), Error> {
        let client = self.client().await?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = process.exited() {
                return Err(Error::Exited {
                    status,
                    log: self.log_tail(30),
                });
            }
            if Self::is_ready(&client).await {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::NotReady {
                    waited: timeout,
                    log: self.log_tail(30),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// A control plane with one running API server; dropping it stops both.
pub struct ApiServer {
    // Field order: the server stops before etcd does.
    process: Process,
    plane: ControlPlane,
}

/// How a start that was expected to fail ended.
#[derive(Debug)]
pub struct Failure {
    pub status: ExitStatus,
    /// Everything the server printed.
    pub log: String,
}

impl ApiServer {
    /// Starts etcd and kube-apiserver with the base flags plus `extra`, and waits for `/readyz`.
    pub async fn start(extra: &[String]) -> Result<ApiServer, Error> {
        let plane = ControlPlane::start()?;
        let mut process = plane.spawn(extra)?;
        plane
            .wait_ready(&mut process, Duration::from_secs(60))
            .await?;
        Ok(ApiServer { process, plane })
    }

    /// Starts kube-apiserver with `extra` and expects it to exit on its own within `timeout`.
    pub async fn start_expecting_failure(
        extra: &[String],
        timeout: Duration,
    ) -> Result<Failure, Error> {
        let plane = ControlPlane::start()?;
        let mut process = plane.spawn(extra)?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = process.exited() {
                let log = fs::read_to_string(plane.log_path())
                    .map_err(io("reading the kube-apiserver log"))?;
                return Ok(Failure { status, log });
            }
            if Instant::now() > deadline {
                return Err(Error::DidNotFail {
                    waited: timeout,
                    log: plane.log_tail(30),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn plane(&self) -> &ControlPlane {
        &self.plane
    }

    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }
}

fn random_token() -> Result<String, Error> {
    let mut bytes = [0u8; 16];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(io("reading /dev/urandom"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn write_private(path: &Path, text: &str) -> Result<(), Error> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(io(format!("writing {}", path.display())))?;
    file.write_all(text.as_bytes())
        .map_err(io(format!("writing {}", path.display())))
}

fn kubeconfig_yaml(server: &str, ca: Option<&Path>, token: &str) -> String {
    let trust = match ca {
        Some(ca) => format!("certificate-authority: {}", ca.display()),
        None => "insecure-skip-tls-verify: true".to_owned(),
    };
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {server}\n    {trust}\n\
         users:\n- name: admin\n  user:\n    token: {token}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: admin\ncurrent-context: test\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_binary_says_how_to_build_it() {
        let message = Error::NotBuilt {
            path: PathBuf::from("/x/kube-apiserver"),
        }
        .to_string();
        assert!(message.contains("cargo xtask apiserver build"), "{message}");
        assert_eq!(format!("{:?}", Error::NoEtcd), Error::NoEtcd.to_string());
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("log");
        fs::write(&path, "a\nb\nc\n").expect("write");
        assert_eq!(tail(&path, 2), "b\nc");
        assert_eq!(tail(&dir.path().join("missing"), 2), "");
    }
}
