//! `audit`: one JSON line per event in qgate's log, with the user, the handle, the message head
//! and timings. Never the password, and the text of a query only when asked.
//!
//! Each line is written through the host's `log` (which tags it with the plugin's name and
//! version) and is one JSON object:
//!
//! | key            | events       | what                                                    |
//! |----------------|--------------|---------------------------------------------------------|
//! | `event`        | all          | `auth`, `open`, `sync`, `async` or `close`              |
//! | `ts`           | all          | when the plugin saw the event, Unix nanoseconds          |
//! | `handle`       | all          | `.z.w`                                                  |
//! | `user`         | all          | `.z.u`                                                  |
//! | `address`      | all          | `.z.a` and the peer's port, `ip:port`                   |
//! | `verdict`      | all          | this plugin's verdict: it never blocks (`pass`, `keep`) |
//! | `password`     | auth         | `true` when one was sent; never its value               |
//! | `tls`          | auth, open   | the TLS protocol, when the connection is TLS            |
//! | `type`         | sync, async  | the q type code of the message                          |
//! | `size`         | sync, async  | its size in bytes                                       |
//! | `head`         | sync, async  | the function name of a call, else `null`                |
//! | `args`         | sync, async  | the argument count of a call                            |
//! | `text`         | sync, async  | the query text, only with `include_text = true`         |
//! | `latency_ns`   | sync, async  | time since the connection's previous event (see below)  |
//! | `connected_ns` | close        | how long the connection was open                        |
//! | `reason`       | close        | why it closed                                           |
//!
//! `latency_ns` is the time between this message and the previous one on the same connection
//! (for a client that waits for each answer, its round trip including the server's work); the
//! first message's is the time since the connection opened. The open time and the previous
//! message's time are kept in the key-value store, so they survive a hot-swap.
//!
//! Audit sees the events that reach it: list it first in `config.toml` to see every event, since
//! a plugin before it that denies ends the chain.
//!
//! # Config
//!
//! ```toml
//! # The level of the audit lines; default "info".
//! level = "info"
//! # Include the text of free-text queries (up to 1 KiB); default false, since queries can carry
//! # data that does not belong in a log.
//! include_text = false
//! ```

use qgate_plugin_sdk::{
    AuthCtx, AuthVerdict, CloseCtx, Config, MessageCtx, OpenCtx, Plugin, Session, Verdict,
    export_plugin,
    host::{self, Level, kv},
};
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// The most query text a line carries, so that one huge query cannot flood the log.
const MAX_TEXT_BYTES: usize = 1024;

/// The plugin's config, as `config.toml` spells it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// `level = "info"`: `trace`, `debug`, `info`, `warn` or `error`.
    #[serde(default)]
    pub level: Option<String>,
    /// `include_text = false`.
    #[serde(default)]
    pub include_text: bool,
}

/// The plugin.
pub struct Audit {
    level: Level,
    include_text: bool,
}

/// The kv key holding the time of a connection's open and of its last message.
fn key(handle: i32) -> String {
    format!("audit/{handle:010}")
}

/// The stored times of a connection: (opened, last message).
fn times(handle: i32) -> Option<(i64, i64)> {
    let bytes = kv::get(&key(handle))?;
    let opened = i64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    let last = i64::from_le_bytes(bytes.get(8..16)?.try_into().ok()?);
    Some((opened, last))
}

fn set_times(handle: i32, opened: i64, last: i64) {
    let mut bytes = opened.to_le_bytes().to_vec();
    bytes.extend_from_slice(&last.to_le_bytes());
    kv::set(&key(handle), &bytes);
}

/// The fields every line has.
fn base(event: &str, session: &Session, ts: i64, verdict: &str) -> Map<String, Value> {
    let mut line = Map::new();
    line.insert("event".into(), json!(event));
    line.insert("ts".into(), json!(ts));
    line.insert("handle".into(), json!(session.handle));
    line.insert("user".into(), json!(session.user));
    line.insert(
        "address".into(),
        json!(format!("{}:{}", session.peer_address, session.peer_port)),
    );
    line.insert("verdict".into(), json!(verdict));
    line
}

impl Audit {
    fn write(&self, line: Map<String, Value>) {
        host::log(self.level, &Value::Object(line).to_string());
    }

    fn message(&self, event: &str, ctx: &MessageCtx<'_>) {
        let now = host::now();
        let session = ctx.session();
        let summary = ctx.summary();
        let mut line = base(event, session, now, "pass");
        line.insert("type".into(), json!(summary.type_code));
        line.insert("size".into(), json!(summary.size));
        line.insert("head".into(), json!(summary.head));
        line.insert("args".into(), json!(summary.arg_count));
        if self.include_text
            && let Some(text) = ctx.text()
        {
            let mut end = text.len().min(MAX_TEXT_BYTES);
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            line.insert("text".into(), json!(&text[..end]));
        }
        let (opened, last) = times(session.handle).unwrap_or((now, now));
        line.insert("latency_ns".into(), json!(now.saturating_sub(last)));
        set_times(session.handle, opened, now);
        self.write(line);
    }
}

