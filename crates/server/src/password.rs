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
//! As q's `\u` reloads the file, qgate notices changes by itself: at each authentication it reads
//! the file's modification time and length and re-reads the file when either changed.
//! Two edits within the file system's timestamp granularity that keep the length the same can go
//! unnoticed until the next change.
//!
//! # `-U` and `-u`
//!
//! Both check the same file.
//! `-u` (restricted) also refuses, with `'access`, any sync or async message that is a char vector
//! starting with `\`: a q system command (`"\\ls"`), which q refuses from remote clients under
//! `-u`.
//! That is all it adds: qgate does not evaluate q, so the rest of what `-u` restricts in q (file
//! access outside the working directory, `exit`, `hopen` of files) is up to whatever answers the
//! queries, a plugin or a backend.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::SystemTime,
};

use md5::Md5;
use qgate_hooks::Request;
use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

use crate::options::PasswordFile;

/// A password file that is not usable. The operator's fault; the message names the file and,
/// for a bad line, the line.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PasswordFileError {
    /// The file cannot be read.
    #[error("cannot read password file {path:?}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
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

/// A password file, loaded, reloaded when it changes.
#[derive(Debug)]
pub(crate) struct PasswordStore {
    path: PathBuf,
    restricted: bool,
    /// The entries and what the file looked like when they were read.
    ///
    /// A tokio mutex, held across the `stat` and the re-read: two authentications that notice the
    /// same change read the file once, and nothing else waits on it (authentications are rare next
    /// to messages).
    state: tokio::sync::Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// The modification time and length last seen, whether or not that version parsed; `None`
    /// when the file could not be examined.
    /// A change is noticed when this differs, and a broken version is reported once, not at every
    /// authentication.
    seen: Option<Stamp>,
    entries: Arc<Entries>,
}

type Stamp = (Option<SystemTime>, u64);

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
    /// Loads the file.
    ///
    /// # Errors
    ///
    /// [`PasswordFileError`] when the file cannot be read or has a bad line.
    pub(crate) async fn load(file: &PasswordFile) -> Result<Self, PasswordFileError> {
        let seen = stamp(&file.path).await;
        let entries = read(&file.path).await?;
        Ok(Self {
            path: file.path.clone(),
            restricted: file.restricted,
            state: tokio::sync::Mutex::new(State {
                seen,
                entries: Arc::new(entries),
            }),
        })
    }

    /// Whether this is `-u` (restricted) rather than `-U`.
    pub(crate) fn restricted(&self) -> bool {
        self.restricted
    }

    /// Whether `user` and `password` match an entry, after re-reading the file if it changed.
    pub(crate) async fn check(&self, user: &[u8], password: Option<&[u8]>) -> bool {
        let entries = self.current().await;
        match password {
            Some(password) => entries.check(user, password),
            None => false,
        }
    }

    /// The entries in force, re-read first if the file changed.
    async fn current(&self) -> Arc<Entries> {
        let mut state = self.state.lock().await;
        let now = stamp(&self.path).await;
        if now != state.seen {
            state.seen = now;
            match read(&self.path).await {
                Ok(entries) => {
                    tracing::info!(
                        path = %self.path.display(),
                        users = entries.len(),
                        "password file reloaded"
                    );
                    state.entries = Arc::new(entries);
                }
                Err(error) => tracing::error!(
                    %error,
                    "password file changed but cannot be used; keeping the previous version"
                ),
            }
        }
        Arc::clone(&state.entries)
    }
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

/// Reads and parses the file.
async fn read(path: &Path) -> Result<Entries, PasswordFileError> {
    let text = tokio::fs::read(path)
        .await
        .map_err(|source| PasswordFileError::Read {
            path: path.to_owned(),
            source,
        })?;
    Entries::parse(&text, path)
}

/// The file's modification time and length, `None` when it cannot be examined.
async fn stamp(path: &Path) -> Option<Stamp> {
    let metadata = tokio::fs::metadata(path).await.ok()?;
    Some((metadata.modified().ok(), metadata.len()))
}

/// Whether `-u` refuses this message: a char vector starting with `\`, a q system command.
pub(crate) fn is_system_command(request: &Request) -> bool {
    request
        .view()
        .string()
        .is_some_and(|text| text.first() == Some(&b'\\'))
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
