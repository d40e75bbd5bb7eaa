//! A real OpenSSH server (Debian's `/usr/sbin/sshd`) on loopback (127.0.0.1 unless asked for
//! another 127.0.0.0/8 address), for tests and benchmarks.
//!
//! Everything it needs (config, host keys, authorized_keys, client keys) lives in a temp dir
//! that goes away with the [`Sshd`]. Authorized keys are kept per user in that dir
//! (`AuthorizedKeysFile`), so tests never touch a real user's `~/.ssh`.
//!
//! Setup failures panic: this is a test harness, and a panic with the reason is the clearest
//! report a test can give.

use std::fs;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// Key algorithms the harness can generate, for host keys and for client keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyType {
    Ed25519,
    Rsa,
    Ecdsa,
}

impl KeyType {
    fn keygen_args(self) -> &'static [&'static str] {
        match self {
            KeyType::Ed25519 => &["-t", "ed25519"],
            // 2048 bits keeps key generation quick; the tests are about signatures, not strength.
            KeyType::Rsa => &["-t", "rsa", "-b", "2048"],
            KeyType::Ecdsa => &["-t", "ecdsa", "-b", "256"],
        }
    }

    fn file_stem(self) -> &'static str {
        match self {
            KeyType::Ed25519 => "ed25519",
            KeyType::Rsa => "rsa",
            KeyType::Ecdsa => "ecdsa",
        }
    }
}

/// What to start. `Default` gives an ed25519 host key and one ed25519 client key authorized for root.
#[derive(Clone, Debug)]
pub struct SshdOptions {
    pub host_keys: Vec<KeyType>,
    /// One unencrypted client key per entry, authorized for [`SshdOptions::user`].
    pub client_keys: Vec<KeyType>,
    /// The user the client keys are authorized for.
    pub user: String,
    /// Extra `sshd_config` lines, appended last (first match wins in sshd, so these cannot
    /// override the harness's own lines; use them for settings the harness does not set).
    pub extra_config: Vec<String>,
    /// The one address sshd listens on; another loopback address (127.0.0.2) stands for
    /// another node.
    pub listen_address: Ipv4Addr,
    /// The port to listen on, as every node of a cluster has 22; `None`: a free one, retried
    /// when another process takes it first.
    pub port: Option<u16>,
}

impl Default for SshdOptions {
    fn default() -> Self {
        SshdOptions {
            host_keys: vec![KeyType::Ed25519],
            client_keys: vec![KeyType::Ed25519],
            user: "root".to_owned(),
            extra_config: Vec::new(),
            listen_address: Ipv4Addr::LOCALHOST,
            port: None,
        }
    }
}

/// A key pair on disk.
#[derive(Clone, Debug)]
pub struct KeyPair {
    pub key_type: KeyType,
    pub private: PathBuf,
    pub public: PathBuf,
}

impl KeyPair {
    /// The public key line (`type base64 comment`).
    pub fn public_line(&self) -> String {
        let text = fs::read_to_string(&self.public).expect("read public key");
        text.trim().to_owned()
    }
}

/// A running sshd; dropping it kills the server, its sessions and their commands.
pub struct Sshd {
    dir: TempDir,
    child: Option<Child>,
    address: Ipv4Addr,
    /// `address` as text, for [`Sshd::host`].
    host: String,
    port: u16,
    user: String,
    host_keys: Vec<KeyPair>,
    client_keys: Vec<KeyPair>,
}

impl Sshd {
    /// Starts an sshd with [`SshdOptions::default`].
    pub fn start() -> Sshd {
        Sshd::start_with(SshdOptions::default())
    }