impl Plugin for Audit {
    fn init(config: &Config) -> Result<Self, String> {
        let settings: Settings = config.parse()?;
        let level = match settings.level.as_deref().unwrap_or("info") {
            "trace" => Level::Trace,
            "debug" => Level::Debug,
            "info" => Level::Info,
            "warn" => Level::Warn,
            "error" => Level::Error,
            other => return Err(format!("config: level `{other}` is not a log level")),
        };
        Ok(Self {
            level,
            include_text: settings.include_text,
        })
    }

    fn on_auth(&self, ctx: &AuthCtx) -> AuthVerdict {
        let session = ctx.session();
        let mut line = base("auth", session, host::now(), "pass");
        line.insert("password".into(), json!(ctx.password().is_some()));
        line.insert(
            "tls".into(),
            json!(session.tls.as_ref().map(|tls| tls.protocol.clone())),
        );
        self.write(line);
        AuthVerdict::Pass
    }

    fn on_open(&self, ctx: &OpenCtx) -> Result<(), String> {
        let now = host::now();
        let session = ctx.session();
        set_times(session.handle, now, now);
        let mut line = base("open", session, now, "keep");
        line.insert(
            "tls".into(),
            json!(session.tls.as_ref().map(|tls| tls.protocol.clone())),
        );
        self.write(line);
        Ok(())
    }

    fn on_sync(&self, ctx: &MessageCtx<'_>) -> Verdict {
        self.message("sync", ctx);
        Verdict::Pass
    }

    fn on_async(&self, ctx: &MessageCtx<'_>) -> Verdict {
        self.message("async", ctx);
        Verdict::Pass
    }

    fn on_close(&self, ctx: &CloseCtx) {
        let now = host::now();
        let session = ctx.session();
        let mut line = base("close", session, now, "pass");
        line.insert("reason".into(), json!(ctx.reason()));
        if let Some((opened, _)) = times(session.handle) {
            line.insert("connected_ns".into(), json!(now.saturating_sub(opened)));
        }
        kv::delete(&key(session.handle));
        self.write(line);
    }
}

export_plugin!(Audit);

#[cfg(test)]
mod tests {
    use qgate_plugin_sdk::{
        K,
        testing::{self, session},
    };

    use super::*;

    fn lines() -> Vec<Value> {
        testing::logs()
            .into_iter()
            .map(|(level, line)| {
                assert_eq!(level, Level::Info);
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line}: {e}"))
            })
            .collect()
    }

    fn audit(json: &str) -> Audit {
        Audit::init(&Config::from_json(json).unwrap_or_else(|e| panic!("{e}")))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_connection_leaves_one_line_per_event_and_never_the_password() {
        testing::reset();
        let audit = audit("{}");
        let s = session(6, "alice");
        testing::set_now(1_000);
        assert_eq!(
            audit.on_auth(&AuthCtx::new(s.clone(), Some(b"hunter2".to_vec()))),
            AuthVerdict::Pass
        );
        let _ = audit.on_open(&OpenCtx::new(s.clone()));
        testing::set_now(1_500);
        let call = K::list(vec![K::symbol("f"), K::long(1)]);
        assert_eq!(
            audit.on_sync(&MessageCtx::from_value(s.clone(), &call)),
            Verdict::Pass
        );
        testing::set_now(1_700);
        let query = K::string("select secret from t");
        let _ = audit.on_async(&MessageCtx::from_value(s.clone(), &query));
        testing::set_now(2_000);
        audit.on_close(&CloseCtx::new(s, "client closed"));

        let logs = testing::logs();
        assert!(logs.iter().all(|(_, line)| !line.contains("hunter2")));
        assert!(logs.iter().all(|(_, line)| !line.contains("secret")));
        assert_eq!(logs.len(), 5);
    }

    #[test]
    fn lines_carry_head_latency_and_duration() {
        testing::reset();
        let audit = audit(r#"{"include_text": true}"#);
        let s = session(6, "alice");
        testing::set_now(1_000);
        let _ = audit.on_open(&OpenCtx::new(s.clone()));
        testing::set_now(1_500);
        let call = K::list(vec![K::symbol("f"), K::long(1)]);
        let _ = audit.on_sync(&MessageCtx::from_value(s.clone(), &call));
        testing::set_now(1_700);
        let _ = audit.on_sync(&MessageCtx::from_value(s.clone(), &K::string("1+1")));
        testing::set_now(2_000);
        audit.on_close(&CloseCtx::new(s, "client closed"));
        let lines = lines();
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0]["event"], "open");
        assert_eq!(lines[1]["head"], "f");
        assert_eq!(lines[1]["latency_ns"], 500);
        assert_eq!(lines[1]["user"], "alice");
        assert_eq!(lines[1]["handle"], 6);
        assert_eq!(lines[2]["text"], "1+1");
        assert_eq!(lines[2]["latency_ns"], 200);
        assert_eq!(lines[3]["event"], "close");
        assert_eq!(lines[3]["connected_ns"], 1_000);
        assert!(kv::keys("audit/").is_empty());
    }

    #[test]
    fn the_level_is_checked() {
        assert!(
            Audit::init(&Config::from_json(r#"{"level": "loud"}"#).unwrap_or_default()).is_err()
        );
    }
}
