//! `firewall`: a learn-then-enforce query firewall, in the manner of ProxySQL's, for q.
//!
//! Each message has a **shape**: for a free-text query, its parse tree with literal values
//! replaced by their types (`select from trade where sym=<symbol>, size><long>` for every
//! symbol and size), as `qgate parse` and the SDK's `facts::shape` give it; for a call list,
//! its function and argument count (`` (`getTrades;<arg>) ``); for any other value, its type.
//!
//! - `mode = "learn"`: every message passes, and its shape is recorded for its user in kv, as a
//!   digest (64-bit FNV-1a of the shape, hex) and the readable shape.
//! - `mode = "enforce"`: a message passes only when its shape was learned for its user;
//!   otherwise it is denied with a q error naming the shape.
//! - `mode = "off"`: every message passes and nothing is recorded.
//!
//! A shape says nothing about the text inside a string, so a query with a dangerous flag
//! (`system`, `eval`, `ipc`, `file`, `exit`, `assign_z`) or one that does not parse is never
//! learned, and is denied in enforce mode whatever was learned.
//! Put the `allowlist` before the firewall to decide tables and functions.
//!
//! Operators list and prune what was learned with two commands, answered for the users in
//! `admins` only (in every mode, and never learned):
//!
//! - the sync query `.firewall.shapes` (free text or a call without arguments) answers a table
//!   with the columns `user` (symbol), `digest` (symbol) and `shape` (string);
//! - the call `` (`.firewall.forget;`user;`digest) `` (symbols or strings; PyKX:
//!   `conn(".firewall.forget", "alice", "3f2a...")`) forgets one shape and answers 1b, or 0b
//!   when there was none.
//!
//! An HTTP request on the q port is shaped the same way: its q text (`GET /?expr`, a POST's body)
//! has the shape of the same free-text query, so a query learned over q passes over HTTP too,
//! and a request without q text has the shape `<http METHOD PATH>`; a refused one gets `403`.
//!
//! The shapes live in the plugin's kv store, so they survive a hot-swap; with `kv_file` set on
//! the plugin's `[[plugins]]` entry they survive a restart too.
//!
//! # Config
//!
//! ```toml
//! mode = "learn"      # "learn", "enforce" or "off"; required
//! admins = ["admin"]  # who may list and forget shapes; default none
//! ```

use qgate_plugin_sdk::{
    Atom, Config, Events, Facts, FactsExt as _, Flags, HttpCtx, HttpVerdict, K, MessageCtx,
    Plugin, Verdict, export_plugin, facts, host, http, reply,
};
use serde::Deserialize;

/// The most shapes learned for one user; later new shapes are logged and not learned.
///
/// A user who sends only generated text (a new literal layout each time, a new column list)
/// would otherwise fill the plugin's kv store, which is shared by all users; 10,000 shapes is
/// far more than the queries of an application or a dashboard, and at a few hundred bytes a
/// shape stays within a few MiB a user.
pub const MAX_SHAPES_PER_USER: usize = 10_000;

/// The longest shape recorded, in bytes; a longer one is not learned (so it is denied in
/// enforce mode).
///
/// kv values are capped by the host at 1 MiB; 16 KiB keeps the admin table readable and covers
/// any query a person or a dashboard writes.
pub const MAX_SHAPE_BYTES: usize = 16 * 1024;

/// The flags a shape cannot vouch for: the text that `value` or `system` runs is a `<string>`
/// in the shape.
fn dangerous() -> Flags {
    Flags::SYSTEM
        | Flags::EVAL
        | Flags::IPC
        | Flags::FILE
        | Flags::EXIT
        | Flags::ASSIGN_Z
        | Flags::UNPARSED
}

/// The admin query that lists the shapes.
const SHAPES: &str = ".firewall.shapes";
/// The admin call that forgets one shape.
const FORGET: &str = ".firewall.forget";

/// What the firewall does.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Record every shape, pass everything.
    Learn,
    /// Pass only learned shapes.
    Enforce,
    /// Pass everything, record nothing.
    Off,
}

/// The plugin's config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Firewall {
    /// The mode.
    pub mode: Mode,
    /// The users who may list and forget shapes.
    #[serde(default)]
    pub admins: Vec<String>,
}

impl Plugin for Firewall {
    const EVENTS: Events = Events::SYNC
        .union(Events::ASYNC_MESSAGE)
        .union(Events::HTTP);