    pub fn start_with(opts: SshdOptions) -> Sshd {
        let dir = tempfile::Builder::new()
            .prefix("testkit-sshd.")
            .tempdir()
            .expect("tempdir");
        // sshd refuses to start without its privilege separation directory.
        fs::create_dir_all("/run/sshd").expect("create /run/sshd");
        fs::create_dir_all(dir.path().join("authorized_keys")).expect("mkdir authorized_keys");

        let host_keys: Vec<KeyPair> = opts
            .host_keys
            .iter()
            .map(|&t| generate_key(dir.path(), &format!("host_{}", t.file_stem()), t, None))
            .collect();
        let client_keys: Vec<KeyPair> = opts
            .client_keys
            .iter()
            .map(|&t| generate_key(dir.path(), &format!("id_{}", t.file_stem()), t, None))
            .collect();

        let mut sshd = Sshd {
            dir,
            child: None,
            address: opts.listen_address,
            host: opts.listen_address.to_string(),
            port: 0,
            user: opts.user.clone(),
            host_keys,
            client_keys,
        };
        for key in sshd.client_keys.clone() {
            sshd.authorize(&opts.user, &key.public);
        }
        // A free port can be taken by someone else between our probe and sshd's bind; retry.
        let tries = if opts.port.is_some() { 1 } else { 5 };
        for _ in 0..tries {
            let port = opts.port.unwrap_or_else(|| free_port(sshd.address));
            sshd.write_config(port, &opts.extra_config);
            if sshd.spawn(port) {
                let mut text = sshd.known_hosts_lines().join("\n");
                text.push('\n');
                fs::write(sshd.known_hosts_file(), text).expect("write known_hosts");
                return sshd;
            }
        }
        panic!("sshd did not start; log:\n{}", sshd.log());
    }

    fn write_config(&self, port: u16, extra: &[String]) {
        let root = self.dir.path();
        let mut config = format!(
            "Port {port}\n\
             ListenAddress {address}\n\
             PidFile {pid}\n\
             AuthorizedKeysFile {root}/authorized_keys/%u\n\
             StrictModes no\n\
             UsePAM no\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             PermitRootLogin prohibit-password\n\
             MaxStartups 100\n\
             MaxSessions 1000\n\
             # DEBUG would also send debug lines to clients' stderr.\n\
             LogLevel VERBOSE\n\
             Subsystem sftp internal-sftp\n",
            address = self.address,
            pid = root.join("sshd.pid").display(),
            root = root.display(),
        );
        for key in &self.host_keys {
            config.push_str(&format!("HostKey {}\n", key.private.display()));
        }
        for line in extra {
            config.push_str(line);
            config.push('\n');
        }
        fs::write(root.join("sshd_config"), config).expect("write sshd_config");
    }

    /// Spawns sshd on `port` and waits for its banner; false when it could not listen.
    fn spawn(&mut self, port: u16) -> bool {
        let root = self.dir.path();
        let log = fs::File::create(root.join("sshd.log")).expect("create sshd.log");
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(root.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn /usr/sbin/sshd (is openssh-server installed?)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                let _ = status;
                self.child = None;
                return false;
            }
            if banner_ok(SocketAddrV4::new(self.address, port)) {
                self.port = port;
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "sshd did not answer on port {port} within 10 s; log:\n{}",
            self.log()
        );
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((self.address, self.port))
    }

