//! Password files, as q's `-U file` and `-u file` (reference §7.2).
//!
//! # Format
//!
//! One `user:password` entry a line, split on the **first** colon, so a password may contain
//! colons (a user name cannot).
//! Blank lines and lines whose first non-blank character is `#` are skipped; a trailing `\r` is
//! dropped, so files written on Windows work.
//! The password field is one of:
//!
//! - an MD5 hash: exactly 32 lowercase hex characters, as kdb+'s `raze string md5 "password"`
//!   writes (`5f4dcc3b5aa765d61d8327deb882cf99`);
//! - a SHA-1 hash: exactly 40 lowercase hex characters, as `raze string -33!"password"` writes
//!   (`5baa61e4c9b93f3f0682250b6cf8331b7ee68fd8`);
//! - either hash with a `0x` prefix, in any case (`0x5f4dcc3b...`), as `string md5 ...` shows it
//!   in q;
//! - otherwise the password in plain text.
//!
//! The scheme is decided per line, so unlike kdb+ (where all entries must use one scheme) a file
//! may mix them, as in the walkthrough: `admin:password`,
//! `adminmd5:0x5f4dcc3b5aa765d61d8327deb882cf99` and
//! `adminsha:0x5baa61e4c9b93f3f0682250b6cf8331b7ee68fd8` all accept the password `password`.
//!
//! **The ambiguity**: a plain-text password that happens to be exactly 32 or 40 lowercase hex
//! characters is read as a hash, and the password itself no longer works (its MD5 or SHA-1 would
//! be expected instead).
//! Write such a password as its hash.
//! A `0x`-prefixed field that is not 32 or 40 hex digits is an error rather than a plain password,
//! so that a mistyped hash fails loudly at load instead of silently becoming a password.
//!
//! A line without a colon, a bad `0x` field, or a user listed twice is an error naming the file
//! and the line.
//! At start such a file stops the server; when it happens on a reload the error is logged and the
//! previous contents stay in force.
//!
//! # Checking
//!
//! A client whose handshake has no colon (no password at all) never matches an entry, not even one
//! with an empty password.
//! The comparison takes the same time however much of the password is right: the offered password
//! is hashed with the entry's scheme and the hex digests are compared with
//! [`subtle::ConstantTimeEq`]; a plain entry is kept as its SHA-1 digest and compared the same way,
//! so not even its length shows in the timing.
//! (Whether a user exists can still show: the lookup of the user name is an ordinary map lookup.)
//!
//! # Reloading
//!
//! As q's `\u` reloads the file, qgate notices changes by itself, off the login path: a task
//! checks the file's stamp (device, inode, length, modification and change times, the path after
//! symbolic links) every [`RELOAD_INTERVAL`] and reads it again once a changed stamp has stayed
//! the same for two checks in a row, so that a file being written in place (truncated, then
//! written) is not read half-way: read between the two, it would be an empty file, which is
//! valid, and would lock every user out until the next check.
//! Logins read the entries in force from an [`ArcSwap`]: they never wait on the file, on a lock
//! that a reader holds, or on the reload.
//!
//! Every read goes through `qgate-files` on a thread of its own: only a regular file (a
//! directory, a FIFO or a device is refused by name), at most [`PasswordFile::MAX_BYTES`], within
//! [`PasswordFile::READ_TIMEOUT`]. At start a file that breaks a rule stops the server before it
//! binds its port; on a reload it is logged, once per change, and the previous entries stay in
//! force. A read stuck in the kernel (a stalled mount) holds one thread, and the next reload waits
//! for it rather than starting another.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use arc_swap::ArcSwap;
use md5::Md5;
use qgate_files::{FileError, FileReader, ReadRules};
use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

use crate::{options::PasswordFile, stamp::Stamp};

/// How often the reload task checks the file's stamp.
///
/// 1 s, as for the TLS files: a rotated password is in force within a second, and a `stat` a
/// second costs nothing.
pub(crate) const RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// A password file that is not usable. The operator's fault; the message names the file and,
/// for a bad line, the line.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PasswordFileError {
    /// The file cannot be read under the rules: missing, not a regular file, too large, too slow.
    /// The message names the path.
    #[error(transparent)]
    File(#[from] FileError),
    /// A line is not `user:password`.
    #[error("{}:{line}: {what}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// The line number, from 1.
        line: usize,
        /// What is wrong with it.
        what: &'static str,
    },
    /// A user is listed twice.
    #[error("{}:{line}: user {user:?} is already listed on line {first}", path.display())]
    Duplicate {
        /// The file.
        path: PathBuf,
        /// The line number of the second entry, from 1.
        line: usize,
        /// The line number of the first one.
        first: usize,
        /// The user, lossily as UTF-8.
        user: String,
    },
}

