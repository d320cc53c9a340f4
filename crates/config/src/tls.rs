//! `[tls]`: TLS on the q port, and kdb+'s `SSL_*` environment variables where the file says
//! nothing.
//!
//! The table as written ([`Tls`]) may leave out the files, since kdb+'s environment variables can
//! name them; [`Tls::resolve`] fills the gaps from the environment and checks that the result
//! hangs together, giving [`ResolvedTls`], whose every field is known.
//!
//! | key              | environment, when the key is left out                          |
//! |------------------|----------------------------------------------------------------|
//! | `cert_file`      | `KX_SSL_CERT_FILE`, then `SSL_CERT_FILE`                       |
//! | `key_file`       | `KX_SSL_KEY_FILE`, then `SSL_KEY_FILE`                         |
//! | `ca_file`        | `KX_SSL_CA_CERT_FILE`, then `SSL_CA_CERT_FILE`                 |
//! | `client_auth`    | `KX_SSL_VERIFY_CLIENT`, then `SSL_VERIFY_CLIENT`: `NO`, `IFPRESENT`, `YES` |
//!
//! The `KX_` forms win over the plain ones, as in kdb+ 4.1.
//!
//! With `[tls.acme]`, the certificate and its key come from an ACME CA instead: they are the
//! files [`Acme::CERT_FILE`] and [`Acme::KEY_FILE`] in its `storage` directory, and neither the
//! keys `cert_file` and `key_file` nor their environment variables apply.

use std::{net::IpAddr, path::PathBuf, time::Duration};

use serde::Deserialize;

use crate::{
    error::ConfigError,
    value::{HumanDuration, Listen},
};

/// `[tls]`: TLS on the q port, as q's `-E`.
///
/// ```toml
/// [tls]
/// mode = "optional"
/// cert_file = "/etc/qgate/tls/fullchain.pem"
/// key_file = "/etc/qgate/tls/privkey.pem"
/// client_auth = "required"
/// ca_file = "/etc/qgate/tls/clients-ca.pem"
/// user_from = "cn"
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Tls {
    /// Whether the q port speaks TLS: `mode = "off"`, the default (q's `-E 0`), `"optional"`
    /// (plain and TLS on one port, `-E 1`) or `"required"` (`-E 2`).
    pub mode: TlsMode,
    /// The certificate chain, PEM, the server's certificate first and then its intermediates
    /// (certbot's `fullchain.pem`): `cert_file = "fullchain.pem"`. Left out, `SSL_CERT_FILE`.
    ///
    /// A relative path is resolved against the directory that holds the config file.
    pub cert_file: Option<PathBuf>,
    /// The private key, PEM, readable by its owner only: `key_file = "privkey.pem"`. Left out,
    /// `SSL_KEY_FILE`.
    ///
    /// A relative path is resolved against the directory that holds the config file.
    pub key_file: Option<PathBuf>,
    /// The CA bundle, PEM, that client certificates must chain to: `ca_file = "clients-ca.pem"`.
    /// Left out, `SSL_CA_CERT_FILE`. Needed when `client_auth` is not `"none"`.
    ///
    /// A relative path is resolved against the directory that holds the config file.
    pub ca_file: Option<PathBuf>,
    /// Whether clients must present a certificate: `client_auth = "none"` (`SSL_VERIFY_CLIENT=NO`),
    /// `"optional"` (`IFPRESENT`) or `"required"` (`YES`). Left out, `SSL_VERIFY_CLIENT`, and
    /// `"none"` without it.
    pub client_auth: Option<ClientAuth>,
    /// Where the user name of a client with a verified certificate comes from: `user_from =
    /// "none"`, the default (the handshake's), `"cn"` (the subject's common name) or `"san"` (the
    /// first subject alternative name). With `"cn"` or `"san"` the certificate is the credential:
    /// the password file is not asked for such clients.
    pub user_from: UserFrom,
    /// Certificates from an ACME CA such as Let's Encrypt: `[tls.acme]`. Absent, the certificate
    /// is `cert_file`'s; present, it is issued and renewed into `storage`, and setting
    /// `cert_file` or `key_file` as well is an error.
    pub acme: Option<Acme>,
}

