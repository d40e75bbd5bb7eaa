//! `ship cp`: copies between this machine (files, or stdin/stdout) and one host, over one
//! session. Remote writes are transactions; local writes go through a temp file and a rename.
//! Nothing here prints: progress goes to a [`Progress`] the caller implements.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::transaction::ApplyError;
use crate::{
    ConnectOptions, RemotePath, Session, ShipError, Source, Stats, Sudo, Upload, UploadOptions,
};

/// One operand of a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operand {
    /// `-`: stdin as a source, stdout as the destination.
    Stdio,
    Local(PathBuf),
    Remote(RemotePath),
}

impl Operand {
    /// `-`, `[user@]host:path` (remote when a ':' comes before any '/', as scp reads it), or a
    /// local path.
    pub fn parse(text: &str) -> Result<Operand, CopyError> {
        Ok(match (text, RemotePath::parse(text)?) {
            ("-", _) => Operand::Stdio,
            (_, Some(remote)) => Operand::Remote(remote),
            (_, None) => Operand::Local(PathBuf::from(text)),
        })
    }
}

/// A checked copy: the sources and the destination make sense together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyRequest {
    sources: Vec<Operand>,
    dest: Operand,
}

impl CopyRequest {
    /// From `SRC... DEST` as typed on the command line.
    pub fn parse(operands: &[String]) -> Result<CopyRequest, CopyError> {
        let (dest_text, source_texts) = operands.split_last().ok_or(CopyError::NoOperands)?;
        let dest = Operand::parse(dest_text)?;
        let sources = source_texts
            .iter()
            .map(|s| Operand::parse(s))
            .collect::<Result<Vec<_>, _>>()?;
        if sources.is_empty() {
            return Err(CopyError::NoOperands);
        }
        if sources.len() > 1 && sources.contains(&Operand::Stdio) {
            return Err(CopyError::StdioNotAlone);
        }
        match &dest {
            Operand::Remote(target) => {
                for source in &sources {
                    match source {
                        Operand::Remote(_) => return Err(CopyError::RemoteToRemote),
                        Operand::Stdio if target.path.ends_with('/') => {
                            return Err(CopyError::NeedsFileName {
                                dest: dest_text.clone(),
                            });
                        }
                        _ => {}
                    }
                }
            }
            Operand::Stdio | Operand::Local(_) => {
                let mut hosts = sources.iter().map(|s| match s {
                    Operand::Remote(r) => Ok(&r.dest),
                    _ => Err(CopyError::NoRemoteSide),
                });
                let first = hosts.next().ok_or(CopyError::NoOperands)??;
                for host in hosts {
                    if host? != first {
                        return Err(CopyError::SeveralHosts);
                    }
                }
            }
        }
        Ok(CopyRequest { sources, dest })
    }

    pub fn sources(&self) -> &[Operand] {
        &self.sources
    }

    pub fn dest(&self) -> &Operand {
        &self.dest
    }
}

/// How a copy writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyOptions {
    /// Permissions of the written files, remote or local.
    pub mode: u32,
    /// Read and write remote files as root through `sudo -n`.
    pub sudo: Sudo,
}

impl Default for CopyOptions {
    fn default() -> Self {
        CopyOptions {
            mode: 0o600,
            sudo: Sudo::No,
        }
    }
}

/// What a copy reports while it runs; every method does nothing unless implemented.
pub trait Progress {
    /// The session to `host` is up.
    fn connected(&mut self, _host: &str, _took: Duration) {}
    /// `done` of the `total` bytes of a local file have been read for `target`.
    fn sent(&mut self, _target: &str, _done: u64, _total: u64) {}
}

/// A [`Progress`] that reports nothing.
pub struct Quiet;

impl Progress for Quiet {}

/// The `-` operand's streams.
pub struct Stdio<'a> {
    pub stdin: &'a mut dyn Read,
    pub stdout: &'a mut dyn Write,
}

