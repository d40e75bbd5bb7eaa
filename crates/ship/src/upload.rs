//! Uploads: every file goes to a temp file beside its target, its size is checked, then it is
//! renamed, so a target is always either the old file or the complete new one. Files of known
//! size go through the one [`Transaction`]; only a stream longer than what is kept in memory
//! needs a second step.

use std::io::Read;

use crate::ops::{INCOMPLETE, script_argv, script_error, split_path};
use crate::quote::{command_line, quote};
use crate::transaction::{ApplyError, MAX_COMMAND_LINE, SCRIPT, Transaction, staged_name};
use crate::{ExecOptions, Session, ShipError, Source, UploadOptions};

/// Receives a stream of unknown length into STAGED (a fresh name beside the target, created
/// exclusively) and prints its size; the client renames it with [`COMMIT`] when that is every
/// byte it sent. Args: DIR NAME STAGED.
const STAGE: &str = concat!(
    crate::transaction::sweep_fn!(),
    r#"set -C
d=$1 t=$1/$2 s=$1/$3
if [ ! -d "$d" ]; then echo "ship: $d: no such directory" >&2; exit 91; fi
if [ -d "$t" ]; then echo "ship: $t: is a directory" >&2; exit 94; fi
if [ -h "$t" ] || { [ -e "$t" ] && [ ! -f "$t" ]; }; then echo "ship: $t: not a regular file" >&2; exit 96; fi
sweep "$d"
true > "$s" || exit 92
trap 'rm -f -- "$s"' EXIT
trap 'exit 99' HUP PIPE TERM
cat >> "$s" || exit 92
trap - EXIT
wc -c < "$s"
"#
);

const COMMIT: &str = r#"if [ -d "$3" ]; then rm -f -- "$2"; echo "ship: $3: is a directory" >&2; exit 94; fi
chmod "$1" "$2" && mv -f -- "$2" "$3" || { rm -f -- "$2"; exit 92; }"#;

const DISCARD: &str = r#"rm -f -- "$1""#;

/// A stream of unknown length up to this size is read into memory and uploaded as a sized one.
const IN_MEMORY: u64 = 16 << 20;

/// One file of [`Session::upload_batch`]: exactly `len` bytes from `source`.
pub struct Upload<'a> {
    pub source: &'a mut dyn Read,
    pub len: u64,
    pub remote_path: String,
}

/// Reads and counts.
struct Counted<'a> {
    inner: &'a mut dyn Read,
    count: u64,
}

impl Read for Counted<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

impl Session {
    /// Uploads one file to `remote_path`, atomically (temp file beside the target, size check,
    /// rename). With [`crate::Sudo::Yes`] the file is written by root through `sudo -n`.
    /// One channel (three round trips: open, exec, input), except for a [`Source::Stream`]
    /// longer than 16 MiB, which is staged first and renamed in a second channel once the node
    /// has every byte (a connection lost between the two can leave the temp file behind, never
    /// a partial target; the next upload into that directory removes it after an hour).
    pub fn upload(
        &self,
        source: Source<'_>,
        remote_path: &str,
        opts: UploadOptions,
    ) -> Result<(), ShipError> {
        // Declared before the transaction, which borrows them.
        let mut file;
        let head;
        let mut transaction = Transaction::new();
        match source {
            Source::Bytes(bytes) => transaction.file(remote_path, opts.mode, bytes),
            Source::Sized { reader, len } => {
                transaction.file_from(remote_path, opts.mode, reader, len)
            }
            Source::File(local) => {
                let read_err = |cause| ShipError::ReadSource {
                    host: self.host().to_owned(),
                    path: local.display().to_string(),
                    cause,
                };
                file = std::fs::File::open(local).map_err(read_err)?;
                let len = file.metadata().map_err(read_err)?.len();
                transaction.file_from(remote_path, opts.mode, &mut file, len)
            }
            Source::Stream(reader) => {
                let mut bytes = Vec::new();
                reader
                    .take(IN_MEMORY + 1)
                    .read_to_end(&mut bytes)
                    .map_err(|cause| ShipError::ReadSource {
                        host: self.host().to_owned(),
                        path: remote_path.to_owned(),
                        cause,
                    })?;
                if bytes.len() as u64 > IN_MEMORY {
                    let mut rest = std::io::Cursor::new(bytes).chain(reader);
                    return self.upload_stream(&mut rest, remote_path, opts);
                }
                head = bytes;
                transaction.file(remote_path, opts.mode, &head[..])
            }
        };
        self.apply(&mut transaction, ExecOptions { sudo: opts.sudo })
            .map_err(|e| *e.cause)
    }

