//! `token-auth`: a `.z.pw` that accepts a signed bearer token as the password.
//!
//! A client connects with any user name and a JSON Web Token signed with HMAC-SHA256 (`HS256`)
//! as its password (`h:hopen `:host:5000:alice:eyJhbGciOi...`). The plugin checks, in order:
//!
//! 1. the token has three base64url parts and its header says `"alg": "HS256"` (no other
//!    algorithm, and never `none`);
//! 2. the signature, with the configured secret, compared in constant time;
//! 3. the claims: `exp` is required and must be in the future, `nbf` (when present) in the past,
//!    both with `leeway_seconds` of slack; `iss` and `aud` must match when configured (`aud` may
//!    be a string or a list);
//! 4. the subject claim (`sub`, or `user_claim`) is a non-empty string.
//!
//! A valid token allows the connection, and later events see the token's subject as the user
//! (`.z.u`), whatever name the handshake carried. An invalid token denies it (the client sees
//! `'access`), with the reason in the log; the token itself is never logged.
//! A password that is not a token at all (or no password) is denied, unless
//! `other_passwords = "pass"` leaves it to the next plugin and the password file.
//!
//! # Config
//!
//! ```toml
//! # The HMAC key, at least 32 bytes (RFC 7518 §3.2). Required.
//! secret = "a-long-random-secret-of-at-least-32-bytes"
//! # Required values of the `iss` and `aud` claims; unchecked when absent.
//! issuer = "https://auth.example.com"
//! audience = "qgate"
//! # Clock slack for `exp` and `nbf`; default 30.
//! leeway_seconds = 30
//! # The claim that names the user; default "sub".
//! user_claim = "sub"
//! # What to do with a password that is not a token: "deny" (default) or "pass".
//! other_passwords = "deny"
//! ```

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use qgate_plugin_sdk::{AuthCtx, AuthVerdict, Config, Events, Plugin, export_plugin, host};
use serde::Deserialize;
use serde_json::Value;
use sha2::Sha256;

/// The shortest secret accepted: HS256 needs a key at least as long as its 256-bit output
/// (RFC 7518 §3.2).
const MIN_SECRET_BYTES: usize = 32;

/// The longest password read as a token; longer ones are refused before any decoding, so that a
/// client cannot make the plugin decode megabytes.
const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// The plugin's config, as `config.toml` spells it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// `secret = "..."`.
    pub secret: String,
    /// `issuer = "..."`.
    #[serde(default)]
    pub issuer: Option<String>,
    /// `audience = "..."`.
    #[serde(default)]
    pub audience: Option<String>,
    /// `leeway_seconds = 30`.
    #[serde(default = "default_leeway")]
    pub leeway_seconds: i64,
    /// `user_claim = "sub"`.
    #[serde(default = "default_user_claim")]
    pub user_claim: String,
    /// `other_passwords = "deny" | "pass"`.
    #[serde(default)]
    pub other_passwords: OtherPasswords,
}

fn default_leeway() -> i64 {
    30
}

fn default_user_claim() -> String {
    "sub".to_owned()
}

/// What happens to a password that is not a token.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OtherPasswords {
    /// Refuse the connection.
    #[default]
    Deny,
    /// Leave it to the next plugin and the password file.
    Pass,
}

/// Why a token was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// Not shaped like a JWT at all.
    NotAToken,
    /// A JWT that fails a check; the text says which.
    Invalid(String),
}

/// The plugin.
pub struct TokenAuth {
    settings: Settings,
}

