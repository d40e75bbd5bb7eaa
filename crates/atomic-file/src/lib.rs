//! One local atomic write, with a backup that is never overwritten: `render -o` and
//! `patch-apiserver --in-place` both write through this crate, and the pipeline names its
//! backups on the node with [`backup_file_name`].
//!
//! What a path names decides how it is written, because a rename over anything but a regular
//! file destroys it:
//!
//! | the path is                                   | [`AtomicFile::create`] | [`Destination::open`]   |
//! |-----------------------------------------------|------------------------|-------------------------|
//! | missing, or a regular file                    | temp file + rename     | temp file + rename      |
//! | a symlink whose final target is one of those  | the same, on the final target; the link stays | the same |
//! | a symlink whose final target does not exist   | refused                | refused                 |
//! | a character device or a FIFO                  | refused                | written through (opened, not replaced) |
//! | a directory, a block device or a socket       | refused                | refused                 |
//!
//! A dangling symlink is refused rather than followed: creating a file wherever a link points
//! is the classic way to make a root process write somewhere it should not.
//!
//! ```
//! use std::io::Write;
//! let dir = tempfile::tempdir().unwrap();
//! let target = dir.path().join("manifest.yaml");
//! std::fs::write(&target, "old").unwrap();
//! let mut file = atomic_file::AtomicFile::create(&target).unwrap();
//! file.write_all(b"new").unwrap();
//! let backup = file.commit_with_backup(&dir.path().join("backup")).unwrap();
//! assert_eq!(std::fs::read(&target).unwrap(), b"new");
//! assert_eq!(std::fs::read(&backup).unwrap(), b"old");
//! ```

mod error;
mod name;
mod stdout;

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tempfile::NamedTempFile;

pub use error::{Error, FileKind};
pub use name::backup_file_name;
pub use stdout::Stdout;

/// How many names [`AtomicFile::commit_with_backup`] tries when backups collide.
const BACKUP_ATTEMPTS: u32 = 1000;

/// Replaces `path` with `contents` through [`AtomicFile::commit_with_backup`], after the same
/// checks as [`AtomicFile::create`]; returns the backup's path.
pub fn replace_with_backup(
    path: &Path,
    contents: &[u8],
    backup_dir: &Path,
) -> Result<PathBuf, Error> {
    let mut file = AtomicFile::create(path)?;
    file.write_all(contents).map_err(|error| Error::Io {
        path: path.to_path_buf(),
        op: "writing the temporary file beside it",
        error,
    })?;
    file.commit_with_backup(backup_dir)
}

/// Where a write goes: replaced in one rename, or written through in place.
#[derive(Debug)]
pub enum Destination {
    /// A regular file, or a path that does not exist yet (possibly through a symlink).
    Replace(AtomicFile),
    /// A character device (`/dev/null`, a terminal) or a FIFO: opened for writing and written
    /// in place, as a shell's `>` does, since a rename would put a regular file in its place.
    /// Nothing here is atomic; a caller that must not emit half a result buffers it first.
    Through { file: File, path: PathBuf },
}

impl Destination {
    /// Opens `path` for writing according to what it is (see the crate's table).
    pub fn open(path: &Path) -> Result<Destination, Error> {
        match resolve(path)? {
            Resolved::Replace(target) => Ok(Destination::Replace(AtomicFile::at(path, target)?)),
            Resolved::Other(FileKind::CharDevice | FileKind::Fifo) => {
                // No O_TRUNC and no O_CREAT: neither means anything here, and if the path
                // was swapped for a regular file meanwhile, we must not create or truncate it.
                let file = fs::OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(|error| Error::Io {
                        path: path.to_path_buf(),
                        op: "opening it for writing",
                        error,
                    })?;
                Ok(Destination::Through {
                    file,
                    path: path.to_path_buf(),
                })
            }
            Resolved::Other(kind) => Err(Error::NotRegular {
                path: path.to_path_buf(),
                kind,
            }),
        }
    }
}