/// `[tls.acme]`: the certificate from an ACME CA (Let's Encrypt by default), issued at start when
/// there is none and renewed before it expires.
///
/// ```toml
/// [tls.acme]
/// domains = ["q.example.com"]
/// email = "ops@example.com"
/// storage = "/var/lib/qgate/acme"
/// # directory = "https://acme-staging-v02.api.letsencrypt.org/directory"   # to try it out
/// # challenge = "http-01"
/// # renew_before = "30d"
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawAcme")]
#[non_exhaustive]
pub struct Acme {
    /// The DNS names the certificate is for, the first one its subject's; at least one, no
    /// wildcards (which only DNS-01 can prove): `domains = ["q.example.com"]`. Required.
    pub domains: Vec<String>,
    /// The contact the CA sends expiry notices to: `email = "ops@example.com"`. Left out, the
    /// account has no contact.
    pub email: Option<String>,
    /// The CA's directory URL, HTTPS: `directory = "https://..."`. Left out, Let's Encrypt's
    /// production directory, [`Acme::LETS_ENCRYPT`]. To try a setup out, use its staging
    /// directory, [`Acme::LETS_ENCRYPT_STAGING`]
    /// (`"https://acme-staging-v02.api.letsencrypt.org/directory"`), whose rate limits are far
    /// higher and whose certificates no client trusts.
    pub directory: String,
    /// A PEM bundle of the CAs that the directory's own HTTPS certificate chains to, for a
    /// private or test CA such as Pebble: `directory_ca_file = "pebble-ca.pem"`. Left out, the
    /// system's roots. A relative path is resolved against the directory that holds the config
    /// file.
    pub directory_ca_file: Option<PathBuf>,
    /// The directory that keeps the account key, the certificate and its key:
    /// `storage = "/var/lib/qgate/acme"`. Required. Created with mode 0700 when missing; qgate
    /// refuses to start when it, or a key in it, lets group or others in. The server loads
    /// [`Acme::CERT_FILE`] and [`Acme::KEY_FILE`] from it. A relative path is resolved against
    /// the directory that holds the config file.
    pub storage: PathBuf,
    /// How the CA checks that the names are this server's: `challenge = "tls-alpn-01"`, the
    /// default (answered on the q port itself, which the CA reaches on port 443, so no other
    /// port is needed), or `"http-01"` (the CA fetches `http://DOMAIN/.well-known/...` on port
    /// 80, which must reach qgate's HTTP).
    pub challenge: AcmeChallenge,
    /// How long before the certificate expires renewal starts: `renew_before = "30d"`, the
    /// default (Let's Encrypt's certificates live 90 days and it suggests renewing with a third
    /// left, which leaves a month to retry a failing renewal). Renewal starts up to a tenth of
    /// this earlier still, at random, so that certificates issued together do not renew
    /// together. Greater than zero.
    pub renew_before: HumanDuration,
    /// A plain HTTP listener of its own for HTTP-01 validations, which the CA makes on port 80:
    /// `http_listen = "0.0.0.0:80"`. It answers `/.well-known/acme-challenge/` and redirects
    /// everything else to `https://`. Left out, HTTP-01 is answered on the q port's HTTP only,
    /// so port 80 must reach the q port some other way (a port forward).
    pub http_listen: Option<Listen>,
}

impl Acme {
    /// Let's Encrypt's production directory, the default `directory`.
    pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
    /// Let's Encrypt's staging directory, for trying a setup out.
    pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";
    /// The default `renew_before`: 30 days.
    pub const DEFAULT_RENEW_BEFORE: Duration = Duration::from_secs(30 * 86_400);
    /// The certificate chain's file in `storage` (the name `qgate-acme` writes).
    pub const CERT_FILE: &str = "cert.pem";
    /// The private key's file in `storage` (the name `qgate-acme` writes).
    pub const KEY_FILE: &str = "key.pem";
}