    fn init(config: &Config) -> Result<Self, String> {
        config.parse()
    }

    fn on_sync(&self, ctx: &MessageCtx<'_>) -> Verdict {
        if self.admins.iter().any(|admin| admin == ctx.user()) {
            if ctx.names(SHAPES) {
                return list();
            }
            if ctx.head() == Some(FORGET) {
                return forget(ctx);
            }
        }
        self.decide(ctx)
    }

    fn on_async(&self, ctx: &MessageCtx<'_>) -> Verdict {
        self.decide(ctx)
    }

    fn on_http(&self, ctx: &HttpCtx<'_>) -> HttpVerdict {
        self.decide_http(ctx)
    }
}

impl Firewall {
    /// The verdict for a message in this mode.
    fn decide(&self, ctx: &MessageCtx<'_>) -> Verdict {
        if self.mode == Mode::Off {
            return Verdict::Pass;
        }
        match self.check(ctx.user(), &shape(ctx), ctx.facts()) {
            Ok(()) => Verdict::Pass,
            Err(message) => Verdict::deny(message),
        }
    }

    /// The verdict for an HTTP request: its q text (`GET /?expr`, a POST's body) has the shape
    /// the same free-text query has (a shape learned over q passes over HTTP too); a request
    /// without q text has the shape `<http METHOD PATH>`.
    pub fn decide_http(&self, ctx: &HttpCtx<'_>) -> HttpVerdict {
        if self.mode == Mode::Off {
            return HttpVerdict::Pass;
        }
        let shape = match ctx.text() {
            Some(text) => facts::shape(text.as_bytes()).unwrap_or_else(|| "<unparsed>".to_owned()),
            None => format!("<http {} {}>", ctx.method(), ctx.path()),
        };
        match self.check(ctx.user(), &shape, ctx.facts()) {
            Ok(()) => HttpVerdict::Pass,
            Err(message) => http::deny(403, message),
        }
    }

    /// Learns `shape` for `user`, or checks that it was learned; `Err` is the deny message.
    fn check(&self, user: &str, shape: &str, facts: &Facts) -> Result<(), String> {
        let key = key(user, &digest(shape));
        let learnable = !facts.has_any(dangerous()) && shape.len() <= MAX_SHAPE_BYTES;
        match self.mode {
            Mode::Off => Ok(()),
            Mode::Learn => {
                if learnable {
                    learn(user, &key, shape);
                }
                Ok(())
            }
            Mode::Enforce
                if learnable && host::kv::get(&key).as_deref() == Some(shape.as_bytes()) =>
            {
                Ok(())
            }
            Mode::Enforce => Err(format!(
                "firewall: query shape not allowed for {user}: {}",
                printable(shape)
            )),
        }
    }
}

/// The shape of a message; see the module documentation.
fn shape(ctx: &MessageCtx<'_>) -> String {
    if let Some(text) = ctx.text() {
        return facts::shape(text.as_bytes()).unwrap_or_else(|| "<unparsed>".to_owned());
    }
    if let Some(head) = ctx.head() {
        let args = vec!["<arg>"; ctx.arg_count()];
        let mut items = vec![format!("`{head}")];
        items.extend(args.into_iter().map(str::to_owned));
        return format!("({})", items.join(";"));
    }
    format!("<type {}>", ctx.type_code())
}

/// Records `shape` for `user`, unless the user already has [`MAX_SHAPES_PER_USER`].
fn learn(user: &str, key: &str, shape: &str) {
    if host::kv::get(key).is_some() {
        return;
    }
    let count_key = format!("count/{}", escape(user));
    let count = host::kv::get(&count_key)
        .and_then(|bytes| <[u8; 8]>::try_from(bytes.as_slice()).ok())
        .map_or(0, u64::from_le_bytes);
    if count >= MAX_SHAPES_PER_USER as u64 {
        host::warn(&format!(
            "firewall: {} already has {MAX_SHAPES_PER_USER} shapes; a new one is not learned",
            printable(user)
        ));
        return;
    }
    host::kv::set(key, shape.as_bytes());
    host::kv::set(&count_key, &(count + 1).to_le_bytes());
}

