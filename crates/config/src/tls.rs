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

use std::path::PathBuf;

use serde::Deserialize;

use crate::error::ConfigError;

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
    /// Fills what the table leaves out from kdb+'s environment variables, read through `env`
    /// (`|name| std::env::var(name).ok()` in the binary), and checks that the result is whole.
    /// `Ok(None)` when TLS is off.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Environment`] when `SSL_VERIFY_CLIENT` is not `NO`, `IFPRESENT` or `YES`;
    /// [`ConfigError::Invalid`] naming the key when TLS is on without a certificate or key, when
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
        let cert_file = path(&self.cert_file, "SSL_CERT_FILE")
            .ok_or_else(|| missing("cert_file", "a certificate chain", "SSL_CERT_FILE"))?;
        let key_file = path(&self.key_file, "SSL_KEY_FILE")
            .ok_or_else(|| missing("key_file", "a private key", "SSL_KEY_FILE"))?;
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
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

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
}