/// `tls.acme.challenge`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub enum AcmeChallenge {
    /// HTTP-01 on port 80: `"http-01"`.
    #[serde(rename = "http-01")]
    Http01,
    /// TLS-ALPN-01 on port 443: `"tls-alpn-01"`.
    #[default]
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
}

/// `[tls.acme]` as written, before its values are checked.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAcme {
    domains: Vec<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    directory: Option<String>,
    #[serde(default)]
    directory_ca_file: Option<PathBuf>,
    storage: PathBuf,
    #[serde(default)]
    challenge: AcmeChallenge,
    #[serde(default)]
    renew_before: Option<HumanDuration>,
    #[serde(default)]
    http_listen: Option<Listen>,
}

impl TryFrom<RawAcme> for Acme {
    type Error = String;

    fn try_from(raw: RawAcme) -> Result<Self, String> {
        if raw.domains.is_empty() {
            return Err(
                "domains is empty: name at least one DNS name to get a certificate for, \
                        such as domains = [\"q.example.com\"]"
                    .to_owned(),
            );
        }
        let domains = raw
            .domains
            .iter()
            .map(|domain| dns_name(domain))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(email) = &raw.email
            && (email.starts_with("mailto:")
                || !email.contains('@')
                || email.contains(|c: char| c.is_whitespace() || c == ','))
        {
            return Err(format!(
                "email `{email}` is not one address such as \"ops@example.com\" (without \
                 mailto:)"
            ));
        }
        let directory = raw
            .directory
            .unwrap_or_else(|| Self::LETS_ENCRYPT.to_owned());
        if !directory.starts_with("https://") {
            return Err(format!(
                "directory `{directory}` is not an https:// URL, which ACME requires; Let's \
                 Encrypt's is {}",
                Self::LETS_ENCRYPT
            ));
        }
        let renew_before = raw
            .renew_before
            .unwrap_or(HumanDuration(Self::DEFAULT_RENEW_BEFORE));
        if renew_before.get().is_zero() {
            return Err(
                "renew_before = \"0s\" would renew only once the certificate has expired; use \
                 a positive duration such as \"30d\""
                    .to_owned(),
            );
        }
        Ok(Self {
            domains,
            email: raw.email,
            directory,
            directory_ca_file: raw.directory_ca_file,
            storage: raw.storage,
            challenge: raw.challenge,
            renew_before,
            http_listen: raw.http_listen,
        })
    }
}

/// Checks that `text` is a DNS name an ACME CA can issue for with an HTTP or TLS challenge: not
/// an IP address, no wildcard, letters, digits and hyphens in dot-separated labels of 1 to 63
/// characters, at most 253 in all. Kept in lower case.
fn dns_name(text: &str) -> Result<String, String> {
    let invalid = |reason: &str| format!("domains: `{text}` {reason}");
    if text.parse::<IpAddr>().is_ok() {
        return Err(invalid(
            "is an IP address; name the host by its DNS name, which the certificate is for",
        ));
    }
    if text.contains('*') {
        return Err(invalid(
            "is a wildcard, which only a DNS-01 challenge can prove; name each host",
        ));
    }
    let name = text.strip_suffix('.').unwrap_or(text).to_ascii_lowercase();
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    if name.len() > 253 || !name.contains('.') || !name.split('.').all(label_ok) {
        return Err(invalid(
            "is not a DNS name such as \"q.example.com\" (dot-separated labels of letters, \
             digits and hyphens)",
        ));
    }
    Ok(name)
}

/// `tls.mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Plain q only: `"off"` (`-E 0`).
    #[default]
    Off,
    /// Plain and TLS on one port: `"optional"` (`-E 1`).
    Optional,
    /// TLS only: `"required"` (`-E 2`).
    Required,
}

