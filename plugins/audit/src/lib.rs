//! `audit`: one JSON line per event in qgate's log, with the chain's verdict, the user, the
//! handle, the message head and the time the chain took. Never the password, and the text of a
//! query only when asked.
//!
//! It takes the `outcome` event, which the host sends once the whole chain has decided, so a line
//! says what happened to the request whatever plugin decided it and wherever audit sits in the
//! chain; and `close`. Each line is written through the host's `log` (which tags it with the
//! plugin's name and version) and is one JSON object:
//!
//! | key            | events       | what                                                      |
//! |----------------|--------------|-----------------------------------------------------------|
//! | `event`        | all          | `auth`, `open`, `sync`, `async` or `close`                |
//! | `ts`           | all          | when the line was written, Unix nanoseconds               |
//! | `handle`       | all          | `.z.w`                                                    |
//! | `user`         | all          | `.z.u` (after auth, the name an allow set)                |
//! | `address`      | all          | `.z.a` and the peer's port, `ip:port`                     |
//! | `verdict`      | all but close | `allowed`, `denied`, `passed` or `replied` (see below)   |
//! | `decided_by`   | all but close | the plugin that decided, `null` when every plugin passed |
//! | `reason`       | all          | the deny message, or why the connection closed            |
//! | `latency_ns`   | all but close | how long the chain took to decide                        |
//! | `tls`          | auth, open   | the TLS protocol, when the connection is TLS              |
//! | `type`         | sync, async  | the q type code of the message                            |
//! | `size`         | sync, async  | its size in bytes                                         |
//! | `head`         | sync, async  | the function name of a call, else `null`                  |
//! | `args`         | sync, async  | the argument count of a call                              |
//! | `text`         | sync, async  | the query text, only with `include_text = true`           |
//! | `connected_ns` | close        | how long the connection was open                          |
//!
//! `verdict`: for auth, `allowed` (a plugin allowed it), `denied`, or `passed` (the password
//! file's check stands); for open, `passed` (kept) or `denied` (a plugin closed it); for sync,
//! `replied`, `denied`, or `passed` (nothing answered); for async, `denied` (dropped) or `passed`
//! / `replied` (accepted). The open time is kept in the key-value store, so `connected_ns`
//! survives a hot-swap.
//!
//! A line that qgate's log filter would drop (its `level` below `log.level`) is not built: the
//! plugin asks `host::log_enabled` first, so auditing at `info` under a server that logs at
//! `warn` costs an outcome call and nothing more.
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
    CloseCtx, Config, Decision, EventKind, Events, OutcomeCtx, Plugin, Session, export_plugin,
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

/// The kv key holding the time a connection opened.
fn key(handle: i32) -> String {
    format!("audit/{handle:010}")
}

/// The fields every line has.
fn base(event: &str, session: &Session, ts: i64) -> Map<String, Value> {
    let mut line = Map::new();
    line.insert("event".into(), json!(event));
    line.insert("ts".into(), json!(ts));
    line.insert("handle".into(), json!(session.handle));
    line.insert("user".into(), json!(session.user));
    line.insert(
        "address".into(),
        json!(format!("{}:{}", session.peer_address, session.peer_port)),
    );
    line
}

/// The event's name in a line.
fn event_name(event: EventKind) -> &'static str {
    match event {
        EventKind::Auth => "auth",
        EventKind::Open => "open",
        EventKind::Sync => "sync",
        EventKind::AsyncMessage => "async",
    }
}

/// The decision's name in a line.
fn decision_name(decision: Decision) -> &'static str {
    match decision {
        Decision::Allowed => "allowed",
        Decision::Denied => "denied",
        Decision::Passed => "passed",
        Decision::Replied => "replied",
        Decision::Routed => "routed",
    }
}

impl Audit {
    fn write(&self, line: Map<String, Value>) {
        host::log(self.level, &Value::Object(line).to_string());
    }
}

impl Plugin for Audit {
    const EVENTS: Events = Events::OUTCOME.union(Events::CLOSE);

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

    /// Nothing when the log filter drops every line at this plugin's level: then no line would
    /// ever be written (the filter does not change while qgate runs), and the plugin costs
    /// nothing.
    fn events(&self) -> Events {
        if host::log_enabled(self.level) {
            Self::EVENTS
        } else {
            Events::empty()
        }
    }

    fn on_outcome(&self, ctx: &OutcomeCtx<'_>) {
        let now = host::now();
        let session = ctx.session();
        if ctx.event() == EventKind::Open && ctx.decision() == Decision::Passed {
            kv::set(&key(session.handle), &now.to_le_bytes());
        }
        // A line the log filter drops is not built: at the default `info` under a server logging
        // at `warn`, this is the whole cost of auditing a message.
        if !host::log_enabled(self.level) {
            return;
        }
        let mut line = base(event_name(ctx.event()), session, now);
        line.insert("verdict".into(), json!(decision_name(ctx.decision())));
        line.insert("decided_by".into(), json!(ctx.decided_by()));
        line.insert("reason".into(), json!(ctx.reason()));
        line.insert("latency_ns".into(), json!(ctx.latency_ns()));
        match ctx.event() {
            EventKind::Auth | EventKind::Open => {
                line.insert(
                    "tls".into(),
                    json!(session.tls.as_ref().map(|tls| tls.protocol.clone())),
                );
            }
            EventKind::Sync | EventKind::AsyncMessage => {
                if let Some(summary) = ctx.summary() {
                    line.insert("type".into(), json!(summary.type_code));
                    line.insert("size".into(), json!(summary.size));
                    line.insert("head".into(), json!(summary.head));
                    line.insert("args".into(), json!(summary.arg_count));
                    if self.include_text
                        && let Some(text) = &summary.text
                    {
                        let mut end = text.len().min(MAX_TEXT_BYTES);
                        while !text.is_char_boundary(end) {
                            end -= 1;
                        }
                        line.insert("text".into(), json!(&text[..end]));
                    }
                }
            }
        }
        self.write(line);
    }