/// A password file, loaded, reloaded in the background when it changes.
#[derive(Debug)]
pub(crate) struct PasswordStore {
    path: PathBuf,
    restricted: bool,
    /// The entries in force. A login loads them without a lock; only the reload task stores
    /// new ones, after reading and parsing the file whole.
    entries: ArcSwap<Entries>,
    /// The file's stamp when the entries in force were read.
    loaded: Option<Stamp>,
}

/// The entries of a password file, by user.
#[derive(Debug, Default)]
pub(crate) struct Entries {
    by_user: HashMap<Vec<u8>, Secret>,
}

/// What a password is checked against.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Secret {
    /// An MD5 digest, 32 lowercase hex characters.
    Md5(Vec<u8>),
    /// A plain password, kept as its SHA-1 digest (40 lowercase hex characters) so that it is
    /// compared in constant time whatever its length.
    Plain(Vec<u8>),
    /// A SHA-1 digest, 40 lowercase hex characters.
    Sha1(Vec<u8>),
}

impl PasswordStore {
    /// Loads the file, on a blocking thread.
    ///
    /// # Errors
    ///
    /// [`PasswordFileError`] when the file cannot be read under the rules or has a bad line.
    pub(crate) async fn load(file: &PasswordFile) -> Result<Self, PasswordFileError> {
        let path = file.path.clone();
        let (loaded, entries) = tokio::task::spawn_blocking(move || {
            let stamp = Stamp::of(&path);
            read_blocking(&path).map(|entries| (stamp, entries))
        })
        .await
        .map_err(|error| {
            PasswordFileError::File(FileError::Io {
                path: file.path.clone(),
                source: std::io::Error::other(error),
            })
        })??;
        Ok(Self {
            path: file.path.clone(),
            restricted: file.restricted,
            entries: ArcSwap::from_pointee(entries),
            loaded,
        })
    }

    /// Whether this is `-u` (restricted) rather than `-U`.
    pub(crate) fn restricted(&self) -> bool {
        self.restricted
    }

    /// The file, for the log.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Whether `user` and `password` match an entry in force. Never waits: the file is read by
    /// [`PasswordStore::watch`], not here.
    pub(crate) fn check(&self, user: &[u8], password: Option<&[u8]>) -> bool {
        match password {
            Some(password) => self.entries.load().check(user, password),
            None => false,
        }
    }

    /// Checks the file's stamp every [`RELOAD_INTERVAL`] and, once a change has stayed the same
    /// for two checks, swaps in its new entries if they read and parse whole; runs until
    /// dropped.
    pub(crate) async fn watch(self: Arc<Self>) {
        let reader = Arc::new(FileReader::new(&self.path, rules()));
        let mut seen = self.loaded.clone();
        // A changed stamp seen at the last check, to be read if this check sees it again.
        let mut pending: Option<Option<Stamp>> = None;
        let mut interval = tokio::time::interval(RELOAD_INTERVAL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            let previous = seen.clone();
            let settled = pending.clone();
            let path = self.path.clone();
            let reader = Arc::clone(&reader);
            let mut poll = tokio::task::spawn_blocking(move || {
                let stamp = Stamp::of(&path);
                if !settled_change(previous.as_ref(), settled.as_ref(), stamp.as_ref()) {
                    return (stamp, None);
                }
                let read = reader.read().map_err(PasswordFileError::from);
                let entries = read.and_then(|text| Entries::parse(&text, &path));
                (stamp, Some(entries))
            });
            // A `stat` stuck in the kernel holds this task, never a login: say so once, and wait
            // for it rather than start another beside it.
            let polled = match tokio::time::timeout(PasswordFile::READ_TIMEOUT, &mut poll).await {
                Ok(polled) => polled,
                Err(_) => {
                    tracing::error!(
                        path = %self.path.display(),
                        "the password file cannot be examined (a stalled mount?); logins go on \
                         with the entries in force"
                    );
                    poll.await
                }
            };
            let Ok((stamp, read)) = polled else {
                // The blocking task panicked: try again at the next tick.
                continue;
            };
            let Some(read) = read else {
                // Unchanged, or changed since the last check: wait for it to settle.
                pending = (stamp != seen).then_some(stamp);
                continue;
            };
            seen = stamp;
            pending = None;
            match read {
                Ok(entries) => {
                    tracing::info!(
                        path = %self.path.display(),
                        users = entries.len(),
                        "password file reloaded"
                    );
                    self.entries.store(Arc::new(entries));
                }
                Err(error) => tracing::error!(
                    %error,
                    "password file changed but cannot be used; keeping the previous version"
                ),
            }
        }
    }
}

