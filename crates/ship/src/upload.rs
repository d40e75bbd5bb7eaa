//! Uploads: a temp file beside the target, a size check, then a rename, so a target is
//! always either the old file or the complete new one.

use std::io::Read;
use std::path::Path;

use crate::ops::{INCOMPLETE, script_argv, split_path};
use crate::quote::command_line;
use crate::{Session, ShipError};

/// Receives stdin into a temp file beside the target, checks its size, then renames it into
/// place, so the target is either the old file or the complete new one. `$4 = -` (size not
/// known up front) stops after the temp file and prints its size and name for a second step.
const UPLOAD: &str = r#"d=$1 t=$1/$2 mode=$3 size=$4
if [ ! -d "$d" ]; then echo "ship: $d: no such directory" >&2; exit 91; fi
if [ -d "$t" ]; then echo "ship: $t: is a directory" >&2; exit 94; fi
tmp=$(mktemp "$d/.ship.XXXXXXXX") || exit 92
trap 'rm -f -- "$tmp"' EXIT
trap 'exit 99' HUP PIPE TERM
cat > "$tmp" || exit 92
got=$(wc -c < "$tmp")
if [ "$size" = - ]; then trap - EXIT; printf '%s\n%s' "$got" "$tmp"; exit 0; fi
if [ "$got" -ne "$size" ]; then echo "ship: got $got of $size bytes" >&2; exit 93; fi
chmod "$mode" "$tmp" || exit 92
mv -f -- "$tmp" "$t" || exit 92
trap - EXIT
"#;

/// Several files in one channel. Args: MODE, then DIR NAME SIZE TEMP per file. The data
/// arrive back to back, followed by the line [`BATCH_END`]; `head -c SIZE` cuts them apart
/// into temp files (TEMP, a fresh name from us, created exclusively with `set -C`). Only when
/// the end line arrives where expected (nothing was cut short or misaligned) are the temp files
/// renamed into place. Two processes per file (head, mv), as forks dominate small files. On
/// failure it prints the index of the file it stopped at.
const UPLOAD_BATCH: &str = r#"mode=$1; shift; umask 077; set -C
k=0
for a in "$@"; do
  case $((k % 4)) in
  0) d=$a ;;
  1) t=$d/$a
     if [ ! -d "$d" ]; then echo $((k / 4)); echo "ship: $d: no such directory" >&2; exit 91; fi
     if [ -d "$t" ]; then echo $((k / 4)); echo "ship: $t: is a directory" >&2; exit 94; fi ;;
  esac
  k=$((k + 1))
done
cleanup() { k=0; for a in "$@"; do case $((k % 4)) in 0) d=$a ;; 3) rm -f -- "$d/$a" ;; esac; k=$((k + 1)); done; }
trap 'cleanup "$@"' EXIT
trap 'exit 99' HUP PIPE TERM
k=0
for a in "$@"; do
  case $((k % 4)) in
  0) d=$a ;;
  2) size=$a ;;
  3) head -c "$size" > "$d/$a" || { echo $((k / 4)); exit 92; }
     [ "$mode" = 600 ] || chmod "$mode" "$d/$a" || { echo $((k / 4)); exit 92; } ;;
  esac
  k=$((k + 1))
done
IFS= read -r end || end=
if [ "$end" != ship-end ]; then echo "ship: the upload was cut short" >&2; exit 93; fi
k=0
for a in "$@"; do
  case $((k % 4)) in
  0) d=$a ;;
  1) t=$d/$a ;;
  3) mv -f -- "$d/$a" "$t" || { echo $((k / 4)); exit 92; } ;;
  esac
  k=$((k + 1))
done
trap - EXIT
"#;

/// The line after the last file of a batch: the server commits nothing unless it reads it.
const BATCH_END: &[u8] = b"ship-end\n";

/// sshd hands the whole command line to the login shell as one argument, and Linux caps a
/// single argument at 128 KiB; batches stay well below.
const MAX_COMMAND_LINE: usize = 96 * 1024;

const COMMIT: &str = r#"if [ -d "$3" ]; then rm -f -- "$2"; echo "ship: $3: is a directory" >&2; exit 94; fi
chmod "$1" "$2" && mv -f -- "$2" "$3" || { rm -f -- "$2"; exit 92; }"#;

const DISCARD: &str = r#"rm -f -- "$1""#;

/// A stream of unknown length up to this size is read into memory and uploaded as a sized one.
const IN_MEMORY: u64 = 16 << 20;

/// A fresh temp file name (`.ship.` and 16 hex digits). `set -C` on the server refuses to
/// reuse an existing name, so uniqueness is a convenience, not a safety property.
fn temp_name() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    // RandomState is seeded randomly per process; the counter makes each name differ.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    format!(".ship.{:016x}", hasher.finish())
}

/// One file of [`Session::upload_batch`]: exactly `len` bytes from `source`.
pub struct Upload<'a> {
    pub source: &'a mut dyn Read,
    pub len: u64,
    pub remote_path: String,
}