/// `tls.client_auth`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// No client certificate is asked for: `"none"`.
    None,
    /// A client certificate is verified if presented: `"optional"`.
    Optional,
    /// Every client must present a certificate that verifies: `"required"`.
    Required,
}

/// `tls.user_from`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UserFrom {
    /// The subject's common name: `"cn"`.
    Cn,
    /// The handshake's user name: `"none"`.
    #[default]
    None,
    /// The first subject alternative name: `"san"`.
    San,
}

/// `[tls]` with the environment applied and checked: what the server is given.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ResolvedTls {
    /// `Optional` or `Required`; never `Off`, which resolves to no TLS at all.
    pub mode: TlsMode,
    /// The certificate chain.
    pub cert_file: PathBuf,
    /// The private key.
    pub key_file: PathBuf,
    /// Client certificates, and the CA bundle that verifies them.
    pub client_auth: ResolvedClientAuth,
    /// Where a certificate-holder's user name comes from.
    pub user_from: UserFrom,
    /// `[tls.acme]`, when the certificate comes from an ACME CA: then `cert_file` and `key_file`
    /// are [`Acme::CERT_FILE`] and [`Acme::KEY_FILE`] in its storage directory.
    pub acme: Option<Acme>,
}

/// `tls.client_auth` with its CA bundle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResolvedClientAuth {
    /// No client certificate is asked for.
    None,
    /// A presented certificate must chain to this CA bundle.
    Optional(PathBuf),
    /// Every client must present a certificate that chains to this CA bundle.
    Required(PathBuf),
}

