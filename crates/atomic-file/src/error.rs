use std::fmt;
use std::fs::FileType;
use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;

/// What a path names, when it is neither a regular file nor a symlink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Directory,
    CharDevice,
    BlockDevice,
    Fifo,
    Socket,
}

impl FileKind {
    /// What a file type is; `None` for a regular file (the only kind a rename may replace)
    /// and for a symlink (which the caller follows first).
    pub fn of(file_type: &FileType) -> Option<FileKind> {
        Some(if file_type.is_dir() {
            FileKind::Directory
        } else if file_type.is_char_device() {
            FileKind::CharDevice
        } else if file_type.is_block_device() {
            FileKind::BlockDevice
        } else if file_type.is_fifo() {
            FileKind::Fifo
        } else if file_type.is_socket() {
            FileKind::Socket
        } else {
            return None;
        })
    }
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileKind::Directory => "a directory",
            FileKind::CharDevice => "a character device",
            FileKind::BlockDevice => "a block device",
            FileKind::Fifo => "a FIFO",
            FileKind::Socket => "a socket",
        })
    }
}

/// Each message names the path as the caller gave it and is complete on its own: the I/O
/// cause is part of it, not a separate `source`, so a chain of contexts never repeats it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot write {}: it is {kind}, not a regular file", path.display())]
    NotRegular { path: PathBuf, kind: FileKind },
    #[error(
        "cannot write {}: it is a symbolic link to {}, which does not exist; refusing to create a file through it",
        path.display(),
        target.display()
    )]
    DanglingLink { path: PathBuf, target: PathBuf },
    #[error("cannot write {}: expected a file path, found no file name", .0.display())]
    NotAFilePath(PathBuf),
    /// Before anything was replaced: the target is unchanged and no backup exists.
    #[error("cannot write {} ({op}): {error}", path.display())]
    Io {
        path: PathBuf,
        op: &'static str,
        error: io::Error,
    },
    /// The backup could not be made; the target is unchanged and no partial backup is left.
    #[error("cannot write the backup {} ({op}): {error}; nothing was replaced", path.display())]
    Backup {
        path: PathBuf,
        op: &'static str,
        error: io::Error,
    },
    /// The final rename failed; the target is unchanged and the backup made for it is removed.
    #[error("cannot replace {}: {error}; it is unchanged, and its backup was removed", path.display())]
    Replace { path: PathBuf, error: io::Error },
    /// The target was replaced, but the rename may not survive a crash.
    #[error(
        "{} was replaced, but syncing its directory failed: {error}; the original is in {}",
        path.display(),
        backup.display()
    )]
    Unsynced {
        path: PathBuf,
        backup: PathBuf,
        error: io::Error,
    },
}