/// The files of a batch back to back; a source that ends early aborts the whole channel, so
/// the server never takes the next file's bytes for the rest of this one.
struct Chain<'a, 'b> {
    files: &'a mut [Upload<'b>],
    index: usize,
    sent: u64,
    /// How much of [`BATCH_END`] has gone out.
    trailer: usize,
}

impl Read for Chain<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while let Some(file) = self.files.get_mut(self.index) {
            let remaining = file.len - self.sent;
            if remaining == 0 {
                self.index += 1;
                self.sent = 0;
                continue;
            }
            let room = usize::try_from(remaining)
                .unwrap_or(usize::MAX)
                .min(buf.len());
            let n = file.source.read(&mut buf[..room])?;
            if n == 0 {
                let message = format!(
                    "the source for {} ended after {} of {} bytes",
                    file.remote_path, self.sent, file.len
                );
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    message,
                ));
            }
            self.sent += n as u64;
            return Ok(n);
        }
        let rest = &BATCH_END[self.trailer..];
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.trailer += n;
        Ok(n)
    }
}

/// Reads at most `limit` bytes and counts them.
struct Counted<'a> {
    inner: &'a mut dyn Read,
    count: u64,
    limit: u64,
}

impl Read for Counted<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let room = usize::try_from(self.limit - self.count)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = self.inner.read(&mut buf[..room])?;
        self.count += n as u64;
        Ok(n)
    }
}

impl Session {
    /// Uploads exactly `len` bytes from `source` to `remote_path` with `mode`, atomically
    /// (temp file beside the target, size check, rename). With `sudo` the file is written by
    /// root through `sudo -n`. One channel: three round trips (open, exec, input).
    pub fn upload_sized(
        &self,
        source: &mut dyn Read,
        len: u64,
        remote_path: &str,
        mode: u32,
        sudo: bool,
    ) -> Result<(), ShipError> {
        let (dir, name) = split_path(self.host(), remote_path)?;
        let (mode_arg, size_arg) = (format!("{:o}", mode & 0o7777), len.to_string());
        let argv = script_argv(
            sudo,
            "ship-upload",
            UPLOAD,
            &[&dir, &name, &mode_arg, &size_arg],
        );
        let mut source = Counted {
            inner: source,
            count: 0,
            limit: len,
        };
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let status = self.run(
            &command_line(&argv),
            remote_path,
            Some(&mut source),
            &mut stdout,
            &mut stderr,
        )?;
        match status {
            0 => Ok(()),
            INCOMPLETE => Err(ShipError::IncompleteUpload {
                host: self.host().to_owned(),
                path: remote_path.to_owned(),
                sent: source.count,
            }),
            _ => Err(self.script_error(remote_path, "upload to", status, &stderr)),
        }
    }

