//! What identifies a file's contents without reading them, so that a watcher can tell when to
//! read it again: the TLS certificate and key, the password file.

use std::{
    fs,
    path::{Path, PathBuf},
    time::SystemTime,
};

/// What changes when a file is edited, replaced by a rename, or swapped through a symlink.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Stamp {
    /// The path after every symlink: a Kubernetes `..data` swap changes it.
    target: Option<PathBuf>,
    device: u64,
    inode: u64,
    len: u64,
    modified: Option<SystemTime>,
    /// The inode's change time, in nanoseconds: it moves with a `chmod` too.
    changed: i128,
}

impl Stamp {
    /// The file's stamp, following symlinks; `None` when it cannot be read (deleted in the middle
    /// of a swap): a later stamp then differs, and the file is read again.
    pub(crate) fn of(path: &Path) -> Option<Self> {
        use std::os::unix::fs::MetadataExt as _;
        let metadata = fs::metadata(path).ok()?;
        Some(Self {
            target: fs::canonicalize(path).ok(),
            device: metadata.dev(),
            inode: metadata.ino(),
            len: metadata.len(),
            modified: metadata.modified().ok(),
            changed: i128::from(metadata.ctime()) * 1_000_000_000
                + i128::from(metadata.ctime_nsec()),
        })
    }
}