    fn on_close(&self, ctx: &CloseCtx) {
        let now = host::now();
        let session = ctx.session();
        if !host::log_enabled(self.level) {
            kv::delete(&key(session.handle));
            return;
        }
        let mut line = base("close", session, now);
        line.insert("reason".into(), json!(ctx.reason()));
        let opened = kv::get(&key(session.handle))
            .and_then(|bytes| Some(i64::from_le_bytes(bytes.get(..8)?.try_into().ok()?)));
        if let Some(opened) = opened {
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
        Outcome, Summary,
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

    fn outcome(
        event: EventKind,
        decision: Decision,
        reason: Option<&str>,
        by: Option<&str>,
        latency_ns: u64,
    ) -> Outcome {
        Outcome {
            event,
            decision,
            reason: reason.map(str::to_owned),
            decided_by: by.map(str::to_owned),
            latency_ns,
        }
    }

    fn summary(head: Option<&str>, text: Option<&str>) -> Summary {
        Summary {
            type_code: if text.is_some() { 10 } else { 0 },
            size: 30,
            head: head.map(str::to_owned),
            head_is_symbol: true,
            arg_count: u32::from(head.is_some()),
            text: text.map(str::to_owned),
        }
    }

    #[test]
    fn a_connection_leaves_one_line_per_event_with_the_chains_verdict() {
        testing::reset();
        let audit = audit("{}");
        let s = session(6, "alice");
        testing::set_now(1_000);
        let auth = outcome(EventKind::Auth, Decision::Passed, None, None, 40);
        audit.on_outcome(&OutcomeCtx::new(s.clone(), None, auth));
        let open = outcome(EventKind::Open, Decision::Passed, None, None, 30);
        audit.on_outcome(&OutcomeCtx::new(s.clone(), None, open));
        testing::set_now(1_500);
        let denied = outcome(
            EventKind::Sync,
            Decision::Denied,
            Some("access: f is not allowed for alice"),
            Some("allowlist"),
            700,
        );
        audit.on_outcome(&OutcomeCtx::new(
            s.clone(),
            Some(summary(Some("f"), None)),
            denied,
        ));
        let query = outcome(EventKind::AsyncMessage, Decision::Passed, None, None, 90);
        audit.on_outcome(&OutcomeCtx::new(
            s.clone(),
            Some(summary(None, Some("select secret from t"))),
            query,
        ));
        testing::set_now(2_000);
        audit.on_close(&CloseCtx::new(s, "client closed"));

        let lines = lines();
        assert_eq!(lines.len(), 5);
        assert_eq!(lines[0]["event"], "auth");
        assert_eq!(lines[0]["verdict"], "passed");
        assert_eq!(lines[1]["event"], "open");
        assert_eq!(lines[2]["event"], "sync");
        assert_eq!(lines[2]["verdict"], "denied");
        assert_eq!(lines[2]["decided_by"], "allowlist");
        assert_eq!(lines[2]["reason"], "access: f is not allowed for alice");
        assert_eq!(lines[2]["head"], "f");
        assert_eq!(lines[2]["latency_ns"], 700);
        assert_eq!(lines[2]["user"], "alice");
        assert_eq!(lines[2]["handle"], 6);
        assert_eq!(lines[3]["event"], "async");
        assert!(lines[3].get("text").is_none(), "text only when asked");
        assert_eq!(lines[4]["event"], "close");
        assert_eq!(lines[4]["connected_ns"], 1_000);
        assert!(kv::keys("audit/").is_empty());
    }

    #[test]
    fn lines_the_log_filter_drops_are_not_built_and_the_store_stays_tidy() {
        testing::reset();
        testing::set_logs_enabled(false);
        let audit = audit("{}");
        let s = session(6, "alice");
        let open = outcome(EventKind::Open, Decision::Passed, None, None, 30);
        audit.on_outcome(&OutcomeCtx::new(s.clone(), None, open));
        assert_eq!(
            kv::keys("audit/").len(),
            1,
            "the open time is kept all the same"
        );
        let query = outcome(EventKind::Sync, Decision::Passed, None, None, 90);
        audit.on_outcome(&OutcomeCtx::new(
            s.clone(),
            Some(summary(Some("f"), None)),
            query,
        ));
        audit.on_close(&CloseCtx::new(s, "client closed"));
        assert!(testing::logs().is_empty());
        assert!(kv::keys("audit/").is_empty());
    }

    #[test]
    fn text_only_when_asked_and_cut() {
        testing::reset();
        let audit = audit(r#"{"include_text": true}"#);
        let long = "x".repeat(3000);
        let replied = outcome(
            EventKind::Sync,
            Decision::Replied,
            None,
            Some("demo-api"),
            5,
        );
        audit.on_outcome(&OutcomeCtx::new(
            session(6, "alice"),
            Some(summary(None, Some(&long))),
            replied,
        ));
        let lines = lines();
        assert_eq!(
            lines[0]["text"].as_str().map(str::len),
            Some(MAX_TEXT_BYTES)
        );
        assert_eq!(lines[0]["verdict"], "replied");
    }

    #[test]
    fn the_level_is_checked() {
        assert!(
            Audit::init(&Config::from_json(r#"{"level": "loud"}"#).unwrap_or_default()).is_err()
        );
    }
}
