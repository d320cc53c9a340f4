//! The storage directory: what it holds, its permissions, and reading and writing its files.
//!
//! ```text
//!   storage/            0700  refused when group or others have any bit
//!   ├── account.json    0600  the ACME account: its id, its private key, its directory URL
//!   ├── key.pem         0600  the certificate's private key
//!   ├── cert.pem        0644  the certificate chain, leaf first
//!   └── status.json     0600  the last success, the last error, the next renewal
//! ```
//!
//! The rule is Traefik's for `acme.json`: a private key that group or others can read is a key
//! that may have leaked, so [`open_dir`] and [`check_private`] refuse such a file and say how to
//! fix it rather than fix it silently. Files are written whole to a temporary file in the same
//! directory and renamed over the old one, so that a reader (the server reloading its
//! certificate, `qgate acme status`) never sees half a file.

use std::{
    fs::{self, DirBuilder, OpenOptions},
    io::{self, Read, Write},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt},
    path::Path,
};

use anyhow::{Context, Result, bail};

/// The ACME account's credentials (instant-acme's `AccountCredentials`, JSON), private.
pub(crate) const ACCOUNT_FILE: &str = "account.json";

/// The certificate chain, PEM, leaf first: what the server's `[tls] cert_file` loads.
pub const CERT_FILE: &str = "cert.pem";

/// The certificate's private key, PEM (PKCS#8): what the server's `[tls] key_file` loads.
pub const KEY_FILE: &str = "key.pem";

/// The last success, the last error and the next renewal, JSON, for `qgate acme status`.
pub(crate) const STATUS_FILE: &str = "status.json";

/// The largest file read from the storage directory: 1 MiB.
///
/// Everything kept there is small (a chain of three certificates is about 5 KiB, the account
/// about 300 bytes), so a larger file is not one this crate wrote, and reading it whole into
/// memory is refused rather than trusted.
pub(crate) const MAX_FILE_BYTES: u64 = 1 << 20;

/// The mode of the storage directory when this crate creates it: its owner only.
const DIR_MODE: u32 = 0o700;

/// The mode of a private file (a key, the account, the status) when this crate writes it.
pub(crate) const PRIVATE_MODE: u32 = 0o600;

/// The mode of the certificate chain, which is public.
pub(crate) const PUBLIC_MODE: u32 = 0o644;

/// Checks the storage directory, or creates it (and its missing parents) with mode 0700.
///
/// # Errors
///
/// When the path is not a directory, when it cannot be created, or when group or others have any
/// permission bit on it, with the `chmod` that fixes it.
pub(crate) fn open_dir(dir: &Path) -> Result<()> {
    match fs::metadata(dir) {
        Ok(metadata) => {
            if !metadata.is_dir() {
                bail!(
                    "the ACME storage {} is not a directory: point tls.acme.storage at a \
                     directory (it is created, mode 0700, when missing)",
                    dir.display()
                );
            }
            let mode = metadata.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                bail!(
                    "the ACME storage directory {} has mode {mode:04o}, which lets group or \
                     others in, and it holds private keys: run `chmod 700 {}`",
                    dir.display(),
                    dir.display()
                );
            }
            Ok(())
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)
            .with_context(|| {
                format!(
                    "cannot create the ACME storage directory {}: create it (mode 0700) or \
                     point tls.acme.storage elsewhere",
                    dir.display()
                )
            }),
        Err(error) => Err(error).with_context(|| {
            format!(
                "cannot read the ACME storage directory {}: check that the user qgate runs as \
                 can reach it",
                dir.display()
            )
        }),
    }
}

/// Checks that a private file, when it exists, is a regular file that group and others have no
/// permission bit on.
///
/// # Errors
///
/// When it is something else than a regular file, or its mode is looser than 0600, with the
/// `chmod` that fixes it.
pub(crate) fn check_private(path: &Path) -> Result<()> {
    let metadata = match fs::symlink_metadata(path) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(error) => {
            return Err(error).with_context(|| format!("cannot read {}", path.display()));
        }
    };
    if !metadata.file_type().is_file() {
        bail!(
            "{} is not a regular file: remove it, and qgate writes a new one",
            path.display()
        );
    }
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        bail!(
            "{} has mode {mode:04o}, which lets group or others read a private key: run \
             `chmod 600 {}`",
            path.display(),
            path.display()
        );
    }
    Ok(())
}

/// Reads a file of the storage directory whole, or `None` when it does not exist.
///
/// # Errors
///
/// When it is not a regular file, is larger than [`MAX_FILE_BYTES`], or cannot be read.
pub(crate) fn read(path: &Path) -> Result<Option<Vec<u8>>> {
    let metadata = match fs::symlink_metadata(path) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => {
            return Err(error).with_context(|| format!("cannot read {}", path.display()));
        }
    };
    if !metadata.file_type().is_file() {
        bail!(
            "{} is not a regular file: remove it, and qgate writes a new one",
            path.display()
        );
    }
    let too_large = || {
        anyhow::anyhow!(
            "{} is larger than {MAX_FILE_BYTES} bytes, which no file qgate keeps there is: \
             remove it, and qgate writes a new one",
            path.display()
        )
    };
    if metadata.len() > MAX_FILE_BYTES {
        return Err(too_large());
    }
    let file = fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(too_large());
    }
    Ok(Some(bytes))
}