/// What a copy did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Copied {
    /// Files written (a stream counts as one).
    pub files: usize,
    /// The cost of the session.
    pub stats: Stats,
}

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("expected SRC... DEST")]
    NoOperands,
    #[error("`-` can only be the single source")]
    StdioNotAlone,
    #[error("copying between two remote hosts is not supported")]
    RemoteToRemote,
    #[error("{dest}: needs a file name when the source is `-`")]
    NeedsFileName { dest: String },
    #[error("one side of a copy must be remote ([user@]host:path)")]
    NoRemoteSide,
    #[error("all remote sources must be on the same host (ship uses one session)")]
    SeveralHosts,
    #[error("{path}: no file name")]
    NoFileName { path: String },
    #[error("{}: not a directory (several sources)", path.display())]
    NotADirectory { path: PathBuf },
    #[error("{}: cannot open: {cause}", path.display())]
    Open {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{}: cannot create a file: {cause}", dir.display())]
    CreateTemp { dir: PathBuf, cause: std::io::Error },
    #[error("{}: cannot write: {cause}", path.display())]
    Write {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error(transparent)]
    Ship(#[from] ShipError),
    #[error(transparent)]
    Apply(#[from] ApplyError),
}

impl CopyError {
    /// Connection and authentication failures, which `ship` reports with exit status 255.
    pub fn is_connection_failure(&self) -> bool {
        match self {
            CopyError::Ship(e) => e.is_connection_failure(),
            CopyError::Apply(e) => e.is_connection_failure(),
            _ => false,
        }
    }
}

/// Runs `request` over one session to its remote side.
pub fn copy(
    request: &CopyRequest,
    connect: &ConnectOptions,
    opts: CopyOptions,
    stdio: Stdio<'_>,
    progress: &mut dyn Progress,
) -> Result<Copied, CopyError> {
    let many = request.sources.len() > 1;
    let upload = UploadOptions {
        mode: opts.mode,
        sudo: opts.sudo,
    };
    match &request.dest {
        Operand::Remote(target) => {
            let session = open(&target.dest, connect, progress)?;
            let mut locals = Vec::new();
            let mut files = 0;
            for source in &request.sources {
                match source {
                    Operand::Local(path) => {
                        let remote = if many || target.path.ends_with('/') {
                            let name =
                                path.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
                                    CopyError::NoFileName {
                                        path: path.display().to_string(),
                                    }
                                })?;
                            format!("{}/{name}", target.path.trim_end_matches('/'))
                        } else {
                            target.path.clone()
                        };
                        let open_err = |cause| CopyError::Open {
                            path: path.clone(),
                            cause,
                        };
                        let file = std::fs::File::open(path).map_err(open_err)?;
                        let len = file.metadata().map_err(open_err)?.len();
                        locals.push((file, len, remote));
                    }
                    _ => {
                        session.upload(Source::Stream(stdio.stdin), &target.path, upload)?;
                        files += 1;
                    }
                }
            }
            files += locals.len();
            upload_local(&session, &mut locals, upload, progress)?;
            Ok(Copied {
                files,
                stats: session.stats(),
            })
        }
        Operand::Stdio | Operand::Local(_) => {
            let remotes: Vec<&RemotePath> = request
                .sources
                .iter()
                .filter_map(|s| match s {
                    Operand::Remote(r) => Some(r),
                    _ => None,
                })
                .collect();
            let first = remotes.first().ok_or(CopyError::NoRemoteSide)?;
            let session = open(&first.dest, connect, progress)?;
            for remote in &remotes {
                match &request.dest {
                    Operand::Local(path) => {
                        let target = if path.is_dir() {
                            path.join(file_name(&remote.path).ok_or_else(|| {
                                CopyError::NoFileName {
                                    path: remote.path.clone(),
                                }
                            })?)
                        } else if many {
                            return Err(CopyError::NotADirectory { path: path.clone() });
                        } else {
                            path.clone()
                        };
                        write_local(&target, opts.mode, |file| {
                            session.download_to(&remote.path, opts.sudo, file)
                        })?;
                    }
                    _ => session.download_to(&remote.path, opts.sudo, &mut *stdio.stdout)?,
                }
            }
            Ok(Copied {
                files: remotes.len(),
                stats: session.stats(),
            })
        }
    }
}

