//! Plugin digests, pins and signatures: what a locked deployment checks before it compiles a
//! plugin's bytes.
//!
//! A plugin's version is the sha256 of its file (with the files its config names, the digest of
//! them all: [`Digest::of_version`]). A pin (`sha256` in its config entry) names the one
//! component that may run; a signature (`<file>.sig` beside the component) is an ed25519
//! signature of the file's bytes by a key the config names. A file the config names is pinned
//! (`sha256` beside its `file`) or signed (`<file>.sig`) the same way, on its own. Keys and signatures are base64 text,
//! one value on one line, as `qgate keygen` and `qgate sign` write them.
//!
//! Both are checked on the file's bytes before they are compiled, at start and at every swap: a
//! pinned plugin must have its pinned digest (locked or not); in a locked deployment an unpinned
//! one must have a signature by one of the keys. The refusal (`HostError::Refused`) names the
//! plugin, the file, and the expected and actual digest or the signature's problem and the keys
//! tried. A rollback loads only versions that passed these checks when they were first loaded.

use std::{fmt, path::Path, str::FromStr};

use base64::{Engine as _, engine::general_purpose::STANDARD as BASE64};
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use qgate_files::ReadRules;
use sha2::{Digest as _, Sha256};

/// The largest signature file that is read.
///
/// `qgate sign` writes 89 bytes (a 64-byte signature in base64 and a newline); 4 KiB allows for
/// any editor's additions and keeps a wrong file at the `.sig` path from being read whole.
const MAX_SIGNATURE_FILE_BYTES: u64 = 4096;

/// The sha256 digest of a plugin file: its version.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digest([u8; 32]);

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    /// The version of a plugin whose config names files: the digest of its component's digest
    /// and of each file's place in the config and digest, so that a change to any of them is a
    /// new version. With no files, the version is the component's digest, as before files were
    /// possible, so that pins and `qgate plugins` keep their meaning.
    pub fn of_version<'a>(
        component: &Digest,
        files: impl IntoIterator<Item = (&'a str, &'a Digest)>,
    ) -> Self {
        let mut files = files.into_iter().peekable();
        if files.peek().is_none() {
            return *component;
        }
        let mut hasher = Sha256::new();
        hasher.update(b"qgate plugin version\0");
        hasher.update(component.0);
        for (pointer, digest) in files {
            hasher.update(
                u64::try_from(pointer.len())
                    .unwrap_or(u64::MAX)
                    .to_le_bytes(),
            );
            hasher.update(pointer.as_bytes());
            hasher.update(digest.0);
        }
        Self(hasher.finalize().into())
    }

    /// The first 12 hex digits, for logs and tables: enough to tell versions apart at a glance.
    pub fn short(&self) -> String {
        let mut text = self.to_string();
        text.truncate(12);
        text
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

/// Why a text is not a digest, a key or a signature.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(String);

impl FromStr for Digest {
    type Err = ParseError;

    /// 64 hex digits, either case.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let bad = || {
            ParseError(format!(
                "a sha256 digest is 64 hex digits, not {:?}",
                text.chars().take(80).collect::<String>()
            ))
        };
        if text.len() != 64 || !text.is_ascii() {
            return Err(bad());
        }
        let mut digest = [0; 32];
        for (byte, pair) in digest.iter_mut().zip(text.as_bytes().chunks(2)) {
            let pair = std::str::from_utf8(pair).map_err(|_| bad())?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| bad())?;
        }
        Ok(Self(digest))
    }
}

/// An ed25519 public key that may sign plugins, from its base64 text.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// The key as base64 text, the form the config takes.
    pub fn to_base64(&self) -> String {
        BASE64.encode(self.0.as_bytes())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_base64())
    }
}

impl FromStr for PublicKey {
    type Err = ParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bytes: [u8; 32] = decode_base64(text, "an ed25519 public key", 32)?;
        VerifyingKey::from_bytes(&bytes)
            .map(Self)
            .map_err(|_| ParseError("not a valid ed25519 public key".into()))
    }
}

/// An ed25519 private key that signs plugins, as `qgate keygen` writes it: the base64 of its
/// 32-byte seed.
pub struct SecretKey(SigningKey);

impl SecretKey {
    /// A new key from the operating system's random source.
    ///
    /// # Errors
    ///
    /// If the random source fails, which on Linux means `getrandom(2)` is unavailable.
    pub fn generate() -> Result<Self, ParseError> {
        let mut seed = [0; 32];
        getrandom::getrandom(&mut seed)
            .map_err(|e| ParseError(format!("cannot read the system's random source: {e}")))?;
        Ok(Self(SigningKey::from_bytes(&seed)))
    }

    /// The key as base64 text, for its file.
    pub fn to_base64(&self) -> String {
        BASE64.encode(self.0.to_bytes())
    }