/// Whether the file is to be read now: its stamp `now` differs from the one last acted on,
/// `acted`, and is the one the previous check saw, `pending` (`Some(None)` for a file that was
/// missing then). A file written in place shows a new stamp at each step of the write, so it is
/// read once it has stopped changing.
fn settled_change(
    acted: Option<&Stamp>,
    pending: Option<&Option<Stamp>>,
    now: Option<&Stamp>,
) -> bool {
    now != acted && pending.map(Option::as_ref) == Some(now)
}

/// The rules every read of a password file follows.
fn rules() -> ReadRules {
    ReadRules {
        max_bytes: PasswordFile::MAX_BYTES,
        timeout: PasswordFile::READ_TIMEOUT,
    }
}

/// Reads and parses the file under the rules, blocking the calling thread for at most the read
/// timeout.
pub(crate) fn read_blocking(path: &Path) -> Result<Entries, PasswordFileError> {
    let text = qgate_files::read(path, rules())?;
    Entries::parse(&text, path)
}

impl Entries {
    /// Parses a password file's contents; `path` is for error messages.
    ///
    /// # Errors
    ///
    /// [`PasswordFileError::Malformed`] or [`PasswordFileError::Duplicate`] naming the line.
    pub(crate) fn parse(text: &[u8], path: &Path) -> Result<Self, PasswordFileError> {
        let mut by_user = HashMap::new();
        let mut first_line = HashMap::new();
        for (index, line) in text.split(|&b| b == b'\n').enumerate() {
            let line_number = index + 1;
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let trimmed = line.trim_ascii_start();
            if trimmed.is_empty() || trimmed.starts_with(b"#") {
                continue;
            }
            let malformed = |what| PasswordFileError::Malformed {
                path: path.to_owned(),
                line: line_number,
                what,
            };
            let colon = line
                .iter()
                .position(|&b| b == b':')
                .ok_or_else(|| malformed("expected user:password, found no ':'"))?;
            let (user, field) = (&line[..colon], &line[colon + 1..]);
            let secret = Secret::parse(field).ok_or_else(|| {
                malformed("a 0x-prefixed password must be 32 (MD5) or 40 (SHA-1) hex digits")
            })?;
            if let Some(&first) = first_line.get(user) {
                return Err(PasswordFileError::Duplicate {
                    path: path.to_owned(),
                    line: line_number,
                    first,
                    user: String::from_utf8_lossy(user).into_owned(),
                });
            }
            first_line.insert(user.to_vec(), line_number);
            by_user.insert(user.to_vec(), secret);
        }
        Ok(Self { by_user })
    }

    /// Whether `password` is `user`'s.
    pub(crate) fn check(&self, user: &[u8], password: &[u8]) -> bool {
        match self.by_user.get(user) {
            Some(secret) => secret.matches(password),
            None => {
                // Hash anyway, so that an unknown user costs what a known one does.
                let _ = hex(&Sha1::digest(password));
                false
            }
        }
    }

    /// How many users the file lists.
    pub(crate) fn len(&self) -> usize {
        self.by_user.len()
    }
}