impl TokenAuth {
    /// Checks `token` at `now` (Unix seconds) and returns the user it names.
    ///
    /// # Errors
    ///
    /// [`Rejection`] saying why the token is not accepted.
    pub fn verify(&self, token: &[u8], now: i64) -> Result<String, Rejection> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(Rejection::NotAToken);
        }
        let token = std::str::from_utf8(token).map_err(|_| Rejection::NotAToken)?;
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Rejection::NotAToken);
        };
        let invalid = |why: &str| Rejection::Invalid(why.to_owned());
        let decode = |part: &str| {
            URL_SAFE_NO_PAD
                .decode(part)
                .map_err(|_| Rejection::NotAToken)
        };
        let header: Value =
            serde_json::from_slice(&decode(header)?).map_err(|_| Rejection::NotAToken)?;
        if header.get("alg").and_then(Value::as_str) != Some("HS256") {
            return Err(invalid("algorithm is not HS256"));
        }
        let signature = decode(signature)?;
        let mut mac = Hmac::<Sha256>::new_from_slice(self.settings.secret.as_bytes())
            .map_err(|_| invalid("bad key"))?;
        mac.update(&token.as_bytes()[..header_payload_len(token)]);
        mac.verify_slice(&signature)
            .map_err(|_| invalid("bad signature"))?;
        let claims: Value = serde_json::from_slice(&decode(payload)?)
            .map_err(|_| invalid("claims are not JSON"))?;
        let leeway = self.settings.leeway_seconds;
        let exp = claims
            .get("exp")
            .and_then(seconds)
            .ok_or_else(|| invalid("no exp claim"))?;
        if now > exp.saturating_add(leeway) {
            return Err(invalid("expired"));
        }
        if let Some(nbf) = claims.get("nbf") {
            let nbf = seconds(nbf).ok_or_else(|| invalid("nbf is not a number"))?;
            if now < nbf.saturating_sub(leeway) {
                return Err(invalid("not valid yet"));
            }
        }
        if let Some(issuer) = &self.settings.issuer
            && claims.get("iss").and_then(Value::as_str) != Some(issuer)
        {
            return Err(invalid("wrong issuer"));
        }
        if let Some(audience) = &self.settings.audience {
            let matches = match claims.get("aud") {
                Some(Value::String(aud)) => aud == audience,
                Some(Value::Array(auds)) => auds.iter().any(|a| a.as_str() == Some(audience)),
                _ => false,
            };
            if !matches {
                return Err(invalid("wrong audience"));
            }
        }
        match claims
            .get(&self.settings.user_claim)
            .and_then(Value::as_str)
        {
            Some(user) if !user.is_empty() && !user.contains('\0') => Ok(user.to_owned()),
            _ => Err(invalid("no user claim")),
        }
    }
}

/// A NumericDate claim (RFC 7519 §2): Unix seconds, an integer or, from some issuers, a float
/// (truncated).
fn seconds(value: &Value) -> Option<i64> {
    value.as_i64().or_else(|| {
        let x = value.as_f64()?;
        #[expect(
            clippy::cast_possible_truncation,
            reason = "checked to be in range first"
        )]
        (x.is_finite() && x.abs() < 1e15).then_some(x as i64)
    })
}

/// The length of `header.payload`, the signed part of a token.
fn header_payload_len(token: &str) -> usize {
    token.rfind('.').unwrap_or(0)
}

impl Plugin for TokenAuth {
    const EVENTS: Events = Events::AUTH;

    fn init(config: &Config) -> Result<Self, String> {
        let settings: Settings = config.parse()?;
        if settings.secret.len() < MIN_SECRET_BYTES {
            return Err(format!(
                "config: secret must be at least {MIN_SECRET_BYTES} bytes (RFC 7518 3.2)"
            ));
        }
        if settings.leeway_seconds < 0 {
            return Err("config: leeway_seconds must not be negative".to_owned());
        }
        Ok(Self { settings })
    }

    fn on_auth(&self, ctx: &AuthCtx) -> AuthVerdict {
        let other = match self.settings.other_passwords {
            OtherPasswords::Deny => AuthVerdict::Deny,
            OtherPasswords::Pass => AuthVerdict::Pass,
        };
        let Some(password) = ctx.password() else {
            return other;
        };
        let now = host::now() / 1_000_000_000;
        match self.verify(password, now) {
            Ok(user) => AuthVerdict::allow_as(user),
            Err(Rejection::NotAToken) => other,
            Err(Rejection::Invalid(why)) => {
                host::warn(&format!(
                    "token-auth: refused a token for handle {} (user {:?}): {why}",
                    ctx.session().handle,
                    ctx.user()
                ));
                AuthVerdict::Deny
            }
        }
    }
}

export_plugin!(TokenAuth);