fn open(
    dest: &crate::Destination,
    connect: &ConnectOptions,
    progress: &mut dyn Progress,
) -> Result<Session, CopyError> {
    let start = Instant::now();
    let session = Session::connect(dest, connect)?;
    progress.connected(session.host(), start.elapsed());
    Ok(session)
}

fn file_name(path: &str) -> Option<&str> {
    path.rsplit('/')
        .next()
        .filter(|n| !n.is_empty() && *n != "." && *n != "..")
}

/// All local files in one batch, reporting progress as they are read.
fn upload_local(
    session: &Session,
    files: &mut [(std::fs::File, u64, String)],
    opts: UploadOptions,
    progress: &mut dyn Progress,
) -> Result<(), CopyError> {
    // The readers share the one progress sink; they are read one after another.
    let progress = std::cell::RefCell::new(progress);
    let mut readers: Vec<Reported> = files
        .iter_mut()
        .map(|(file, len, remote)| Reported {
            inner: file,
            done: 0,
            total: *len,
            target: remote,
            progress: &progress,
        })
        .collect();
    let mut batch: Vec<Upload> = readers
        .iter_mut()
        .map(|r| Upload {
            len: r.total,
            remote_path: r.target.to_owned(),
            source: r,
        })
        .collect();
    session.upload_batch(&mut batch, opts)?;
    Ok(())
}

struct Reported<'a, 'p> {
    inner: &'a mut dyn Read,
    done: u64,
    total: u64,
    target: &'a str,
    progress: &'a std::cell::RefCell<&'p mut dyn Progress>,
}

impl Read for Reported<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        // n == 0 is the read after the last byte, already reported.
        if n > 0 {
            self.done += n as u64;
            self.progress
                .borrow_mut()
                .sent(self.target, self.done, self.total);
        }
        Ok(n)
    }
}

/// Writes a local file from `fill`. A regular file (or a new one) is written to a temp file
/// beside it and renamed into place, so a failed download leaves the old file (or none); it
/// gets `mode`. A symbolic link is followed, and its target written the same way, so the link
/// stays. Anything else (a device such as /dev/null, a FIFO) is written through as it is,
/// never replaced by a regular file.
pub(crate) fn write_local(
    target: &Path,
    mode: u32,
    fill: impl FnOnce(&mut std::fs::File) -> Result<(), ShipError>,
) -> Result<(), CopyError> {
    use std::os::unix::fs::PermissionsExt;
    let write_err = |cause| CopyError::Write {
        path: target.to_owned(),
        cause,
    };
    let real = match std::fs::symlink_metadata(target) {
        Ok(meta) if meta.file_type().is_symlink() => std::fs::canonicalize(target).ok(),
        _ => Some(target.to_owned()),
    };
    let through = match &real {
        // A dangling link: writing through it creates its target, as cp does.
        None => true,
        Some(real) => std::fs::metadata(real).is_ok_and(|m| !m.is_file()),
    };
    if through {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(target)
            .map_err(write_err)?;
        return fill(&mut file).map_err(CopyError::from);
    }
    let real = real.unwrap_or_else(|| target.to_owned());
    let dir = real
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    sweep_local(dir);
    let mut tmp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .rand_bytes(TEMP_RANDOM)
        .tempfile_in(dir)
        .map_err(|cause| CopyError::CreateTemp {
            dir: dir.to_owned(),
            cause,
        })?;
    fill(tmp.as_file_mut())?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(write_err)?;
    tmp.persist(&real).map_err(|e| write_err(e.error))?;
    Ok(())
}

const TEMP_PREFIX: &str = ".ship.";
const TEMP_RANDOM: usize = 6;

/// Removes the temp files of local downloads that were killed (a temp file is removed when
/// its download ends in any other way), once nobody has written to them for an hour: a
/// concurrent download's file is never touched. Best effort, as on the node.
fn sweep_local(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let hour = Duration::from_secs(3600);
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let ours = name.len() == TEMP_PREFIX.len() + TEMP_RANDOM
            && name.starts_with(TEMP_PREFIX)
            && name[TEMP_PREFIX.len()..]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric());
        let stale = entry.metadata().is_ok_and(|m| {
            m.is_file()
                && m.modified()
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > hour)
        });
        if ours && stale {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}