impl Secret {
    /// Reads a password field; `None` for a `0x` field of the wrong length or with a non-hex
    /// digit.
    fn parse(field: &[u8]) -> Option<Self> {
        let prefixed = field
            .strip_prefix(b"0x")
            .or_else(|| field.strip_prefix(b"0X"));
        if let Some(digits) = prefixed {
            if !digits.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            let digits = digits.to_ascii_lowercase();
            return match digits.len() {
                32 => Some(Self::Md5(digits)),
                40 => Some(Self::Sha1(digits)),
                _ => None,
            };
        }
        let lower_hex = field
            .iter()
            .all(|&b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        Some(match field.len() {
            32 if lower_hex => Self::Md5(field.to_vec()),
            40 if lower_hex => Self::Sha1(field.to_vec()),
            _ => Self::Plain(hex(&Sha1::digest(field))),
        })
    }

    /// Whether `password` matches, in time that does not depend on how much of it is right.
    fn matches(&self, password: &[u8]) -> bool {
        let (expected, offered) = match self {
            Self::Md5(expected) => (expected, hex(&Md5::digest(password))),
            Self::Plain(expected) | Self::Sha1(expected) => {
                (expected, hex(&Sha1::digest(password)))
            }
        };
        expected.ct_eq(&offered).into()
    }
}

/// Lowercase hex, as kdb+'s `raze string` of a byte vector.
fn hex(bytes: &[u8]) -> Vec<u8> {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    bytes
        .iter()
        .flat_map(|&b| [DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 15)]])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Entries, PasswordFileError> {
        Entries::parse(text.as_bytes(), Path::new("users.txt"))
    }

    fn check(file: &str, user: &str, password: &str, expect: bool) {
        let entries = parse(file).unwrap();
        assert_eq!(
            entries.check(user.as_bytes(), password.as_bytes()),
            expect,
            "{user}:{password} against {file:?}"
        );
    }

    #[test]
    fn a_file_is_read_once_its_change_has_settled() {
        let dir = std::env::temp_dir().join(format!("qgate-settle-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("users.txt");
        std::fs::write(&path, "alice:one\n").unwrap();
        let loaded = Stamp::of(&path);
        // Unchanged: nothing to read.
        assert!(!settled_change(loaded.as_ref(), None, loaded.as_ref()));
        // Truncated by a write in place: seen once, not read.
        std::fs::write(&path, "").unwrap();
        let truncated = Stamp::of(&path);
        assert_ne!(truncated, loaded);
        assert!(!settled_change(loaded.as_ref(), None, truncated.as_ref()));
        // Written by the next check: changed again, still not read.
        std::fs::write(&path, "alice:one\nbob:two\n").unwrap();
        let written = Stamp::of(&path);
        assert!(!settled_change(
            loaded.as_ref(),
            Some(&truncated),
            written.as_ref()
        ));
        // The same at the check after: read.
        assert!(settled_change(
            loaded.as_ref(),
            Some(&written),
            written.as_ref()
        ));
        // Removed, then back as it was loaded: nothing to read.
        assert!(!settled_change(
            loaded.as_ref(),
            Some(&None),
            loaded.as_ref()
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_walkthrough_file_mixes_schemes() {
        let file = "admin:password\n\
                    adminmd5:0x5f4dcc3b5aa765d61d8327deb882cf99\n\
                    adminsha:0x5baa61e4c9b93f3f0682250b6cf8331b7ee68fd8\n";
        for user in ["admin", "adminmd5", "adminsha"] {
            check(file, user, "password", true);
            check(file, user, "Password", false);
            check(file, user, "", false);
        }
        check(file, "nobody", "password", false);
    }

    #[test]
    fn kdb_files_of_bare_hex_work() {
        check("u:5f4dcc3b5aa765d61d8327deb882cf99", "u", "password", true);
        check(
            "u:5baa61e4c9b93f3f0682250b6cf8331b7ee68fd8",
            "u",
            "password",
            true,
        );
        // As kdb+ documents it: raze string -33!"mypassword".
        check(
            "u:91dfd9ddb4198affc5c194cd8ce6d338fde470e2",
            "u",
            "mypassword",
            true,
        );
        // A 0x prefix in upper case, with upper-case digits.
        check(
            "u:0X5F4DCC3B5AA765D61D8327DEB882CF99",
            "u",
            "password",
            true,
        );
    }

    #[test]
    fn splits_on_the_first_colon_and_skips_comments() {
        let file = "# users\r\n\r\n   \nalice:a:b:c\r\nbob:\n";
        check(file, "alice", "a:b:c", true);
        check(file, "alice", "a", false);
        check(file, "bob", "", true);
        assert_eq!(parse(file).unwrap().len(), 2);
    }

    #[test]
    fn a_password_of_32_lowercase_hex_is_a_hash() {
        let hexish = "0123456789abcdef0123456789abcdef";
        check(&format!("u:{hexish}"), "u", hexish, false);
        // Upper case is not hex to the bare rule: it stays plain.
        let upper = "0123456789ABCDEF0123456789ABCDEF";
        check(&format!("u:{upper}"), "u", upper, true);
    }

    #[test]
    fn bad_lines_name_the_line() {
        let error = parse("a:1\nno colon here\n").unwrap_err().to_string();
        assert_eq!(error, "users.txt:2: expected user:password, found no ':'");
        let error = parse("a:0x1234\n").unwrap_err().to_string();
        assert!(error.starts_with("users.txt:1: a 0x-prefixed"), "{error}");
        let error = parse("a:1\n\na:2\n").unwrap_err().to_string();
        assert_eq!(error, "users.txt:3: user \"a\" is already listed on line 1");
    }

    #[test]
    fn hex_is_lowercase() {
        assert_eq!(hex(&[0x00, 0x5f, 0xff]), b"005fff");
    }
}