    /// The public half, for `[lock] keys`.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// The signature of `bytes` as base64 text, the content of a `.sig` file.
    pub fn sign(&self, bytes: &[u8]) -> String {
        BASE64.encode(self.0.sign(bytes).to_bytes())
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

impl FromStr for SecretKey {
    type Err = ParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let seed: [u8; 32] = decode_base64(text, "an ed25519 private key", 32)?;
        Ok(Self(SigningKey::from_bytes(&seed)))
    }
}

fn decode_base64<const N: usize>(
    text: &str,
    what: &str,
    len: usize,
) -> Result<[u8; N], ParseError> {
    let bytes = BASE64
        .decode(text.trim())
        .map_err(|e| ParseError(format!("{what} is base64 text: {e}")))?;
    <[u8; N]>::try_from(bytes.as_slice()).map_err(|_| {
        ParseError(format!(
            "{what} is {len} bytes (base64), not {}",
            bytes.len()
        ))
    })
}

/// What a deployment requires of the plugins it runs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LockPolicy {
    /// Whether every plugin must be pinned or signed (`[lock] enabled`). Pins are checked
    /// whether or not the deployment is locked.
    pub locked: bool,
    /// The keys whose signatures are accepted.
    pub keys: Vec<PublicKey>,
}

/// The path of the signature of the component at `path`: `<path>.sig`.
pub fn signature_path(path: &Path) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".sig");
    name.into()
}

/// Checks `bytes`, read from `path`, against the plugin's pin and the policy: `Err` says why it
/// may not run, naming the expected and the actual digest or the keys tried.
///
/// `pin_at` says where a pin would be written, for the message.
pub(crate) fn check(
    policy: &LockPolicy,
    pin: Option<&Digest>,
    pin_at: &str,
    path: &Path,
    bytes: &[u8],
    digest: &Digest,
) -> Result<(), String> {
    if let Some(pin) = pin {
        return if pin == digest {
            Ok(())
        } else {
            Err(format!(
                "its sha256 is {digest}, but the config pins {pin}: pin the new digest, or put \
                 back the pinned file"
            ))
        };
    }
    if !policy.locked {
        return Ok(());
    }
    let sig_path = signature_path(path);
    let text = match qgate_files::read(&sig_path, ReadRules::new(MAX_SIGNATURE_FILE_BYTES)) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(error) if error.is_not_found() => {
            return Err(format!(
                "the deployment is locked and it is neither pinned (`sha256` {pin_at}; its \
                 sha256 is {digest}) nor signed ({} does not exist; make it with `qgate sign`)",
                sig_path.display()
            ));
        }
        Err(error) => return Err(error.to_string()),
    };
    let signature: [u8; 64] = decode_base64(&text, "a signature", 64)
        .map_err(|e| format!("{} is not a signature: {e}", sig_path.display()))?;
    let signature = Signature::from_bytes(&signature);
    if policy
        .keys
        .iter()
        .any(|key| key.0.verify(bytes, &signature).is_ok())
    {
        return Ok(());
    }
    let keys = policy
        .keys
        .iter()
        .map(PublicKey::to_base64)
        .collect::<Vec<_>>();
    Err(format!(
        "the deployment is locked and {} is not a valid signature of its bytes (sha256 {digest}) \
         by any key of [lock] keys ({}): sign it again with `qgate sign` and a listed key",
        sig_path.display(),
        if keys.is_empty() {
            "none listed".to_owned()
        } else {
            keys.join(", ")
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_is_its_component_and_each_files_place_and_content() {
        let component = Digest::of(b"component");
        let (a, b) = (Digest::of(b"a"), Digest::of(b"b"));
        assert_eq!(Digest::of_version(&component, []), component);
        let both = Digest::of_version(&component, [("/x", &a), ("/y", &b)]);
        assert_ne!(both, component);
        assert_eq!(
            both,
            Digest::of_version(&component, [("/x", &a), ("/y", &b)])
        );
        // Another content, another place, another component: another version.
        assert_ne!(
            both,
            Digest::of_version(&component, [("/x", &a), ("/y", &a)])
        );
        assert_ne!(
            both,
            Digest::of_version(&component, [("/y", &a), ("/x", &b)])
        );
        assert_ne!(
            both,
            Digest::of_version(&Digest::of(b"other"), [("/x", &a), ("/y", &b)])
        );
        // A place's length is hashed, so that places cannot run into each other.
        assert_ne!(
            Digest::of_version(&component, [("/ab", &a), ("/c", &b)]),
            Digest::of_version(&component, [("/a", &a), ("/bc", &b)])
        );
    }

    #[test]
    fn digests_round_trip_through_hex() {
        let digest = Digest::of(b"abc");
        assert_eq!(
            digest.to_string(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(digest.to_string().parse::<Digest>().ok(), Some(digest));
        assert_eq!(
            digest.to_string().to_uppercase().parse::<Digest>().ok(),
            Some(digest)
        );
        assert!("abc".parse::<Digest>().is_err());
        assert!("zz".repeat(32).parse::<Digest>().is_err());
    }

    #[test]
    fn keys_round_trip_and_signatures_verify() {
        let secret = SecretKey::generate().expect("a random source");
        let again: SecretKey = secret.to_base64().parse().expect("a key");
        assert_eq!(again.public_key(), secret.public_key());
        let public: PublicKey = secret.public_key().to_base64().parse().expect("a key");
        assert_eq!(public, secret.public_key());
        assert!("AAAA".parse::<PublicKey>().is_err());
    }
}
