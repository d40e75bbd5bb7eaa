//! The control-plane node as the pipelines see it: read a file, write one atomically, run a
//! command, all as root. Over SSH that is one `ship` session with `sudo -n`; locally it is the
//! file system. `--root DIR` makes a sandbox directory stand in for the node's `/`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The output of a command on the node.
pub struct Ran {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

enum Transport {
    Ssh(Box<ship::Session>),
    Local,
}

pub struct Node {
    transport: Transport,
    /// Where the node's `/` is; `/` itself unless `--root` was given.
    root: PathBuf,
    describe: String,
}

impl Node {
    pub fn ssh(session: ship::Session, root: Option<&Path>, describe: String) -> Node {
        Node {
            transport: Transport::Ssh(Box::new(session)),
            root: root.map_or_else(|| PathBuf::from("/"), Path::to_path_buf),
            describe,
        }
    }

    pub fn local(root: Option<&Path>) -> Result<Node> {
        // On the real `/` we edit the kubelet's manifests: that needs root. A sandbox does not.
        if root.is_none() && !is_root() {
            bail!("the local variant edits /etc/kubernetes on this machine and needs root: run it with sudo, or pass --root DIR for a sandbox");
        }
        Ok(Node {
            transport: Transport::Local,
            root: root.map_or_else(|| PathBuf::from("/"), Path::to_path_buf),
            describe: match root {
                Some(r) => format!("this machine, sandbox root {}", r.display()),
                None => "this machine".into(),
            },
        })
    }

    pub fn describe(&self) -> &str {
        &self.describe
    }

    /// A node path (as the kubelet sees it) mapped into `--root`.
    pub fn path(&self, node_path: &str) -> String {
        self.root
            .join(node_path.trim_start_matches('/'))
            .to_string_lossy()
            .into_owned()
    }

    pub fn stats(&self) -> Option<ship::Stats> {
        match &self.transport {
            Transport::Ssh(session) => Some(session.stats()),
            Transport::Local => None,
        }
    }

    pub fn read(&self, node_path: &str) -> Result<Vec<u8>> {
        let path = self.path(node_path);
        match &self.transport {
            Transport::Ssh(session) => Ok(session.download(&path, true)?),
            Transport::Local => std::fs::read(&path).with_context(|| format!("reading {path}")),
        }
    }

    /// Writes through a temporary file beside the target and a rename, so the kubelet never
    /// sees half a manifest. The temporary name is a dotfile: the kubelet ignores those.
    pub fn write(&self, node_path: &str, bytes: &[u8], mode: u32) -> Result<()> {
        let path = self.path(node_path);
        match &self.transport {
            Transport::Ssh(session) => Ok(session.upload_bytes(bytes, &path, mode, true)?),
            Transport::Local => write_local(Path::new(&path), bytes, mode),
        }
    }

    /// `mkdir -p`, then root-owned 0700: audit files may hold request bodies with secrets.
    pub fn make_private_dir(&self, node_path: &str) -> Result<()> {
        let path = self.path(node_path);
        match &self.transport {
            Transport::Ssh(_) => {
                self.run_checked(&["mkdir", "-p", &path])?;
                self.run_checked(&["chmod", "0700", &path])?;
                self.run_checked(&["chown", "root:root", &path])?;
                Ok(())
            }
            Transport::Local => {
                use std::os::unix::fs::PermissionsExt;
                std::fs::create_dir_all(&path).with_context(|| format!("creating {path}"))?;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700))
                    .with_context(|| format!("chmod 0700 {path}"))?;
                Ok(())
            }
        }
    }

    pub fn remove(&self, node_path: &str) -> Result<()> {
        self.run_checked(&["rm", "-rf", "--", &self.path(node_path)])
            .map(drop)
    }

    /// Runs a command as root on the node. Arguments are passed as they are (ship quotes them).
    pub fn run(&self, argv: &[&str]) -> Result<Ran> {
        match &self.transport {
            Transport::Ssh(session) => {
                let out = session.exec(argv, true)?;
                Ok(Ran {
                    status: out.status,
                    stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                    stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
                })
            }
            Transport::Local => {
                let (program, args) = argv.split_first().context("empty command")?;
                let out = Command::new(program)
                    .args(args)
                    .output()
                    .with_context(|| format!("running {program}"))?;
                Ok(Ran {
                    status: out.status.code().unwrap_or(128),
                    stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                    stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
                })
            }
        }
    }

    pub fn run_checked(&self, argv: &[&str]) -> Result<Ran> {
        let ran = self.run(argv)?;
        if ran.status != 0 {
            bail!(
                "`{}` failed on {} with status {}: {}",
                argv.join(" "),
                self.describe,
                ran.status,
                ran.stderr.trim()
            );
        }
        Ok(ran)
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

fn write_local(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let dir = path.parent().context("a file path has a parent")?;
    let name = path.file_name().context("a file path has a name")?;
    let temp = dir.join(format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id()));
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temp)?;
        file.write_all(bytes)?;
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result.with_context(|| format!("writing {}", path.display()))
}