/// A file written beside its target and renamed over it by [`AtomicFile::commit`]. Dropping it
/// without committing deletes the temporary file and leaves the target untouched.
///
/// The temporary file is a dotfile (`.NAME.XXXXXX.tmp`), which the kubelet ignores in a
/// manifests directory. It gets the owner and the permission bits of the file it replaces, so
/// the replacement keeps them; a new file gets mode 0600, since rendered files often hold
/// values from the environment.
#[derive(Debug)]
pub struct AtomicFile {
    temp: NamedTempFile,
    /// The file that is replaced: the path given, or its symlink's final target.
    target: PathBuf,
    /// The path as given, for messages and for the backup's name.
    given: PathBuf,
}

impl AtomicFile {
    /// Prepares to replace `path`, which must be a regular file, a path that does not exist
    /// yet, or a symlink to one of them; anything else is [`Error::NotRegular`] or
    /// [`Error::DanglingLink`].
    pub fn create(path: &Path) -> Result<AtomicFile, Error> {
        match resolve(path)? {
            Resolved::Replace(target) => AtomicFile::at(path, target),
            Resolved::Other(kind) => Err(Error::NotRegular {
                path: path.to_path_buf(),
                kind,
            }),
        }
    }

    fn at(given: &Path, target: PathBuf) -> Result<AtomicFile, Error> {
        let io_error = |op, error| Error::Io {
            path: given.to_path_buf(),
            op,
            error,
        };
        let dir = parent_dir(&target);
        let name = target
            .file_name()
            .ok_or_else(|| Error::NotAFilePath(given.to_path_buf()))?
            .to_string_lossy()
            .into_owned();
        let temp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".tmp")
            .tempfile_in(dir)
            .map_err(|e| io_error("creating a temporary file beside it", e))?;
        match fs::metadata(&target) {
            Ok(old) => {
                let file = temp.as_file();
                let new = file
                    .metadata()
                    .map_err(|e| io_error("reading the temporary file's owner", e))?;
                // The owner first: chown clears the set-id bits that the mode then restores.
                if (new.uid(), new.gid()) != (old.uid(), old.gid()) {
                    std::os::unix::fs::fchown(file, Some(old.uid()), Some(old.gid()))
                        .map_err(|e| io_error("giving the replacement the same owner", e))?;
                }
                file.set_permissions(fs::Permissions::from_mode(old.mode() & 0o7777))
                    .map_err(|e| io_error("giving the replacement the same mode", e))?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error("reading its owner and mode", e)),
        }
        Ok(AtomicFile {
            temp,
            target,
            given: given.to_path_buf(),
        })
    }

    /// The file that [`AtomicFile::commit`] replaces: the path given, or the final target of
    /// the symlink it names.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Makes the content durable, then renames it over the target.
    pub fn commit(self) -> Result<(), Error> {
        let (given, target) = (self.given.clone(), self.target.clone());
        let temp = self.durable()?;
        temp.persist(&target).map_err(|e| Error::Io {
            path: given.clone(),
            op: "renaming the temporary file over it",
            error: e.error,
        })?;
        sync_dir(&target).map_err(|error| Error::Io {
            path: given,
            op: "syncing its directory after the rename",
            error,
        })
    }

    /// Like [`AtomicFile::commit`], after copying the file being replaced into `backup_dir`
    /// (created with mode 0700 if missing) as a new 0600 file named by [`backup_file_name`];
    /// returns the backup's path.
    ///
    /// A backup is never overwritten: on a name collision the next nanosecond is tried. If
    /// anything fails before the rename, the target is unchanged and the backup is removed;
    /// if only the final directory sync fails, the error names the backup, which then holds
    /// the only copy of the original.
    pub fn commit_with_backup(self, backup_dir: &Path) -> Result<PathBuf, Error> {
        self.commit_with_backup_by(backup_dir, |temp, target| {
            temp.persist(target).map(drop).map_err(|e| e.error)
        })
    }

    /// [`AtomicFile::commit_with_backup`] with the final rename as a parameter, so that the
    /// tests can make it fail.
    fn commit_with_backup_by(
        self,
        backup_dir: &Path,
        rename: impl FnOnce(NamedTempFile, &Path) -> io::Result<()>,
    ) -> Result<PathBuf, Error> {
        let (given, target) = (self.given.clone(), self.target.clone());
        let name = given
            .file_name()
            .ok_or_else(|| Error::NotAFilePath(given.clone()))?
            .to_string_lossy()
            .into_owned();
        let temp = self.durable()?;
        let backup = write_backup(&target, backup_dir, &name, SystemTime::now())?;
        if let Err(error) = rename(temp, &target) {
            let _ = fs::remove_file(&backup);
            return Err(Error::Replace { path: given, error });
        }
        sync_dir(&target).map_err(|error| Error::Unsynced {
            path: given,
            backup: backup.clone(),
            error,
        })?;
        Ok(backup)
    }

    fn durable(mut self) -> Result<NamedTempFile, Error> {
        let given = self.given.clone();
        self.temp
            .flush()
            .and_then(|()| self.temp.as_file().sync_all())
            .map_err(|error| Error::Io {
                path: given,
                op: "writing the temporary file beside it",
                error,
            })?;
        Ok(self.temp)
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.temp.write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.temp.write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.temp.flush()
    }
}

