//! Reading the files qgate is pointed at (the password file, plugin components, policy files)
//! without trusting what is at the path: only a regular file is read, never more than a size cap,
//! and never for longer than a time limit.
//!
//! A path that a config names can be replaced behind qgate's back: renamed over by a FIFO (whose
//! `open` and `read` wait for a writer that never comes), pointed at `/dev/zero` (which never
//! ends), or left on a network mount that has stalled (whose reads wait in the kernel).
//! A reader that waits on such a file must hold nothing anyone else needs, so [`FileReader::read`]
//! does the reading on a thread of its own and waits for it at most [`ReadRules::timeout`]:
//!
//! ```text
//!   FileReader::read ──spawn──► reader thread: open(O_NONBLOCK) → fstat: regular? → read ≤ cap
//!        │                                          │
//!        └── waits at most `timeout` ◄── result ────┘   (a stuck thread is left behind, and
//!                                                        the next read of this path is refused
//!                                                        until it comes back)
//! ```
//!
//! The file is opened with `O_NONBLOCK`, so that a FIFO's `open` returns at once, and then checked
//! with `fstat` on the open descriptor, so that what is read is what was checked (no window
//! between a `stat` of the path and the `open`).
//! Symbolic links are followed: a certificate or a policy reached through a Kubernetes secret's
//! `..data` link is a regular file at the end of it.
//!
//! The crate is std and libc only; it knows nothing of tokio, so async callers run
//! [`FileReader::read`] on a blocking thread.

#![warn(missing_docs)]

use std::{
    fmt,
    fs::{File, OpenOptions},
    io::{self, Read as _},
    os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::Duration,
};

/// The size cap and the time limit of a read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadRules {
    /// The largest file that is read, in bytes; a larger one is refused, not truncated.
    pub max_bytes: u64,
    /// How long a read may take, from `open` to the last byte.
    pub timeout: Duration,
}

impl ReadRules {
    /// 5 s: a local disk answers in microseconds and a healthy network mount in milliseconds;
    /// five seconds tells a stalled one apart without giving up on a slow one.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

    /// Rules with a cap of `max_bytes` and the default timeout.
    pub const fn new(max_bytes: u64) -> Self {
        Self {
            max_bytes,
            timeout: Self::DEFAULT_TIMEOUT,
        }
    }
}

/// Why a file was not read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// The path is not a regular file (after following symbolic links).
    #[error("{path:?} is {kind}, not a regular file")]
    NotRegular {
        /// The path.
        path: PathBuf,
        /// What it is instead: "a directory", "a FIFO", "a character device"...
        kind: FileKind,
    },
    /// The file is larger than the cap.
    #[error("{path:?} is larger than {max_bytes} bytes (the limit); refusing to read it")]
    TooLarge {
        /// The path.
        path: PathBuf,
        /// The cap.
        max_bytes: u64,
    },
    /// Opening or reading the file took longer than the limit.
    #[error("reading {path:?} took longer than {after:?}; is it on a stalled mount, or a pipe?")]
    TimedOut {
        /// The path.
        path: PathBuf,
        /// The limit.
        after: Duration,
    },
    /// An earlier read of this path has not come back from the kernel yet; a second one is not
    /// started beside it.
    #[error(
        "an earlier read of {path:?} is still stuck in the system; not starting another until it \
         returns"
    )]
    StillStuck {
        /// The path.
        path: PathBuf,
    },
    /// The file could not be opened or read.
    #[error("cannot read {path:?}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

impl FileError {
    /// The path the error is about.
    pub fn path(&self) -> &Path {
        match self {
            Self::NotRegular { path, .. }
            | Self::TooLarge { path, .. }
            | Self::TimedOut { path, .. }
            | Self::StillStuck { path }
            | Self::Io { path, .. } => path,
        }
    }

    /// Whether the error is the file not existing.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

/// What a path that is not a regular file is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FileKind {
    /// A block device.
    BlockDevice,
    /// A character device, such as `/dev/zero`.
    CharDevice,
    /// A directory.
    Directory,
    /// A FIFO (named pipe).
    Fifo,
    /// Anything else.
    Other,
    /// A Unix domain socket.
    Socket,
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::BlockDevice => "a block device",
            Self::CharDevice => "a character device",
            Self::Directory => "a directory",
            Self::Fifo => "a FIFO",
            Self::Other => "not a regular file",
            Self::Socket => "a socket",
        })
    }
}