/// The answer to `.firewall.shapes`: every learned shape.
fn list() -> Verdict {
    let (mut users, mut digests, mut shapes) = (Vec::new(), Vec::new(), Vec::new());
    for key in host::kv::keys("shape/") {
        let Some((user, digest)) = key["shape/".len()..].rsplit_once('/') else {
            continue;
        };
        users.push(unescape(user));
        digests.push(digest.to_owned());
        shapes.push(host::kv::get(&key).unwrap_or_default());
    }
    let table = reply::TableBuilder::new()
        .column("user", reply::symbols(users))
        .column("digest", reply::symbols(digests))
        .column("shape", reply::strings(shapes))
        .build();
    match table {
        Ok(table) => Verdict::reply(&table),
        Err(why) => Verdict::deny(format!("firewall: {why}")),
    }
}

/// The answer to `.firewall.forget[user;digest]`.
fn forget(ctx: &MessageCtx<'_>) -> Verdict {
    let text = |index| {
        ctx.arg(index).and_then(|arg: K| {
            arg.as_text()
                .map(|text| String::from_utf8_lossy(text).into_owned())
        })
    };
    let (Some(user), Some(digest)) = (text(0), text(1)) else {
        return Verdict::deny(format!(
            "firewall: {FORGET} takes a user and a digest, as symbols or strings"
        ));
    };
    let removed = host::kv::delete(&key(&user, &digest));
    if removed {
        let count_key = format!("count/{}", escape(&user));
        let count = host::kv::get(&count_key)
            .and_then(|bytes| <[u8; 8]>::try_from(bytes.as_slice()).ok())
            .map_or(0, u64::from_le_bytes);
        host::kv::set(&count_key, &count.saturating_sub(1).to_le_bytes());
    }
    Verdict::reply(&K::Atom(Atom::Boolean(removed)))
}

/// The kv key of a user's shape.
fn key(user: &str, digest: &str) -> String {
    format!("shape/{}/{digest}", escape(user))
}

/// 64-bit FNV-1a of the shape, as 16 hex digits: a short, stable name for the admin table. The
/// firewall compares the whole shape, never only the digest, so a collision cannot let a query
/// through.
fn digest(shape: &str) -> String {
    let hash = shape.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{hash:016x}")
}

/// A user name in a key, with `%` and `/` escaped so that one user's keys never prefix another's.
fn escape(user: &str) -> String {
    user.replace('%', "%25").replace('/', "%2F")
}

fn unescape(user: &str) -> String {
    user.replace("%2F", "/").replace("%25", "%")
}

/// Text from a client, for an error or a log line: control characters escaped, at most 200
/// characters.
fn printable(text: &str) -> String {
    let mut out: String = text
        .chars()
        .take(200)
        .flat_map(char::escape_debug)
        .collect();
    if text.chars().count() > 200 {
        out.push_str("...");
    }
    out
}

export_plugin!(Firewall);

#[cfg(test)]
mod tests {
    use qgate_plugin_sdk::testing::{self, session};

    use super::*;

    fn firewall(mode: Mode) -> Firewall {
        Firewall {
            mode,
            admins: vec!["admin".to_owned()],
        }
    }

    fn send(firewall: &Firewall, user: &str, value: &K) -> Verdict {
        firewall.on_sync(&MessageCtx::from_value(session(1, user), value))
    }

    fn query(firewall: &Firewall, user: &str, text: &str) -> Verdict {
        send(firewall, user, &K::string(text))
    }

    #[test]
    fn learned_shapes_pass_in_enforce_mode_and_others_are_denied() {
        testing::reset();
        let learn = firewall(Mode::Learn);
        assert_eq!(
            query(&learn, "alice", "select from trade where sym=`AAPL"),
            Verdict::Pass
        );
        let call = K::list(vec![K::symbol("getTrades"), K::symbol("AAPL")]);
        assert_eq!(send(&learn, "alice", &call), Verdict::Pass);

        let enforce = firewall(Mode::Enforce);
        // The same shape with other values.
        assert_eq!(
            query(&enforce, "alice", "select from trade where sym=`MSFT"),
            Verdict::Pass
        );
        let other_call = K::list(vec![K::symbol("getTrades"), K::symbol("IBM")]);
        assert_eq!(send(&enforce, "alice", &other_call), Verdict::Pass);
        // Another shape, or another user.
        assert_eq!(
            query(&enforce, "alice", "select from quote"),
            Verdict::deny("firewall: query shape not allowed for alice: (?;`quote;();0b;())")
        );
        assert!(matches!(
            query(&enforce, "bob", "select from trade where sym=`AAPL"),
            Verdict::Deny(_)
        ));
        // Off passes everything.
        assert_eq!(
            query(&firewall(Mode::Off), "bob", "select from quote"),
            Verdict::Pass
        );
    }