#[cfg(test)]
mod tests {
    use qgate_plugin_sdk::testing::{self, session};

    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn sign(header: &str, claims: &str, secret: &str) -> String {
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        );
        let mut mac =
            Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        mac.update(signed.as_bytes());
        format!(
            "{signed}.{}",
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        )
    }

    fn token(claims: &str) -> String {
        sign(r#"{"alg":"HS256","typ":"JWT"}"#, claims, SECRET)
    }

    fn plugin(extra: &str) -> TokenAuth {
        let json = format!(r#"{{"secret": "{SECRET}"{extra}}}"#);
        TokenAuth::init(&Config::from_json(&json).unwrap_or_else(|e| panic!("{e}")))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn check(plugin: &TokenAuth, token: &str, expect: Result<&str, &str>) {
        let actual = plugin.verify(token.as_bytes(), 1_000);
        let expect = match expect {
            Ok(user) => Ok(user.to_owned()),
            Err("not a token") => Err(Rejection::NotAToken),
            Err(why) => Err(Rejection::Invalid(why.to_owned())),
        };
        assert_eq!(actual, expect, "{token}");
    }

    #[test]
    fn valid_tokens_name_the_user() {
        let p = plugin("");
        check(&p, &token(r#"{"sub":"alice","exp":2000}"#), Ok("alice"));
        // Within the leeway.
        check(&p, &token(r#"{"sub":"alice","exp":980}"#), Ok("alice"));
        check(&p, &token(r#"{"sub":"alice","exp":1500.5}"#), Ok("alice"));
        let p = plugin(r#", "issuer": "me", "audience": "qgate", "user_claim": "name""#);
        check(
            &p,
            &token(r#"{"name":"bob","iss":"me","aud":["x","qgate"],"exp":2000,"nbf":990}"#),
            Ok("bob"),
        );
    }

    #[test]
    fn bad_tokens_are_refused_with_a_reason() {
        let p = plugin(r#", "issuer": "me", "audience": "qgate""#);
        let good = r#""iss":"me","aud":"qgate""#;
        check(
            &p,
            &token(&format!(r#"{{"sub":"a","exp":900,{good}}}"#)),
            Err("expired"),
        );
        check(
            &p,
            &token(&format!(r#"{{"sub":"a",{good}}}"#)),
            Err("no exp claim"),
        );
        check(
            &p,
            &token(&format!(r#"{{"sub":"a","exp":2000,"nbf":1100,{good}}}"#)),
            Err("not valid yet"),
        );
        check(
            &p,
            &token(r#"{"sub":"a","exp":2000,"iss":"you","aud":"qgate"}"#),
            Err("wrong issuer"),
        );
        check(
            &p,
            &token(r#"{"sub":"a","exp":2000,"iss":"me","aud":"other"}"#),
            Err("wrong audience"),
        );
        check(
            &p,
            &token(&format!(r#"{{"exp":2000,{good}}}"#)),
            Err("no user claim"),
        );
        let claims = format!(r#"{{"sub":"a","exp":2000,{good}}}"#);
        check(
            &p,
            &sign(
                r#"{"alg":"HS256"}"#,
                &claims,
                "another-secret-another-secret-xx",
            ),
            Err("bad signature"),
        );
        check(
            &p,
            &sign(r#"{"alg":"none"}"#, &claims, SECRET),
            Err("algorithm is not HS256"),
        );
        check(
            &p,
            &sign(r#"{"alg":"HS512"}"#, &claims, SECRET),
            Err("algorithm is not HS256"),
        );
        // A token whose claims were edited after signing.
        let t = token(&claims);
        let mut parts: Vec<&str> = t.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(claims.replace("\"a\"", "\"admin\""));
        parts[1] = &forged;
        check(&p, &parts.join("."), Err("bad signature"));
        check(&p, "hunter2", Err("not a token"));
        check(&p, "a.b.c.d", Err("not a token"));
    }

    #[test]
    fn on_auth_maps_the_subject_and_never_logs_the_token() {
        testing::reset();
        testing::set_now(1_000 * 1_000_000_000);
        let p = plugin("");
        let good = token(r#"{"sub":"alice","exp":2000}"#);
        let ctx = AuthCtx::new(session(3, "whoever"), Some(good.into_bytes()));
        assert_eq!(p.on_auth(&ctx), AuthVerdict::allow_as("alice"));
        let expired = token(r#"{"sub":"alice","exp":10}"#);
        let ctx = AuthCtx::new(session(3, "whoever"), Some(expired.clone().into_bytes()));
        assert_eq!(p.on_auth(&ctx), AuthVerdict::Deny);
        assert!(
            testing::logs()
                .iter()
                .all(|(_, line)| !line.contains(&expired))
        );
        let ctx = AuthCtx::new(session(3, "u"), Some(b"password".to_vec()));
        assert_eq!(p.on_auth(&ctx), AuthVerdict::Deny);
        let p = plugin(r#", "other_passwords": "pass""#);
        assert_eq!(p.on_auth(&ctx), AuthVerdict::Pass);
        assert_eq!(
            p.on_auth(&AuthCtx::new(session(3, "u"), None)),
            AuthVerdict::Pass
        );
    }

    #[test]
    fn short_secrets_are_refused() {
        let config = Config::from_json(r#"{"secret": "short"}"#).unwrap_or_default();
        assert!(TokenAuth::init(&config).is_err());
    }
}
