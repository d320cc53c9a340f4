//! `qgate keygen` and `qgate sign`: the ed25519 keys and the signatures of a locked deployment.
//!
//! A private key file holds the base64 of the key's 32-byte seed on one line and is made 0600; the
//! public key, printed by `keygen` (and written to `FILE.pub`), goes into `[lock] keys`. A
//! signature is the base64 of an ed25519 signature of the component file's bytes, written to
//! `<component>.sig`, where the server looks for it.

use std::{
    fs,
    io::{self, Write as _},
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, anyhow, bail};
use qgate_host::{Digest, SecretKey, signature_path};

/// `qgate keygen FILE`.
#[derive(Debug, clap::Args)]
pub(crate) struct KeygenArgs {
    /// Where to write the private key (0600); the public key goes to FILE.pub as well.
    #[arg(value_name = "FILE")]
    file: PathBuf,
}

/// `qgate sign KEYFILE COMPONENT...`.
#[derive(Debug, clap::Args)]
pub(crate) struct SignArgs {
    /// The private key file that `qgate keygen` wrote.
    #[arg(value_name = "KEYFILE")]
    key: PathBuf,
    /// The component files to sign; each gets a `.sig` beside it.
    #[arg(value_name = "COMPONENT", required = true)]
    components: Vec<PathBuf>,
}

/// Makes a key pair.
///
/// # Errors
///
/// When FILE exists already (a key is never overwritten), or cannot be written.
pub(crate) fn keygen(args: &KeygenArgs) -> Result<()> {
    let key = SecretKey::generate().map_err(|e| anyhow!("{e}"))?;
    let public = key.public_key().to_base64();
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&args.file)
        .map_err(|error| {
            let hint = if error.kind() == io::ErrorKind::AlreadyExists {
                "; a key is never overwritten: choose another file, or remove this one first"
            } else {
                ""
            };
            anyhow!("cannot create the key file {:?}: {error}{hint}", args.file)
        })?;
    writeln!(file, "{}", key.to_base64())
        .with_context(|| format!("cannot write {:?}", args.file))?;
    let mut pub_path = args.file.as_os_str().to_owned();
    pub_path.push(".pub");
    fs::write(&pub_path, format!("{public}\n"))
        .with_context(|| format!("cannot write {pub_path:?}"))?;
    let mut out = io::stdout().lock();
    writeln!(
        out,
        "private key: {} (keep it off the servers)",
        args.file.display()
    )?;
    writeln!(out, "public key:  {public}")?;
    writeln!(out, "add it to the config: [lock] keys = [\"{public}\"]")?;
    Ok(())
}

/// Signs each component.
///
/// # Errors
///
/// When the key or a component cannot be read, or a signature cannot be written.
pub(crate) fn sign(args: &SignArgs) -> Result<()> {
    let key = read_key(&args.key)?;
    let mut out = io::stdout().lock();
    for component in &args.components {
        let bytes = fs::read(component).with_context(|| format!("cannot read {component:?}"))?;
        let path = signature_path(component);
        fs::write(&path, format!("{}\n", key.sign(&bytes)))
            .with_context(|| format!("cannot write {path:?}"))?;
        writeln!(
            out,
            "{}: sha256 {}, signed by {}",
            path.display(),
            Digest::of(&bytes),
            key.public_key().to_base64()
        )?;
    }
    Ok(())
}

fn read_key(path: &Path) -> Result<SecretKey> {
    let text = fs::read_to_string(path).with_context(|| format!("cannot read the key {path:?}"))?;
    match text.trim().parse() {
        Ok(key) => Ok(key),
        Err(error) => bail!("{path:?} is not a key that `qgate keygen` wrote: {error}"),
    }
}