/// Reads one path, under [`ReadRules`], on a thread of its own.
///
/// Keep one reader per path for as long as the path is watched: it remembers a read that is
/// stuck, and refuses to start another until that one returns, so a stalled mount costs one
/// thread, not one per poll.
#[derive(Debug)]
pub struct FileReader {
    path: PathBuf,
    rules: ReadRules,
    /// Set while a reader thread is running, cleared by the thread when it ends: shared with a
    /// thread that may outlive the call that started it.
    busy: Arc<AtomicBool>,
}

impl FileReader {
    /// A reader of `path` under `rules`.
    pub fn new(path: impl Into<PathBuf>, rules: ReadRules) -> Self {
        Self {
            path: path.into(),
            rules,
            busy: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The path read.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The rules applied.
    pub fn rules(&self) -> ReadRules {
        self.rules
    }

    /// Reads the whole file, if it is a regular file no larger than the cap, within the timeout.
    ///
    /// Blocks the calling thread for at most the timeout (and a thread spawn).
    ///
    /// # Errors
    ///
    /// [`FileError`]: not a regular file, too large, too slow, an earlier read still stuck, or
    /// the system's error.
    pub fn read(&self) -> Result<Vec<u8>, FileError> {
        self.read_with(read_now)
    }

    /// [`FileReader::read`] with the reading done by `read_file` on the reader thread.
    fn read_with(
        &self,
        read_file: fn(&Path, u64) -> Result<Vec<u8>, FileError>,
    ) -> Result<Vec<u8>, FileError> {
        if self.busy.swap(true, Ordering::AcqRel) {
            return Err(FileError::StillStuck {
                path: self.path.clone(),
            });
        }
        let (send, receive) = mpsc::sync_channel(1);
        let path = self.path.clone();
        let rules = self.rules;
        let busy = Arc::clone(&self.busy);
        let spawned = std::thread::Builder::new()
            .name("qgate-file-read".to_owned())
            .spawn(move || {
                let result = read_file(&path, rules.max_bytes);
                busy.store(false, Ordering::Release);
                // The caller may have given up waiting; then nobody hears this, which is fine.
                let _ = send.send(result);
            });
        if let Err(source) = spawned {
            self.busy.store(false, Ordering::Release);
            return Err(FileError::Io {
                path: self.path.clone(),
                source,
            });
        }
        match receive.recv_timeout(self.rules.timeout) {
            Ok(result) => result,
            Err(_) => Err(FileError::TimedOut {
                path: self.path.clone(),
                after: self.rules.timeout,
            }),
        }
    }
}

/// Reads `path` under `rules` once: [`FileReader::read`] for a path that is not watched.
///
/// # Errors
///
/// As [`FileReader::read`].
pub fn read(path: impl Into<PathBuf>, rules: ReadRules) -> Result<Vec<u8>, FileError> {
    FileReader::new(path, rules).read()
}

/// The read itself, on the reader thread.
fn read_now(path: &Path, max_bytes: u64) -> Result<Vec<u8>, FileError> {
    let io = |source| FileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(io)?;
    let metadata = file.metadata().map_err(io)?;
    let file_type = metadata.file_type();
    if !file_type.is_file() {
        let kind = if file_type.is_dir() {
            FileKind::Directory
        } else if file_type.is_fifo() {
            FileKind::Fifo
        } else if file_type.is_char_device() {
            FileKind::CharDevice
        } else if file_type.is_block_device() {
            FileKind::BlockDevice
        } else if file_type.is_socket() {
            FileKind::Socket
        } else {
            FileKind::Other
        };
        return Err(FileError::NotRegular {
            path: path.to_path_buf(),
            kind,
        });
    }
    let too_large = || FileError::TooLarge {
        path: path.to_path_buf(),
        max_bytes,
    };
    if metadata.len() > max_bytes {
        return Err(too_large());
    }
    // The file may grow between the fstat and the read: read one byte past the cap to tell.
    let mut bytes = Vec::with_capacity(usize::try_from(metadata.len()).unwrap_or(0));
    read_capped(file, max_bytes, &mut bytes).map_err(io)?;
    if bytes.len() as u64 > max_bytes {
        return Err(too_large());
    }
    Ok(bytes)
}

/// Reads at most `max_bytes + 1` bytes of `file` into `bytes`.
fn read_capped(file: File, max_bytes: u64, bytes: &mut Vec<u8>) -> io::Result<()> {
    file.take(max_bytes.saturating_add(1))
        .read_to_end(bytes)
        .map(drop)
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    fn rules(max_bytes: u64) -> ReadRules {
        ReadRules {
            max_bytes,
            timeout: Duration::from_millis(300),
        }
    }

    #[test]
    fn a_regular_file_is_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwords.txt");
        fs::write(&path, b"alice:secret\n").unwrap();
        assert_eq!(read(&path, rules(64)).unwrap(), b"alice:secret\n");
    }

    #[test]
    fn a_symlink_to_a_regular_file_is_followed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("real");
        fs::write(&path, b"x").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert_eq!(read(&link, rules(64)).unwrap(), b"x");
    }