    /// The user the client keys were authorized for.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The harness's temp dir; tests may put their own files here.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn host_keys(&self) -> &[KeyPair] {
        &self.host_keys
    }

    pub fn client_keys(&self) -> &[KeyPair] {
        &self.client_keys
    }

    /// The first client key's private key file.
    pub fn client_key(&self) -> &Path {
        &self
            .client_keys
            .first()
            .expect("no client keys were requested")
            .private
    }

    /// The client key of the given type.
    pub fn client_key_of(&self, key_type: KeyType) -> &Path {
        &self
            .client_keys
            .iter()
            .find(|k| k.key_type == key_type)
            .expect("no client key of that type was requested")
            .private
    }

    /// One known_hosts line per host key, in the `[address]:port` form OpenSSH writes.
    pub fn known_hosts_lines(&self) -> Vec<String> {
        self.host_keys
            .iter()
            .map(|k| {
                let line = k.public_line();
                let mut fields = line.split_whitespace();
                let (kind, blob) = (fields.next().unwrap_or(""), fields.next().unwrap_or(""));
                format!("[{}]:{} {kind} {blob}", self.address, self.port)
            })
            .collect()
    }

    /// A known_hosts file with every host key, written at start; tests may edit it.
    pub fn known_hosts_file(&self) -> PathBuf {
        self.dir.path().join("known_hosts")
    }

    /// Authorizes a public key file for `user` (appending to that user's authorized_keys).
    pub fn authorize(&self, user: &str, public_key: &Path) {
        let line = fs::read_to_string(public_key).expect("read public key");
        let path = self.dir.path().join("authorized_keys").join(user);
        let mut text = fs::read_to_string(&path).unwrap_or_default();
        text.push_str(line.trim());
        text.push('\n');
        fs::write(&path, text).expect("write authorized_keys");
    }

    /// Generates a key pair in the temp dir, optionally encrypted with `passphrase`.
    pub fn generate_key(&self, name: &str, key_type: KeyType, passphrase: Option<&str>) -> KeyPair {
        generate_key(self.dir.path(), name, key_type, passphrase)
    }

    /// sshd's debug log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    /// Kills the sshd processes (listener and per-connection ones) the way a crash or a pulled
    /// cable would, and leaves the remote commands running to see their input end.
    pub fn kill_server(&mut self) {
        self.kill(|pid| comm(pid).as_deref() == Some("sshd"));
    }

    fn kill(&mut self, which: impl Fn(u32) -> bool) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pids: Vec<u32> = descendants(child.id())
            .into_iter()
            .filter(|&p| which(p))
            .collect();
        let _ = child.kill();
        let _ = child.wait();
        for pid in pids {
            if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
    }

    /// The pids of the sshd session processes started so far (one per connection).
    pub fn session_pids(&self) -> Vec<u32> {
        self.child
            .as_ref()
            .map(|c| children_of(c.id()))
            .unwrap_or_default()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.kill(|_| true);
    }
}

fn generate_key(dir: &Path, name: &str, key_type: KeyType, passphrase: Option<&str>) -> KeyPair {
    let private = dir.join(name);
    let status = Command::new("ssh-keygen")
        .arg("-q")
        .args(key_type.keygen_args())
        .arg("-N")
        .arg(passphrase.unwrap_or(""))
        .arg("-C")
        .arg(format!("testkit-{name}"))
        .arg("-f")
        .arg(&private)
        .stdin(Stdio::null())
        .status()
        .expect("run ssh-keygen (is openssh-client installed?)");
    assert!(status.success(), "ssh-keygen failed for {name}");
    let public = dir.join(format!("{name}.pub"));
    KeyPair {
        key_type,
        private,
        public,
    }
}

fn free_port(address: Ipv4Addr) -> u16 {
    crate::ports::server_port(&[address], &[]).expect("a free port")
}

fn banner_ok(addr: SocketAddrV4) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr.into(), Duration::from_millis(200))
    else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut buf = [0u8; 8];
    stream.read_exact(&mut buf).is_ok() && buf.starts_with(b"SSH-2.0")
}

/// Children of `pid`, from /proc (sshd's session processes call setsid, so a process group
/// kill would miss them).
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| parent_of(p) == Some(pid))
        .collect()
}

fn descendants(pid: u32) -> Vec<u32> {
    let mut all = Vec::new();
    let mut frontier = vec![pid];
    while let Some(p) = frontier.pop() {
        for child in children_of(p) {
            all.push(child);
            frontier.push(child);
        }
    }
    all
}

fn comm(pid: u32) -> Option<String> {
    Some(
        fs::read_to_string(format!("/proc/{pid}/comm"))
            .ok()?
            .trim_end()
            .to_owned(),
    )
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses; fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}