impl Tls {
    /// Checks that `[tls.acme]` fits the rest of `[tls]`: TLS is on, and the certificate's files
    /// are not named twice.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] naming the key: `tls.mode` when it is `"off"` with `[tls.acme]`,
    /// `tls.cert_file` or `tls.key_file` when one is set with `[tls.acme]`.
    pub fn check_acme(&self) -> Result<(), ConfigError> {
        if self.acme.is_none() {
            return Ok(());
        }
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            file: None,
            key: key.to_owned(),
            line: None,
            column: None,
            message,
        };
        if self.mode == TlsMode::Off {
            return Err(invalid(
                "tls.mode",
                "[tls.acme] gets a certificate for TLS, which tls.mode = \"off\" (the default) \
                 turns off: set tls.mode = \"required\" or \"optional\""
                    .to_owned(),
            ));
        }
        for (key, set, name) in [
            ("cert_file", &self.cert_file, Acme::CERT_FILE),
            ("key_file", &self.key_file, Acme::KEY_FILE),
        ] {
            if set.is_some() {
                return Err(invalid(
                    &format!("tls.{key}"),
                    format!(
                        "tls.{key} and [tls.acme] both name the certificate's files: with \
                         [tls.acme] they are {name} in tls.acme.storage, so remove tls.{key}, \
                         or remove [tls.acme] to use your own"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Fills what the table leaves out from kdb+'s environment variables, read through `env`
    /// (`|name| std::env::var(name).ok()` in the binary), and checks that the result is whole.
    /// `Ok(None)` when TLS is off.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Environment`] when `SSL_VERIFY_CLIENT` is not `NO`, `IFPRESENT` or `YES`;
    /// [`ConfigError::Invalid`] naming the key as [`Tls::check_acme`] does, when TLS is on without
    /// a certificate or key (and without `[tls.acme]`), when
    /// client authentication has no CA bundle, or when `user_from` has no client certificates to
    /// take the user from.
    pub fn resolve(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<ResolvedTls>, ConfigError> {
        if self.mode == TlsMode::Off {
            return Ok(None);
        }
        let lookup = |name: &str| -> Option<(String, String)> {
            let kx = format!("KX_{name}");
            env(&kx)
                .filter(|value| !value.is_empty())
                .map(|value| (kx, value))
                .or_else(|| {
                    env(name)
                        .filter(|value| !value.is_empty())
                        .map(|value| (name.to_owned(), value))
                })
        };
        let path = |set: &Option<PathBuf>, name: &str| {
            set.clone()
                .or_else(|| lookup(name).map(|(_, value)| PathBuf::from(value)))
        };
        let mode = match self.mode {
            TlsMode::Optional => "optional",
            TlsMode::Off | TlsMode::Required => "required",
        };
        let missing = |key: &str, what: &str, variable: &str| ConfigError::Invalid {
            file: None,
            key: format!("tls.{key}"),
            line: None,
            column: None,
            message: format!(
                "tls.mode = \"{mode}\" needs {what}: set tls.{key}, or the environment variable \
                 {variable}"
            ),
        };
        self.check_acme()?;
        let (cert_file, key_file) = match &self.acme {
            Some(acme) => (
                acme.storage.join(Acme::CERT_FILE),
                acme.storage.join(Acme::KEY_FILE),
            ),
            None => (
                path(&self.cert_file, "SSL_CERT_FILE")
                    .ok_or_else(|| missing("cert_file", "a certificate chain", "SSL_CERT_FILE"))?,
                path(&self.key_file, "SSL_KEY_FILE")
                    .ok_or_else(|| missing("key_file", "a private key", "SSL_KEY_FILE"))?,
            ),
        };
        let client_auth = match self.client_auth {
            Some(client_auth) => client_auth,
            None => match lookup("SSL_VERIFY_CLIENT") {
                None => ClientAuth::None,
                Some((variable, value)) => match value.to_ascii_uppercase().as_str() {
                    "NO" => ClientAuth::None,
                    "IFPRESENT" => ClientAuth::Optional,
                    "YES" => ClientAuth::Required,
                    _ => {
                        return Err(ConfigError::Environment {
                            variable,
                            message: format!(
                                "`{value}` is not one of NO, IFPRESENT or YES (as kdb+ takes it)"
                            ),
                        });
                    }
                },
            },
        };
        let ca_file = path(&self.ca_file, "SSL_CA_CERT_FILE");
        let client_auth = match (client_auth, ca_file) {
            (ClientAuth::None, _) => ResolvedClientAuth::None,
            (ClientAuth::Optional, Some(ca)) => ResolvedClientAuth::Optional(ca),
            (ClientAuth::Required, Some(ca)) => ResolvedClientAuth::Required(ca),
            (ClientAuth::Optional | ClientAuth::Required, None) => {
                return Err(ConfigError::Invalid {
                    file: None,
                    key: "tls.ca_file".to_owned(),
                    line: None,
                    column: None,
                    message: "client authentication needs the CA bundle that client certificates \
                              chain to: set tls.ca_file, or the environment variable \
                              SSL_CA_CERT_FILE"
                        .to_owned(),
                });
            }
        };
        if self.user_from != UserFrom::None && client_auth == ResolvedClientAuth::None {
            return Err(ConfigError::Invalid {
                file: None,
                key: "tls.user_from".to_owned(),
                line: None,
                column: None,
                message: "a user name from the client certificate needs client certificates: set \
                          tls.client_auth = \"optional\" or \"required\""
                    .to_owned(),
            });
        }
        Ok(Some(ResolvedTls {
            mode: self.mode,
            cert_file,
            key_file,
            client_auth,
            user_from: self.user_from,
            acme: self.acme.clone(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::HashMap, time::Duration};

    use super::*;

    fn tls(toml: &str) -> Tls {
        crate::Config::from_toml_str(toml)
            .unwrap_or_else(|error| panic!("{error}"))
            .tls
    }

    fn resolve(tls: &Tls, env: &[(&str, &str)]) -> Result<Option<ResolvedTls>, ConfigError> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
        tls.resolve(|name| env.get(name).cloned())
    }

    #[test]
    fn off_is_off_whatever_the_environment() {
        let env = [("SSL_CERT_FILE", "c.pem"), ("SSL_VERIFY_CLIENT", "bogus")];
        assert_eq!(resolve(&Tls::default(), &env).unwrap(), None);
    }

    #[test]
    fn the_file_wins_over_the_environment() {
        let tls = tls(
            "[tls]\nmode = \"required\"\ncert_file = \"file.pem\"\nkey_file = \"file.key\"\n\
             client_auth = \"none\"\n",
        );
        let env = [
            ("SSL_CERT_FILE", "env.pem"),
            ("SSL_KEY_FILE", "env.key"),
            ("SSL_VERIFY_CLIENT", "YES"),
        ];
        let resolved = resolve(&tls, &env).unwrap().unwrap();
        assert_eq!(resolved.cert_file, PathBuf::from("file.pem"));
        assert_eq!(resolved.key_file, PathBuf::from("file.key"));
        assert_eq!(resolved.client_auth, ResolvedClientAuth::None);
    }

    #[test]
    fn the_environment_fills_the_gaps_and_kx_forms_win() {
        let tls = tls("[tls]\nmode = \"optional\"\n");
        let env = [
            ("SSL_CERT_FILE", "plain.pem"),
            ("KX_SSL_CERT_FILE", "kx.pem"),
            ("SSL_KEY_FILE", "plain.key"),
            ("SSL_CA_CERT_FILE", "ca.pem"),
            ("SSL_VERIFY_CLIENT", "NO"),
            ("KX_SSL_VERIFY_CLIENT", "ifpresent"),
        ];
        let resolved = resolve(&tls, &env).unwrap().unwrap();
        assert_eq!(resolved.mode, TlsMode::Optional);
        assert_eq!(resolved.cert_file, PathBuf::from("kx.pem"));
        assert_eq!(resolved.key_file, PathBuf::from("plain.key"));
        assert_eq!(
            resolved.client_auth,
            ResolvedClientAuth::Optional("ca.pem".into())
        );
        let env = [
            ("SSL_CERT_FILE", "c.pem"),
            ("SSL_KEY_FILE", "c.key"),
            ("KX_SSL_CA_CERT_FILE", "kx-ca.pem"),
            ("SSL_VERIFY_CLIENT", "YES"),
        ];
        assert_eq!(
            resolve(&tls, &env).unwrap().unwrap().client_auth,
            ResolvedClientAuth::Required("kx-ca.pem".into())
        );
    }

    #[test]
    fn what_is_missing_is_named() {
        let tls = tls("[tls]\nmode = \"required\"\n");
        let error = resolve(&tls, &[("SSL_KEY_FILE", "k")]).unwrap_err();
        assert_eq!(error.key(), Some("tls.cert_file"));
        assert!(error.to_string().contains("SSL_CERT_FILE"), "{error}");

        let error = resolve(&tls, &[("SSL_CERT_FILE", "c")]).unwrap_err();
        assert_eq!(error.key(), Some("tls.key_file"));

        let env = [
            ("SSL_CERT_FILE", "c"),
            ("SSL_KEY_FILE", "k"),
            ("SSL_VERIFY_CLIENT", "YES"),
        ];
        let error = resolve(&tls, &env).unwrap_err();
        assert_eq!(error.key(), Some("tls.ca_file"));

        let env = [
            ("SSL_CERT_FILE", "c"),
            ("SSL_KEY_FILE", "k"),
            ("SSL_VERIFY_CLIENT", "maybe"),
        ];
        let error = resolve(&tls, &env).unwrap_err();
        assert_eq!(
            error.to_string(),
            "environment variable SSL_VERIFY_CLIENT: `maybe` is not one of NO, IFPRESENT or YES \
             (as kdb+ takes it)"
        );

        let tls = self::tls("[tls]\nmode = \"required\"\nuser_from = \"cn\"\n");
        let error = resolve(&tls, &[("SSL_CERT_FILE", "c"), ("SSL_KEY_FILE", "k")]).unwrap_err();
        assert_eq!(error.key(), Some("tls.user_from"));
    }

    #[test]
    fn acme_takes_its_defaults_and_names_the_files() {
        let tls = tls(
            "[tls]\nmode = \"required\"\n[tls.acme]\ndomains = [\"Q.Example.com.\"]\n\
             storage = \"acme\"\n",
        );
        let acme = tls.acme.clone().unwrap();
        assert_eq!(acme.domains, ["q.example.com"]);
        assert_eq!(acme.email, None);
        assert_eq!(acme.directory, Acme::LETS_ENCRYPT);
        assert_eq!(acme.directory_ca_file, None);
        assert_eq!(acme.challenge, AcmeChallenge::TlsAlpn01);
        assert_eq!(acme.renew_before.get(), Duration::from_secs(30 * 86_400));
        // The storage's files, whatever the environment says.
        let env = [("SSL_CERT_FILE", "env.pem"), ("SSL_KEY_FILE", "env.key")];
        let resolved = resolve(&tls, &env).unwrap().unwrap();
        assert_eq!(resolved.cert_file, PathBuf::from("acme/cert.pem"));
        assert_eq!(resolved.key_file, PathBuf::from("acme/key.pem"));
        assert_eq!(resolved.acme, Some(acme));
    }

    #[test]
    fn acme_takes_every_key() {
        let tls = tls(
            "[tls]\nmode = \"optional\"\n[tls.acme]\ndomains = [\"a.example.com\", \
             \"b.example.com\"]\nemail = \"ops@example.com\"\n\
             directory = \"https://acme-staging-v02.api.letsencrypt.org/directory\"\n\
             directory_ca_file = \"ca.pem\"\nstorage = \"/var/lib/qgate/acme\"\n\
             challenge = \"http-01\"\nrenew_before = \"20d 12h\"\n",
        );
        let acme = tls.acme.unwrap();
        assert_eq!(acme.domains, ["a.example.com", "b.example.com"]);
        assert_eq!(acme.email.as_deref(), Some("ops@example.com"));
        assert_eq!(acme.directory, Acme::LETS_ENCRYPT_STAGING);
        assert_eq!(acme.directory_ca_file, Some(PathBuf::from("ca.pem")));
        assert_eq!(acme.storage, PathBuf::from("/var/lib/qgate/acme"));
        assert_eq!(acme.challenge, AcmeChallenge::Http01);
        assert_eq!(
            acme.renew_before.get(),
            Duration::from_secs(20 * 86_400 + 12 * 3600)
        );
    }

    #[test]
    fn dns_names() {
        let check = |text: &str, expect: Result<&str, &str>| match (dns_name(text), expect) {
            (Ok(name), Ok(expected)) => assert_eq!(name, expected, "{text}"),
            (Err(error), Err(part)) => assert!(error.contains(part), "{text}: {error}"),
            (got, _) => panic!("{text}: {got:?}"),
        };
        check("q.example.com", Ok("q.example.com"));
        check("Q-1.Example.COM.", Ok("q-1.example.com"));
        check("xn--bcher-kva.example", Ok("xn--bcher-kva.example"));
        check("localhost", Err("not a DNS name"));
        check("a..b", Err("not a DNS name"));
        check("-a.b", Err("not a DNS name"));
        check("a_b.c", Err("not a DNS name"));
        check(&format!("{}.com", "a".repeat(64)), Err("not a DNS name"));
        check("*.example.com", Err("wildcard"));
        check("::1", Err("IP address"));
        check("192.0.2.1", Err("IP address"));
    }

    #[test]
    fn acme_emails() {
        for (email, ok) in [
            ("ops@example.com", true),
            ("mailto:ops@example.com", false),
            ("ops", false),
            ("a@b.c, d@e.f", false),
        ] {
            let text = format!(
                "[tls]\nmode = \"required\"\n[tls.acme]\ndomains = [\"q.example.com\"]\n\
                 storage = \"s\"\nemail = \"{email}\"\n"
            );
            assert_eq!(crate::Config::from_toml_str(&text).is_ok(), ok, "{email}");
        }
    }
}