    #[test]
    fn a_file_over_the_cap_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        fs::write(&path, vec![b'a'; 65]).unwrap();
        let error = read(&path, rules(64)).unwrap_err();
        assert!(
            matches!(error, FileError::TooLarge { max_bytes: 64, .. }),
            "{error}"
        );
        assert_eq!(read(&path, rules(65)).unwrap().len(), 65);
    }

    #[test]
    fn a_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let error = read(dir.path(), rules(64)).unwrap_err();
        assert!(
            matches!(
                error,
                FileError::NotRegular {
                    kind: FileKind::Directory,
                    ..
                }
            ),
            "{error}"
        );
        assert!(error.to_string().contains("a directory"), "{error}");
    }

    #[test]
    fn dev_zero_is_refused_without_reading() {
        let error = read("/dev/zero", rules(64)).unwrap_err();
        assert!(
            matches!(
                error,
                FileError::NotRegular {
                    kind: FileKind::CharDevice,
                    ..
                }
            ),
            "{error}"
        );
    }

    #[test]
    fn a_fifo_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fifo");
        mkfifo(&path);
        // Without O_NONBLOCK the open would wait for a writer forever, and this would be a
        // timeout instead.
        let error = read(&path, rules(64)).unwrap_err();
        assert!(
            matches!(
                error,
                FileError::NotRegular {
                    kind: FileKind::Fifo,
                    ..
                }
            ),
            "{error}"
        );
    }

    #[test]
    fn a_missing_file_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let error = read(dir.path().join("nope"), rules(64)).unwrap_err();
        assert!(error.is_not_found(), "{error}");
        assert!(error.to_string().contains("nope"), "{error}");
    }

    #[test]
    #[allow(
        clippy::disallowed_methods,
        reason = "a plain thread standing in for a read stuck in the kernel; no runtime here"
    )]
    fn a_stuck_read_times_out_and_blocks_the_next_until_it_returns() {
        // A read that hangs as one on a stalled mount does, for 1 s.
        fn stalled(_: &Path, _: u64) -> Result<Vec<u8>, FileError> {
            std::thread::sleep(Duration::from_secs(1));
            Ok(b"late".to_vec())
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, b"x").unwrap();
        let reader = FileReader::new(&path, rules(64));
        let error = reader.read_with(stalled).unwrap_err();
        assert!(matches!(error, FileError::TimedOut { .. }), "{error}");
        assert!(error.to_string().contains("stalled mount"), "{error}");
        // The stuck thread is still in its read: no second one is started beside it.
        let error = reader.read().unwrap_err();
        assert!(matches!(error, FileError::StillStuck { .. }), "{error}");
        // Once it returns, reads work again.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while reader.busy.load(Ordering::Acquire) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(reader.read().unwrap(), b"x");
    }

    fn mkfifo(path: &Path) {
        let status = std::process::Command::new("mkfifo")
            .arg(path)
            .status()
            .unwrap();
        assert!(status.success());
    }
}