    /// Uploads several files as few transactions as the command line allows (three round
    /// trips per ~96 KiB of command line; one more channel per session to check for GNU head).
    /// Every target directory is checked before any data is read, and nothing of a transaction
    /// is renamed into place until all of its bytes arrived. Without GNU head on the node, each
    /// file is a transaction of its own (the node could only cut the files apart byte by byte).
    pub fn upload_batch(
        &self,
        files: &mut [Upload<'_>],
        opts: UploadOptions,
    ) -> Result<(), ApplyError> {
        let paths: Vec<String> = files.iter().map(|f| f.remote_path.clone()).collect();
        let batching = files.len() >= 2
            && self.batching_works().map_err(|cause| {
                ApplyError::before(None, cause, paths.iter().map(String::as_str).collect())
            })?;
        // What an empty transaction costs on the command line, and what each file adds.
        let base = command_line(&script_argv(opts.sudo, "ship-apply", SCRIPT, &["-"])).len();
        let cost = |path: &str, len: u64| -> usize {
            let (dir, name) = split_path(self.host(), path).unwrap_or_default();
            let staged = staged_name(&name);
            [
                "f",
                &dir,
                &name,
                &staged,
                &format!("{:o}", opts.mode & 0o7777),
                &len.to_string(),
            ]
            .iter()
            .map(|a| quote(a).len() + 1)
            .sum()
        };
        let mut start = 0;
        while start < files.len() {
            let mut end = start + 1;
            if batching {
                let mut length = base + cost(&files[start].remote_path, files[start].len);
                while end < files.len() {
                    length += cost(&files[end].remote_path, files[end].len);
                    if length > MAX_COMMAND_LINE {
                        break;
                    }
                    end += 1;
                }
            }
            let mut transaction = Transaction::new();
            for file in &mut files[start..end] {
                transaction.file_from(
                    file.remote_path.clone(),
                    opts.mode,
                    &mut *file.source,
                    file.len,
                );
            }
            self.apply(&mut transaction, ExecOptions { sudo: opts.sudo })
                .map_err(|e| e.within(paths[..start].to_vec(), paths[end..].to_vec()))?;
            start = end;
        }
        Ok(())
    }

    /// Only GNU head is known to read exactly SIZE bytes from a pipe (no read-ahead), which
    /// cutting one stream into files relies on; asked once per session.
    fn batching_works(&self) -> Result<bool, ShipError> {
        if let Some(known) = self.gnu_head.get() {
            return Ok(known);
        }
        let probe = ["sh", "-c", "head --version 2>/dev/null | grep -q coreutils"];
        let works = self.exec(&probe, ExecOptions::default())?.status == 0;
        self.gnu_head.set(Some(works));
        Ok(works)
    }

    /// A stream longer than [`IN_MEMORY`]: staged in one channel, renamed in a second.
    fn upload_stream(
        &self,
        source: &mut dyn Read,
        remote_path: &str,
        opts: UploadOptions,
    ) -> Result<(), ShipError> {
        let (dir, name) = split_path(self.host(), remote_path)?;
        let staged = staged_name(&name);
        let argv = script_argv(opts.sudo, "ship-upload", STAGE, &[&dir, &name, &staged]);
        let mut source = Counted {
            inner: source,
            count: 0,
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
            return Err(script_error(
                self.host(),
                remote_path,
                "upload to",
                status,
                &stderr,
            ));
        }
        let tmp = format!("{dir}/{staged}");
        let got = String::from_utf8_lossy(&stdout).trim().parse::<u64>().ok();
        if got != Some(source.count) {
            let argv = script_argv(opts.sudo, "ship-discard", DISCARD, &[&tmp]);
            let _ = self.run(
                &command_line(&argv),
                remote_path,
                None,
                &mut Vec::new(),
                &mut Vec::new(),
            );
            if got.is_none() {
                return Err(ShipError::RemoteCommand {
                    host: self.host().to_owned(),
                    command: format!("upload to {remote_path}"),
                    status,
                    stderr: format!("unexpected reply {:?}", String::from_utf8_lossy(&stdout)),
                });
            }
            return Err(ShipError::IncompleteUpload {
                host: self.host().to_owned(),
                path: remote_path.to_owned(),
                sent: source.count,
            });
        }
        let mode_arg = format!("{:o}", opts.mode & 0o7777);
        let argv = script_argv(
            opts.sudo,
            "ship-commit",
            COMMIT,
            &[&mode_arg, &tmp, remote_path],
        );
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
            INCOMPLETE => Err(ShipError::IncompleteUpload {
                host: self.host().to_owned(),
                path: remote_path.to_owned(),
                sent: source.count,
            }),
            _ => Err(script_error(
                self.host(),
                remote_path,
                "rename into",
                status,
                &stderr,
            )),
        }
    }
}