    /// Uploads several files over one channel (three round trips per ~100 KiB of command line;
    /// one more channel per session to check for GNU head). Every target directory is checked
    /// before any data is read, and nothing is renamed into place until every byte arrived;
    /// each rename is atomic. Without GNU head on the node, it falls back to one channel per file.
    pub fn upload_batch(
        &self,
        files: &mut [Upload<'_>],
        mode: u32,
        sudo: bool,
    ) -> Result<(), ShipError> {
        if files.len() < 2 || !self.batching_works()? {
            for file in files.iter_mut() {
                self.upload_sized(file.source, file.len, &file.remote_path, mode, sudo)?;
            }
            return Ok(());
        }
        let mode_arg = format!("{:o}", mode & 0o7777);
        let mut start = 0;
        while start < files.len() {
            let mut args: Vec<String> = vec![mode_arg.clone()];
            let mut end = start;
            let mut length = UPLOAD_BATCH.len();
            while end < files.len() {
                let (dir, name) = split_path(self.host(), &files[end].remote_path)?;
                let more = [dir, name, files[end].len.to_string(), temp_name()];
                // Quoting can quadruple a quote character; count the worst case.
                let cost: usize = more.iter().map(|a| a.len() * 4 + 3).sum();
                if end > start && length + cost > MAX_COMMAND_LINE {
                    break;
                }
                length += cost;
                args.extend(more);
                end += 1;
            }
            self.upload_chunk(&mut files[start..end], &args, sudo)?;
            start = end;
        }
        Ok(())
    }

    /// Only GNU head is known to read exactly SIZE bytes from a pipe (no read-ahead), which
    /// batching relies on; asked once per session.
    fn batching_works(&self) -> Result<bool, ShipError> {
        if let Some(known) = self.gnu_head.get() {
            return Ok(known);
        }
        let probe = ["sh", "-c", "head --version 2>/dev/null | grep -q coreutils"];
        let works = self.exec(&probe, false)?.status == 0;
        self.gnu_head.set(Some(works));
        Ok(works)
    }

    fn upload_chunk(
        &self,
        files: &mut [Upload<'_>],
        args: &[String],
        sudo: bool,
    ) -> Result<(), ShipError> {
        let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let argv = script_argv(sudo, "ship-upload", UPLOAD_BATCH, &arg_refs);
        let during = files
            .first()
            .map(|f| f.remote_path.clone())
            .unwrap_or_default();
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let mut chain = Chain {
            files: &mut *files,
            index: 0,
            sent: 0,
            trailer: 0,
        };
        let status = self.run(
            &command_line(&argv),
            &during,
            Some(&mut chain),
            &mut stdout,
            &mut stderr,
        )?;
        if status == 0 {
            return Ok(());
        }
        let failed = String::from_utf8_lossy(&stdout)
            .trim()
            .parse::<usize>()
            .ok()
            .and_then(|i| files.get(i));
        let path = failed.map_or(during.as_str(), |f| f.remote_path.as_str());
        match status {
            INCOMPLETE => Err(ShipError::IncompleteUpload {
                host: self.host().to_owned(),
                path: path.to_owned(),
                sent: failed.map_or(0, |f| f.len),
            }),
            _ => Err(self.script_error(path, "upload to", status, &stderr)),
        }
    }

    pub fn upload_bytes(
        &self,
        bytes: &[u8],
        remote_path: &str,
        mode: u32,
        sudo: bool,
    ) -> Result<(), ShipError> {
        self.upload_sized(&mut &bytes[..], bytes.len() as u64, remote_path, mode, sudo)
    }

    /// Uploads a local file (its size is known, so this is a single step).
    pub fn upload_file(
        &self,
        local: &Path,
        remote_path: &str,
        mode: u32,
        sudo: bool,
    ) -> Result<(), ShipError> {
        let read_err = |source| ShipError::ReadSource {
            host: self.host().to_owned(),
            path: local.display().to_string(),
            cause: source,
        };
        let mut file = std::fs::File::open(local).map_err(read_err)?;
        let len = file.metadata().map_err(read_err)?.len();
        self.upload_sized(&mut file, len, remote_path, mode, sudo)
    }

    /// Uploads a stream of unknown length. A stream that ends within [`IN_MEMORY`] bytes (a
    /// rendered file, a manifest) becomes a sized upload: one channel, atomic. A longer one is
    /// staged in a temp file beside the target and renamed into place only when the server
    /// received every byte we sent (two channels; a connection lost between them can leave
    /// the temp file behind, never a partial target).
    pub fn upload(
        &self,
        source: &mut dyn Read,
        remote_path: &str,
        mode: u32,
        sudo: bool,
    ) -> Result<(), ShipError> {
        let mut head = Vec::new();
        source
            .take(IN_MEMORY + 1)
            .read_to_end(&mut head)
            .map_err(|cause| ShipError::ReadSource {
                host: self.host().to_owned(),
                path: remote_path.to_owned(),
                cause,
            })?;
        if head.len() as u64 <= IN_MEMORY {
            return self.upload_sized(&mut &head[..], head.len() as u64, remote_path, mode, sudo);
        }
        let mut source = std::io::Cursor::new(head).chain(source);
        let source: &mut dyn Read = &mut source;
        let (dir, name) = split_path(self.host(), remote_path)?;
        let argv = script_argv(sudo, "ship-upload", UPLOAD, &[&dir, &name, "0", "-"]);
        let mut source = Counted {
            inner: source,
            count: 0,
            limit: u64::MAX,
        };
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let status = self.run(
            &command_line(&argv),
            remote_path,
            Some(&mut source),
            &mut stdout,
            &mut stderr,
        )?;
        if status != 0 {
            return Err(self.script_error(remote_path, "upload to", status, &stderr));
        }
        let staged = String::from_utf8_lossy(&stdout).into_owned();
        let (got, tmp) = staged.split_once('\n').unwrap_or(("", ""));
        if tmp.is_empty() {
            return Err(ShipError::RemoteCommand {
                host: self.host().to_owned(),
                command: format!("upload to {remote_path}"),
                status,
                stderr: format!("unexpected reply {staged:?}"),
            });
        }
        if got.trim().parse::<u64>().ok() != Some(source.count) {
            let argv = script_argv(sudo, "ship-discard", DISCARD, &[tmp]);
            let _ = self.run(
                &command_line(&argv),
                remote_path,
                None,
                &mut Vec::new(),
                &mut Vec::new(),
            );
            return Err(ShipError::IncompleteUpload {
                host: self.host().to_owned(),
                path: remote_path.to_owned(),
                sent: source.count,
            });
        }
        let mode_arg = format!("{:o}", mode & 0o7777);
        let argv = script_argv(sudo, "ship-commit", COMMIT, &[&mode_arg, tmp, remote_path]);
        let mut stderr = Vec::new();
        let status = self.run(
            &command_line(&argv),
            remote_path,
            None,
            &mut Vec::new(),
            &mut stderr,
        )?;
        match status {
            0 => Ok(()),
            _ => Err(self.script_error(remote_path, "rename into", status, &stderr)),
        }
    }
}