/// Copies `original` into a new file of `dir` named by [`backup_file_name`]; a partial copy is
/// removed on failure.
fn write_backup(
    original: &Path,
    dir: &Path,
    name: &str,
    now: SystemTime,
) -> Result<PathBuf, Error> {
    let backup_error = |path: &Path, op, error| Error::Backup {
        path: path.to_path_buf(),
        op,
        error,
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| backup_error(dir, "creating its directory", e))?;
    let mut source =
        File::open(original).map_err(|e| backup_error(dir, "reading the original", e))?;
    let mut attempt = 0;
    let (path, mut file) = loop {
        let path = dir.join(backup_file_name(
            name,
            now + Duration::from_nanos(u64::from(attempt)),
        ));
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(file) => break (path, file),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt + 1 < BACKUP_ATTEMPTS => {
                attempt += 1;
            }
            Err(e) => return Err(backup_error(&path, "creating it", e)),
        }
    };
    let copied = io::copy(&mut source, &mut file).and_then(|_| file.sync_all());
    if let Err(e) = copied {
        let _ = fs::remove_file(&path);
        return Err(backup_error(&path, "writing it", e));
    }
    // The backup's name must survive a crash as surely as the rename that follows it.
    sync_dir(&path).map_err(|e| {
        let _ = fs::remove_file(&path);
        backup_error(&path, "syncing its directory", e)
    })?;
    Ok(path)
}

enum Resolved {
    /// A regular file or a missing path (after following symlinks) to replace.
    Replace(PathBuf),
    Other(FileKind),
}

/// What `path` names, following symlinks to their final target.
fn resolve(path: &Path) -> Result<Resolved, Error> {
    let io_error = |op, error| Error::Io {
        path: path.to_path_buf(),
        op,
        error,
    };
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(Resolved::Replace(path.to_path_buf()));
        }
        Err(e) => return Err(io_error("looking at what it is", e)),
    };
    let (target, meta) = if meta.file_type().is_symlink() {
        let target = match fs::canonicalize(path) {
            Ok(target) => target,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::DanglingLink {
                    path: path.to_path_buf(),
                    target: fs::read_link(path).unwrap_or_default(),
                });
            }
            Err(e) => return Err(io_error("following the symbolic link", e)),
        };
        let meta = fs::metadata(&target).map_err(|e| io_error("looking at its target", e))?;
        (target, meta)
    } else {
        (path.to_path_buf(), meta)
    };
    Ok(match FileKind::of(&meta.file_type()) {
        None => Resolved::Replace(target),
        Some(kind) => Resolved::Other(kind),
    })
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

fn sync_dir(file: &Path) -> io::Result<()> {
    File::open(parent_dir(file))?.sync_all()
}

#[cfg(test)]
mod tests;