/// A file written to a temporary name beside its final one, not yet in place.
pub(crate) struct Staged<'a> {
    temp: std::path::PathBuf,
    path: &'a Path,
}

impl Staged<'_> {
    /// Renames the file into place.
    ///
    /// # Errors
    ///
    /// When the rename fails; the temporary file is removed then.
    pub(crate) fn commit(self) -> Result<()> {
        fs::rename(&self.temp, self.path).with_context(|| {
            format!(
                "cannot rename {} to {}",
                self.temp.display(),
                self.path.display()
            )
        })?;
        // Renamed: nothing is left for `Drop` to remove.
        std::mem::forget(self);
        Ok(())
    }
}

impl Drop for Staged<'_> {
    /// A staged file that was never committed is removed.
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.temp);
    }
}

/// Writes `bytes` to a temporary file beside `path` with `mode`, flushed to disk, ready for
/// [`Staged::commit`] to rename it into place.
///
/// # Errors
///
/// When the temporary file cannot be created or written.
pub(crate) fn stage<'a>(path: &'a Path, bytes: &[u8], mode: u32) -> Result<Staged<'a>> {
    let name = path
        .file_name()
        .with_context(|| format!("{} has no file name", path.display()))?;
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(name);
    temp_name.push(".tmp");
    let temp = path.with_file_name(temp_name);
    // A temporary file left by a crash is stale: this process is the only writer.
    let _ = fs::remove_file(&temp);
    let staged = Staged { temp, path };
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&staged.temp)
        .with_context(|| format!("cannot create {}", staged.temp.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", staged.temp.display()))?;
    Ok(staged)
}

/// Writes `bytes` to `path` atomically (a temporary file renamed over it) with `mode`.
///
/// # Errors
///
/// When the file cannot be written or renamed.
pub(crate) fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    stage(path, bytes, mode)?.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_missing_directory_is_made_private() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("a/b");
        open_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        open_dir(&dir).unwrap();
    }

    #[test]
    fn a_loose_directory_is_refused_with_the_fix() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("s");
        fs::create_dir(&dir).unwrap();
        for loose in [0o755, 0o750, 0o701, 0o710] {
            fs::set_permissions(&dir, fs::Permissions::from_mode(loose)).unwrap();
            let error = open_dir(&dir).unwrap_err().to_string();
            assert!(error.contains(&format!("mode {loose:04o}")), "{error}");
            assert!(
                error.contains(&format!("chmod 700 {}", dir.display())),
                "{error}"
            );
        }
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o500)).unwrap();
        open_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
    }

    #[test]
    fn a_loose_key_is_refused_with_the_fix() {
        let temp = tempfile::tempdir().unwrap();
        let key = temp.path().join("key.pem");
        check_private(&key).unwrap();
        fs::write(&key, "k").unwrap();
        for (mode, ok) in [(0o600, true), (0o400, true), (0o640, false), (0o604, false)] {
            fs::set_permissions(&key, fs::Permissions::from_mode(mode)).unwrap();
            match check_private(&key) {
                Ok(()) => assert!(ok, "{mode:o} accepted"),
                Err(error) => {
                    assert!(!ok, "{mode:o} refused: {error}");
                    let error = error.to_string();
                    assert!(error.contains(&format!("mode {mode:04o}")), "{error}");
                    assert!(
                        error.contains(&format!("chmod 600 {}", key.display())),
                        "{error}"
                    );
                }
            }
        }
    }

    #[test]
    fn writes_are_whole_and_take_their_mode() {
        let temp = tempfile::tempdir().unwrap();
        let path = temp.path().join("key.pem");
        write(&path, b"one", PRIVATE_MODE).unwrap();
        assert_eq!(mode(&path), 0o600);
        write(&path, b"two", PRIVATE_MODE).unwrap();
        assert_eq!(read(&path).unwrap().unwrap(), b"two");
        let staged = stage(&path, b"three", PRIVATE_MODE).unwrap();
        drop(staged);
        assert_eq!(read(&path).unwrap().unwrap(), b"two", "uncommitted");
        assert_eq!(
            fs::read_dir(temp.path()).unwrap().count(),
            1,
            "no temp left"
        );
    }

    #[test]
    fn reads_are_capped() {
        let temp = tempfile::tempdir().unwrap();
        let path = temp.path().join("cert.pem");
        assert_eq!(read(&path).unwrap(), None);
        fs::write(
            &path,
            vec![b'x'; usize::try_from(MAX_FILE_BYTES).unwrap() + 1],
        )
        .unwrap();
        let error = read(&path).unwrap_err().to_string();
        assert!(error.contains("larger than 1048576 bytes"), "{error}");
        let error = read(temp.path()).unwrap_err().to_string();
        assert!(error.contains("not a regular file"), "{error}");
    }
}