    #[test]
    fn http_text_has_the_shape_of_the_same_query_and_pages_a_shape_of_their_own() {
        testing::reset();
        let get = |firewall: &Firewall, target: &str| {
            match firewall.on_http(&HttpCtx::new(session(1, "alice"), "GET", target, &[], b"")) {
                HttpVerdict::Pass => "pass".to_owned(),
                HttpVerdict::Deny(deny) => format!("{} {}", deny.status, deny.text),
                other => format!("{other:?}"),
            }
        };
        let learn = firewall(Mode::Learn);
        // Learned over q, and a page learned over HTTP.
        assert_eq!(
            query(&learn, "alice", "select from trade where sym=`AAPL"),
            Verdict::Pass
        );
        assert_eq!(get(&learn, "/index.html"), "pass");
        let enforce = firewall(Mode::Enforce);
        assert_eq!(
            get(&enforce, "/?select%20from%20trade%20where%20sym=`MSFT"),
            "pass"
        );
        assert_eq!(get(&enforce, "/index.html"), "pass");
        assert_eq!(
            get(&enforce, "/?select%20from%20quote"),
            "403 firewall: query shape not allowed for alice: (?;`quote;();0b;())"
        );
        assert_eq!(
            get(&enforce, "/secret.html"),
            "403 firewall: query shape not allowed for alice: <http GET /secret.html>"
        );
    }

    #[test]
    fn dangerous_shapes_are_never_learned() {
        testing::reset();
        let learn = firewall(Mode::Learn);
        for text in ["value \"exit 0\"", "system \"ls\"", "k)1+1", ".z.pg:{x}"] {
            assert_eq!(query(&learn, "alice", text), Verdict::Pass);
            assert!(matches!(
                query(&firewall(Mode::Enforce), "alice", text),
                Verdict::Deny(_)
            ));
        }
        assert!(host::kv::keys("shape/").is_empty());
    }

    #[test]
    fn admins_list_and_forget_shapes() {
        testing::reset();
        let learn = firewall(Mode::Learn);
        assert_eq!(query(&learn, "a/b", "select from trade"), Verdict::Pass);
        let Verdict::Reply(table) = query(&learn, "admin", SHAPES) else {
            panic!("no table");
        };
        let table = qgate_plugin_sdk::ipc::decode(&table, qgate_plugin_sdk::ipc::Endian::Little)
            .unwrap_or_else(|e| panic!("{e}"));
        let text = table.to_string();
        assert!(text.contains("a/b"), "{text}");
        assert!(text.contains("(?;`trade;();0b;())"), "{text}");
        // The command is not a shape of its own, and others may not list.
        assert!(matches!(
            query(&firewall(Mode::Enforce), "alice", SHAPES),
            Verdict::Deny(_)
        ));

        let digest = digest("(?;`trade;();0b;())");
        let forget =
            |user: &str| K::list(vec![K::string(FORGET), K::symbol(user), K::symbol(&digest)]);
        assert_eq!(
            send(&learn, "admin", &forget("a/b")),
            Verdict::reply(&K::Atom(Atom::Boolean(true)))
        );
        assert_eq!(
            send(&learn, "admin", &forget("a/b")),
            Verdict::reply(&K::Atom(Atom::Boolean(false)))
        );
        assert!(matches!(
            query(&firewall(Mode::Enforce), "a/b", "select from trade"),
            Verdict::Deny(_)
        ));
    }

    #[test]
    fn configs_are_checked() {
        assert!(
            Firewall::init(&Config::from_json(r#"{"mode":"learn"}"#).unwrap_or_default()).is_ok()
        );
        for json in [
            r#"{}"#,
            r#"{"mode":"watch"}"#,
            r#"{"mode":"off","admin":[]}"#,
        ] {
            let config = Config::from_json(json).unwrap_or_else(|e| panic!("{e}"));
            assert!(Firewall::init(&config).is_err(), "{json}");
        }
    }
}
