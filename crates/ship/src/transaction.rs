//! The one remote transaction: stage files as dotfiles beside their targets, check their sizes,
//! set mode and owner, and rename them into place only when every file is staged. Uploads,
//! batches and the pipeline's apply step all run it, over a [`Session`] or as a local child
//! process ([`Transaction::apply_local`]).

use std::borrow::Cow;
use std::io::Read;

use crate::ops::{INCOMPLETE, script_argv, script_error, split_path};
use crate::quote::{command_line, quote};
use crate::{ExecOptions, Session, ShipError};

/// A shell function `sweep DIR`: removes ship's temp files in DIR that nobody has written to
/// for an hour: the leftovers of an upload whose client was killed, never the temp file of an
/// upload still running (its data keep its time fresh). Best effort: a find without `-mmin` or
/// `-maxdepth` removes nothing. The names are this version's `.NAME.ship-TOKEN.tmp` and the
/// `.ship.XXXXXXXX` of earlier ones.
macro_rules! sweep_fn {
    () => {
        r#"sweep() {
  case $1 in /*) p=$1 ;; *) p=./$1 ;; esac
  find "$p" -maxdepth 1 -type f \( -name '.*.ship-????????????????.tmp' -o -name '.ship.????????' -o -name '.ship.????????????????' \) -mmin +60 -exec rm -f -- {} + 2>/dev/null
}
"#
    };
}
pub(crate) use sweep_fn;

/// Runs the ops given as arguments: `$1` is `root` (chown what it creates to 0:0 when it runs
/// as root) or `-`; then `d PATH` (a private directory) and `f|n DIR NAME STAGED MODE SIZE`
/// (a file; `n` must not replace an existing target). The file contents arrive on stdin in op
/// order.
///
/// 1. check: creates missing directories (0700; an existing one is used as it is), refuses
///    missing target directories, directory targets, targets that are not regular files (a
///    symbolic link would be replaced by a file, its target left as it was; a device or a
///    FIFO would become a file) and existing `n` targets, and removes ship's temp files older
///    than an hour in each target directory, all before any data is read;
/// 2. stage: cuts each file off stdin into STAGED (a fresh name, created exclusively), sets its
///    owner, then its mode (chown clears set-user-ID bits). Only the last file with data and
///    the last file overall are measured: the cuts are exact, so a short stream leaves one of
///    them short, and extra bytes land in the last one (read to the end of input);
/// 3. commit: prints `staged`, then renames the `n` files (by hard link, which never replaces
///    a file), then the `f` files, each in op order, printing `committed INDEX` after each
///    one, and `done` at the end. From here on a hang-up is ignored, so a lost connection does
///    not stop the renames half way.
///
/// A failure prints `failed INDEX [GOT]` and exits with one of the statuses of
/// [`crate::ops`]; the EXIT trap removes whatever this run staged and did not rename. Every
/// pass is called with exactly the ops as its arguments, so the trap reads the same list
/// whichever function it fires in.
pub(crate) const SCRIPT: &str = concat!(
    sweep_fn!(),
    r#"set -u -C
umask 077
owner=$1; shift
me=
if [ "$owner" = root ]; then me=$(id -u); fi
took=-1 lastf=-1 lastn=-1 swept= cutter= i=0 k=
own() { if [ "$me" = 0 ]; then chown 0:0 -- "$1"; else :; fi; }
stop() { echo "failed $i ${got-}"; exit "$1"; }
take() {
  if [ -z "$cutter" ]; then
    if head --version 2>/dev/null | grep -q coreutils; then cutter=head; else cutter=dd; fi
  fi
  if [ "$cutter" = head ]; then head -c "$1"; else dd bs=1 count="$1" 2>/dev/null; fi
}
check() {
  i=0
  while [ $# -gt 0 ]; do
    case $1 in
      d) if [ ! -d "$2" ]; then
           if [ -e "$2" ] || [ -h "$2" ]; then echo "ship: $2: exists and is not a directory" >&2; stop 92; fi
           mkdir -p -- "$2" && own "$2" || stop 92
         fi
         shift 2 ;;
      f|n) t=$2/$3
         if [ ! -d "$2" ]; then echo "ship: $2: no such directory" >&2; stop 91; fi
         if [ -d "$t" ]; then echo "ship: $t: is a directory" >&2; stop 94; fi
         if [ -h "$t" ] || { [ -e "$t" ] && [ ! -f "$t" ]; }; then echo "ship: $t: not a regular file" >&2; stop 96; fi
         if [ "$1" = n ] && { [ -e "$t" ] || [ -h "$t" ]; }; then echo "ship: $t: already exists" >&2; stop 95; fi
         if [ "$2" != "$swept" ]; then sweep "$2"; swept=$2; fi
         lastf=$i
         if [ "$6" != 0 ]; then lastn=$i; fi
         shift 6 ;;
      *) echo "ship: unknown op $1" >&2; exit 2 ;;
    esac
    i=$((i + 1))
  done
}
stage() {
  i=0
  while [ $# -gt 0 ]; do
    case $1 in
      d) shift 2 ;;
      *) s=$2/$4
         true > "$s" || stop 92
         took=$i
         if [ "$i" = "$lastf" ]; then cat >> "$s"; else take "$6" >> "$s"; fi || stop 92
         if [ "$i" = "$lastf" ] || [ "$i" = "$lastn" ]; then
           got=$(($(wc -c < "$s")))
           if [ "$got" -ne "$6" ]; then echo "ship: $2/$3: got $got of $6 bytes" >&2; stop 93; fi
           unset got
         fi
         own "$s" || stop 92
         if [ "$5" != 600 ]; then chmod "$5" -- "$s" || stop 92; fi
         shift 6 ;;
    esac
    i=$((i + 1))
  done
}
commit() {
  i=0
  while [ $# -gt 0 ]; do
    case $1 in
      d) shift 2 ;;
      *) if [ "$1" = "$k" ]; then
           s=$2/$4 t=$2/$3
           if [ "$k" = n ]; then
             if [ -e "$t" ] || [ -h "$t" ]; then echo "ship: $t: already exists" >&2; stop 95; fi
             ln -- "$s" "$t" || stop 92
             rm -f -- "$s"
           else
             if [ -d "$t" ]; then echo "ship: $t: is a directory" >&2; stop 94; fi
             mv -f -- "$s" "$t" || stop 92
           fi
           echo "committed $i"
         fi
         shift 6 ;;
    esac
    i=$((i + 1))
  done
}
cleanup() {
  i=0
  while [ $# -gt 0 ]; do
    case $1 in
      d) shift 2 ;;
      *) if [ "$i" -le "$took" ]; then rm -f -- "$2/$4"; fi; shift 6 ;;
    esac
    i=$((i + 1))
  done
}
trap 'cleanup "$@"' EXIT
trap 'exit 99' HUP PIPE TERM
check "$@"
stage "$@"
trap '' HUP PIPE TERM
echo staged
k=n; commit "$@"
k=f; commit "$@"
trap - EXIT
echo done
"#
);

/// The `$0` of the script, shown by `ps` on the node.
const NAME: &str = "ship-apply";

/// sshd hands the whole command line to the login shell as one argument, and Linux caps a
/// single argument at 128 KiB.
pub(crate) const MAX_COMMAND_LINE: usize = 96 * 1024;

/// A fresh token for staged names: 16 hex digits from a per-process random seed, the process
/// id, the time and a counter, so that two runs (even two processes started in the same
/// nanosecond on two machines) never share a staged file. The script also creates each staged
/// file exclusively, so a clash fails instead of sharing.
pub(crate) fn token() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u32(std::process::id());
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    format!("{:016x}", hasher.finish())
}

/// The staged name of a file `name`: a dotfile (the kubelet ignores those in its manifest
/// directory) that says whose it is, short enough for NAME_MAX.
pub(crate) fn staged_name(name: &str) -> String {
    let mut end = name.len().min(200);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    format!(".{}.ship-{}.tmp", &name[..end], token())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
    /// Never replaces an existing target (a backup).
    NewFile,
}

enum Content<'a> {
    None,
    Bytes(Cow<'a, [u8]>),
    Reader { reader: &'a mut dyn Read, len: u64 },
}

impl Content<'_> {
    fn len(&self) -> u64 {
        match self {
            Content::None => 0,
            Content::Bytes(bytes) => bytes.len() as u64,
            Content::Reader { len, .. } => *len,
        }
    }
}

struct Op<'a> {
    kind: Kind,
    path: String,
    mode: u32,
    /// The staged file's name, chosen when the op is added.
    staged: String,
    content: Content<'a>,
}

/// Files (and private directories) that land together or not at all. Build it with
/// [`Transaction::file`] and friends; run it with [`Session::apply`] or
/// [`Transaction::apply_local`], or run [`Transaction::invocation`] with
/// [`Transaction::input`] yourself and read the result with [`Transaction::outcome`].
///
/// Directories are created in op order before any file is staged (add a directory before the
/// files in it). Files are renamed into place only once every
/// one of them is staged: the no-clobber files ([`Transaction::new_file`]) first, then the
/// others in the order they were added, so the file that must come last (a static pod
/// manifest, which the kubelet acts on) is added last.
///
/// A transaction with [`Transaction::file_from`] readers runs once: a second run would find
/// them read.
#[derive(Default)]
pub struct Transaction<'a> {
    ops: Vec<Op<'a>>,
    root_owned: bool,
}

impl<'a> Transaction<'a> {
    pub fn new() -> Transaction<'a> {
        Transaction::default()
    }

    /// When the script runs as root, what it creates is chowned to 0:0 (a directory's
    /// set-group-ID bit could otherwise hand a file another group).
    pub fn root_owned(&mut self) -> &mut Self {
        self.root_owned = true;
        self
    }

    /// A directory, created with its missing parents as 0700 (root-owned under
    /// [`Transaction::root_owned`]) when it does not exist. An existing directory is used as
    /// it is: its mode and owner are never changed.
    pub fn private_dir(&mut self, path: impl Into<String>) -> &mut Self {
        self.push(Kind::Dir, path.into(), 0o700, Content::None)
    }

    /// A file that replaces its target (or creates it).
    pub fn file(
        &mut self,
        path: impl Into<String>,
        mode: u32,
        bytes: impl Into<Cow<'a, [u8]>>,
    ) -> &mut Self {
        self.push(Kind::File, path.into(), mode, Content::Bytes(bytes.into()))
    }

    /// A file whose target must not exist yet (a backup): an existing one fails the
    /// transaction before anything is replaced.
    pub fn new_file(
        &mut self,
        path: impl Into<String>,
        mode: u32,
        bytes: impl Into<Cow<'a, [u8]>>,
    ) -> &mut Self {
        self.push(
            Kind::NewFile,
            path.into(),
            mode,
            Content::Bytes(bytes.into()),
        )
    }

    /// Like [`Transaction::file`], with exactly `len` bytes read from `reader` while the
    /// transaction runs (a source that ends early fails it before anything is replaced).
    pub fn file_from(
        &mut self,
        path: impl Into<String>,
        mode: u32,
        reader: &'a mut dyn Read,
        len: u64,
    ) -> &mut Self {
        self.push(
            Kind::File,
            path.into(),
            mode,
            Content::Reader { reader, len },
        )
    }

    fn push(&mut self, kind: Kind, path: String, mode: u32, content: Content<'a>) -> &mut Self {
        let name = path.rsplit('/').next().unwrap_or_default();
        let staged = match kind {
            Kind::Dir => String::new(),
            Kind::File | Kind::NewFile => staged_name(name),
        };
        self.ops.push(Op {
            kind,
            path,
            mode: mode & 0o7777,
            staged,
            content,
        });
        self
    }

    /// The files' target paths, in op order.
    pub fn targets(&self) -> Vec<&str> {
        self.ops
            .iter()
            .filter(|op| op.kind != Kind::Dir)
            .map(|op| op.path.as_str())
            .collect()
    }

    /// How many bytes [`Transaction::input`] gives.
    pub fn input_len(&self) -> u64 {
        self.ops.iter().map(|op| op.content.len()).sum()
    }

    /// The script and its arguments: run it as `sh -c SCRIPT ship-apply ARGS...` (see
    /// [`Invocation::argv`]) with [`Transaction::input`] on its stdin, as root for
    /// root-owned files. `host` names the node in errors.
    pub fn invocation(&self, host: &str) -> Result<Invocation, ApplyError> {
        let mut args = vec![if self.root_owned { "root" } else { "-" }.to_owned()];
        for op in &self.ops {
            if op.kind == Kind::Dir {
                if op.path.is_empty() || op.path.contains('\0') {
                    let cause = ShipError::InvalidRemotePath {
                        host: host.to_owned(),
                        path: op.path.clone(),
                        reason: "expected a directory path without NUL bytes",
                    };
                    return Err(ApplyError::before(Some(&op.path), cause, self.targets()));
                }
                args.extend(["d".to_owned(), op.path.clone()]);
                continue;
            }
            let (dir, name) = split_path(host, &op.path)
                .map_err(|cause| ApplyError::before(Some(&op.path), cause, self.targets()))?;
            args.extend([
                if op.kind == Kind::NewFile { "n" } else { "f" }.to_owned(),
                dir,
                name,
                op.staged.clone(),
                format!("{:o}", op.mode),
                op.content.len().to_string(),
            ]);
        }
        Ok(Invocation {
            script: SCRIPT,
            args,
        })
    }

    /// The file contents back to back, in op order, as the script reads them. A reader that
    /// ends early is an error, so the script is never handed the next file's bytes as the
    /// rest of this one.
    pub fn input(&mut self) -> Input<'_, 'a> {
        Input {
            ops: &mut self.ops,
            index: 0,
            sent: 0,
        }
    }

    /// Everything [`Transaction::input`] gives, in memory: for running the script as a local
    /// child process.
    pub fn input_bytes(&mut self) -> std::io::Result<Vec<u8>> {
        let mut bytes = Vec::new();
        self.input().read_to_end(&mut bytes)?;
        Ok(bytes)
    }

    /// What a run of the script did, from its exit status and output: `Ok` when every file was
    /// replaced, else what was and what was not.
    pub fn outcome(
        &self,
        host: &str,
        status: i32,
        stdout: &[u8],
        stderr: &[u8],
    ) -> Result<(), ApplyError> {
        if status == 0 {
            return Ok(());
        }
        let progress = Progress::parse(stdout);
        let failed = progress.failed.and_then(|(i, _)| self.ops.get(i));
        let path = failed.map_or_else(
            || {
                self.targets()
                    .first()
                    .copied()
                    .unwrap_or_default()
                    .to_owned()
            },
            |op| op.path.clone(),
        );
        let cause = match status {
            INCOMPLETE => ShipError::IncompleteUpload {
                host: host.to_owned(),
                path: path.clone(),
                sent: progress.failed.and_then(|(_, got)| got).unwrap_or(0),
            },
            _ => script_error(host, &path, "upload to", status, stderr),
        };
        Err(self.classify(&progress, cause, failed.map(|op| op.path.as_str()), false))
    }

    /// Sorts the targets by what the script reported: `maybe_ran` says the node may have
    /// carried on where its reports stop (the connection broke after it had every byte).
    fn classify(
        &self,
        progress: &Progress,
        cause: ShipError,
        failed: Option<&str>,
        maybe_ran: bool,
    ) -> ApplyError {
        let targets = self.targets();
        if progress.done {
            return ApplyError {
                phase: Phase::AfterCommit,
                committed: targets.iter().map(|t| (*t).to_owned()).collect(),
                unknown: Vec::new(),
                untouched: Vec::new(),
                failed: None,
                cause: Box::new(cause),
            };
        }
        if !progress.staged {
            if maybe_ran {
                return ApplyError {
                    phase: Phase::Unknown,
                    committed: Vec::new(),
                    unknown: targets.iter().map(|t| (*t).to_owned()).collect(),
                    untouched: Vec::new(),
                    failed: None,
                    cause: Box::new(cause),
                };
            }
            return ApplyError::before(failed, cause, targets);
        }
        let mut committed = Vec::new();
        let mut rest = Vec::new();
        for (i, op) in self.ops.iter().enumerate() {
            if op.kind == Kind::Dir {
                continue;
            }
            if progress.committed.contains(&i) {
                committed.push(op.path.clone());
            } else {
                rest.push(op.path.clone());
            }
        }
        // Once staged, the node renames on even without us: what we did not hear about may
        // have happened when the connection broke, and did not when the script stopped.
        let (unknown, untouched) = if maybe_ran {
            (rest, Vec::new())
        } else {
            (Vec::new(), rest)
        };
        ApplyError {
            phase: Phase::DuringCommit,
            committed,
            unknown,
            untouched,
            failed: failed.map(str::to_owned),
            cause: Box::new(cause),
        }
    }

    /// Runs the transaction on this machine, as the current user, with `sh -c` as a child
    /// process: the same script as over SSH. `host` names this machine in errors.
    pub fn apply_local(&mut self, host: &str) -> Result<(), ApplyError> {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let invocation = self.invocation(host)?;
        let targets: Vec<String> = self.targets().iter().map(|t| (*t).to_owned()).collect();
        let spawn_error = |cause| {
            let cause = ShipError::LocalCommand {
                host: host.to_owned(),
                command: "sh".to_owned(),
                cause,
            };
            ApplyError::before(None, cause, targets.iter().map(String::as_str).collect())
        };
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(invocation.script)
            .arg(NAME)
            .args(&invocation.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn_error)?;
        let stdin = child.stdin.take();
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        // Readers on threads of their own, so that neither pipe can fill while we write.
        let collect = |pipe: Option<Box<dyn Read + Send>>| {
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                if let Some(mut pipe) = pipe {
                    let _ = pipe.read_to_end(&mut bytes);
                }
                bytes
            })
        };
        let out = collect(stdout.map(|p| Box::new(p) as Box<dyn Read + Send>));
        let err = collect(stderr.map(|p| Box::new(p) as Box<dyn Read + Send>));
        let mut source_error = None;
        if let Some(mut stdin) = stdin {
            let mut input = self.input();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match input.read(&mut buf) {
                    Ok(0) => break,
                    // The script stops reading when it fails; its status says why.
                    Ok(n) => {
                        if stdin.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    Err(cause) => {
                        source_error = Some(cause);
                        break;
                    }
                }
            }
            // Dropping stdin is the end of input: a short source leaves a file short.
        }
        let status = child.wait().map_err(spawn_error)?;
        let stdout = out.join().unwrap_or_default();
        let stderr = err.join().unwrap_or_default();
        let status = status.code().unwrap_or(128);
        if let Some(cause) = source_error {
            let path = self
                .targets()
                .first()
                .copied()
                .unwrap_or_default()
                .to_owned();
            let cause = ShipError::ReadSource {
                host: host.to_owned(),
                path,
                cause,
            };
            if status != 0 {
                return Err(self.classify(&Progress::parse(&stdout), cause, None, false));
            }
        }
        self.outcome(host, status, &stdout, &stderr)
    }
}

/// What [`Transaction::input`] reads: every file's bytes in op order.
pub struct Input<'t, 'a> {
    ops: &'t mut [Op<'a>],
    index: usize,
    sent: u64,
}

impl Input<'_, '_> {
    /// Whether every byte has been read out.
    pub fn is_complete(&self) -> bool {
        self.ops[self.index..]
            .iter()
            .enumerate()
            .all(|(i, op)| op.content.len() == if i == 0 { self.sent } else { 0 })
    }
}

impl Read for Input<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while let Some(op) = self.ops.get_mut(self.index) {
            let len = op.content.len();
            let remaining = len - self.sent;
            if remaining == 0 {
                self.index += 1;
                self.sent = 0;
                continue;
            }
            let room = usize::try_from(remaining)
                .unwrap_or(usize::MAX)
                .min(buf.len());
            let n = match &mut op.content {
                Content::None => 0,
                Content::Bytes(bytes) => {
                    let start = self.sent as usize;
                    buf[..room].copy_from_slice(&bytes[start..start + room]);
                    room
                }
                Content::Reader { reader, .. } => reader.read(&mut buf[..room])?,
            };
            if n == 0 {
                let message = format!(
                    "the source for {} ended after {} of {} bytes",
                    op.path, self.sent, len
                );
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    message,
                ));
            }
            self.sent += n as u64;
            return Ok(n);
        }
        Ok(0)
    }
}

/// The script and its arguments (see [`Transaction::invocation`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub script: &'static str,
    pub args: Vec<String>,
}

impl Invocation {
    /// `sh -c SCRIPT ship-apply ARGS...`: for a child process, or quoted for a remote shell.
    pub fn argv(&self) -> Vec<&str> {
        let mut argv = vec!["sh", "-c", self.script, NAME];
        argv.extend(self.args.iter().map(String::as_str));
        argv
    }
}

/// The markers the script printed.
#[derive(Debug, Default, PartialEq, Eq)]
struct Progress {
    /// The op it stopped at, with the bytes it got when that was a size check.
    failed: Option<(usize, Option<u64>)>,
    staged: bool,
    committed: Vec<usize>,
    done: bool,
}

impl Progress {
    fn parse(stdout: &[u8]) -> Progress {
        let mut progress = Progress::default();
        for line in String::from_utf8_lossy(stdout).lines() {
            let mut words = line.split_whitespace();
            match (words.next(), words.next().and_then(|w| w.parse().ok())) {
                (Some("staged"), _) => progress.staged = true,
                (Some("done"), _) => progress.done = true,
                (Some("committed"), Some(i)) => progress.committed.push(i),
                (Some("failed"), Some(i)) => {
                    progress.failed = Some((i, words.next().and_then(|w| w.parse().ok())));
                }
                _ => {}
            }
        }
        progress
    }
}

/// Where a transaction was when it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Nothing was replaced.
    BeforeCommit,
    /// Some targets were replaced ([`ApplyError::committed`]), the others were not
    /// ([`ApplyError::untouched`]) or may have been ([`ApplyError::unknown`]).
    DuringCommit,
    /// Every target was replaced; the failure came afterwards.
    AfterCommit,
    /// The connection broke after the node had every byte and before it said whether it
    /// staged them: it may have replaced every target, or none.
    Unknown,
}

/// A transaction that failed, and what it left on the node.
#[derive(Debug, thiserror::Error)]
#[error("{cause}{}", self.summary())]
pub struct ApplyError {
    pub phase: Phase,
    /// Targets that were replaced.
    pub committed: Vec<String>,
    /// Targets that may or may not have been replaced.
    pub unknown: Vec<String>,
    /// Targets that were certainly not replaced.
    pub untouched: Vec<String>,
    /// The target whose op failed, when the node said.
    pub failed: Option<String>,
    pub cause: Box<ShipError>,
}

impl ApplyError {
    pub(crate) fn before(failed: Option<&str>, cause: ShipError, targets: Vec<&str>) -> ApplyError {
        ApplyError {
            phase: Phase::BeforeCommit,
            committed: Vec::new(),
            unknown: Vec::new(),
            untouched: targets.into_iter().map(str::to_owned).collect(),
            failed: failed.map(str::to_owned),
            cause: Box::new(cause),
        }
    }

    /// Connection and authentication failures (exit status 255 in the CLI).
    pub fn is_connection_failure(&self) -> bool {
        self.cause.is_connection_failure()
    }

    /// This error seen from a sequence of transactions: `earlier` were committed before it
    /// ran, `later` were never tried.
    pub(crate) fn within(mut self, earlier: Vec<String>, later: Vec<String>) -> ApplyError {
        if !earlier.is_empty() || !later.is_empty() {
            self.phase = match self.phase {
                Phase::BeforeCommit if earlier.is_empty() => Phase::BeforeCommit,
                Phase::AfterCommit if later.is_empty() => Phase::AfterCommit,
                Phase::Unknown if earlier.is_empty() => Phase::Unknown,
                _ => Phase::DuringCommit,
            };
        }
        self.committed.splice(0..0, earlier);
        self.untouched.extend(later);
        self
    }

    fn summary(&self) -> String {
        let list = |paths: &[String]| paths.join(", ");
        match self.phase {
            Phase::BeforeCommit => " (nothing was replaced)".to_owned(),
            Phase::AfterCommit => " (after every file was replaced)".to_owned(),
            Phase::Unknown => format!(
                " (the node had all the data: it may have replaced {} or nothing)",
                list(&self.unknown)
            ),
            Phase::DuringCommit => {
                let mut parts = vec![format!("replaced {}", list(&self.committed))];
                if !self.unknown.is_empty() {
                    parts.push(format!("maybe replaced {}", list(&self.unknown)));
                }
                if !self.untouched.is_empty() {
                    parts.push(format!("not replaced {}", list(&self.untouched)));
                }
                format!(" (while committing: {})", parts.join("; "))
            }
        }
    }
}

#[cfg(feature = "ssh")]
impl Session {
    /// Runs `transaction` on the node in one command: two round trips, plus one when it has
    /// data. The whole command line must fit in what a remote shell accepts (96 KiB).
    pub fn apply(
        &self,
        transaction: &mut Transaction<'_>,
        opts: ExecOptions,
    ) -> Result<(), ApplyError> {
        let invocation = transaction.invocation(self.host())?;
        let targets = transaction.targets();
        let during = match targets.as_slice() {
            [] => "a transaction".to_owned(),
            [one] => format!("upload to {one}"),
            [first, rest @ ..] => format!("upload to {first} and {} more", rest.len()),
        };
        let argv = script_argv(opts.sudo, NAME, invocation.script, &[]);
        let mut line = command_line(&argv);
        for arg in &invocation.args {
            line.push(' ');
            line.push_str(&quote(arg));
        }
        if line.len() > MAX_COMMAND_LINE {
            let cause = ShipError::CommandTooLong {
                host: self.host().to_owned(),
                what: during,
                len: line.len(),
                max: MAX_COMMAND_LINE,
            };
            return Err(ApplyError::before(None, cause, targets));
        }
        let has_input = transaction.input_len() > 0;
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let mut input = transaction.input();
        let result = self.run_tracked(
            &line,
            &during,
            if has_input { Some(&mut input) } else { None },
            &mut stdout,
            &mut stderr,
        );
        let complete = input.is_complete();
        match result {
            Ok(status) => transaction.outcome(self.host(), status, &stdout, &stderr),
            Err(failure) => {
                // Until the node has every byte, it cannot stage the last file, so it did
                // nothing; after that, only its reports tell.
                let maybe_ran = failure.exec_sent && complete;
                let progress = Progress::parse(&stdout);
                Err(transaction.classify(&progress, failure.error, None, maybe_ran))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_markers_parse() {
        assert_eq!(
            Progress::parse(b"staged\ncommitted 0\ncommitted 2\nfailed 3 \n"),
            Progress {
                failed: Some((3, None)),
                staged: true,
                committed: vec![0, 2],
                done: false,
            }
        );
        assert_eq!(
            Progress::parse(b"failed 1 17\n").failed,
            Some((1, Some(17)))
        );
        assert!(Progress::parse(b"staged\ndone\n").done);
    }

    fn three_files() -> Transaction<'static> {
        let mut tx = Transaction::new();
        tx.private_dir("/d")
            .file("/d/a", 0o600, &b"a"[..])
            .file("/d/b", 0o600, &b"b"[..])
            .file("/d/m", 0o600, &b"m"[..]);
        tx
    }

    fn lost() -> ShipError {
        ShipError::ConnectionLost {
            host: "node".into(),
            during: "upload".into(),
            message: "reset".into(),
        }
    }

    /// A broken connection: what the markers say, and what may have happened unheard.
    #[test]
    fn a_lost_connection_is_classified_by_the_markers_heard() {
        let tx = three_files();
        let classify = |stdout: &[u8], maybe_ran| {
            tx.classify(&Progress::parse(stdout), lost(), None, maybe_ran)
        };
        let e = classify(b"", false);
        assert_eq!((e.phase, e.untouched.len()), (Phase::BeforeCommit, 3));
        let e = classify(b"", true);
        assert_eq!((e.phase, e.unknown.len()), (Phase::Unknown, 3));
        assert!(
            e.to_string()
                .contains("may have replaced /d/a, /d/b, /d/m or nothing"),
            "{e}"
        );
        let e = classify(b"staged\ncommitted 1\n", true);
        assert_eq!(e.phase, Phase::DuringCommit);
        assert_eq!(
            (e.committed.as_slice(), e.unknown.as_slice()),
            (
                &["/d/a".to_owned()][..],
                &["/d/b".to_owned(), "/d/m".to_owned()][..]
            )
        );
        assert!(
            e.to_string()
                .ends_with("(while committing: replaced /d/a; maybe replaced /d/b, /d/m)"),
            "{e}"
        );
        let e = classify(
            b"staged\ncommitted 1\ncommitted 2\ncommitted 3\ndone\n",
            true,
        );
        assert_eq!((e.phase, e.committed.len()), (Phase::AfterCommit, 3));
    }

    /// Transactions in sequence (a batch too long for one command line): earlier ones count
    /// as replaced, later ones as untouched.
    #[test]
    fn errors_of_a_sequence_count_the_earlier_transactions() {
        let tx = three_files();
        let before = tx.classify(&Progress::default(), lost(), None, false);
        let e = before.within(vec!["/e/1".into()], vec!["/e/9".into()]);
        assert_eq!(e.phase, Phase::DuringCommit);
        assert_eq!(e.committed, ["/e/1"]);
        assert_eq!(e.untouched, ["/d/a", "/d/b", "/d/m", "/e/9"]);
        let first = tx.classify(&Progress::default(), lost(), None, false);
        assert_eq!(
            first.within(vec![], vec!["/e/9".into()]).phase,
            Phase::BeforeCommit
        );
    }

    #[test]
    fn staged_names_are_unique_dotfiles_within_name_max() {
        let a = staged_name("kube-apiserver.yaml");
        let b = staged_name("kube-apiserver.yaml");
        assert_ne!(a, b);
        assert!(
            a.starts_with(".kube-apiserver.yaml.ship-") && a.ends_with(".tmp"),
            "{a}"
        );
        assert_eq!(a.len(), ".kube-apiserver.yaml.ship-".len() + 16 + 4);
        let long = "é".repeat(200);
        assert!(staged_name(&long).len() <= 255);
    }
}
