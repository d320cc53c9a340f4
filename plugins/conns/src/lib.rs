//! `conns`: the connection table of q's `.z.po`/`.z.pc` walkthrough, kept by qgate.
//!
//! In q one writes
//!
//! ```q
//! .z.po:{`conns upsert (.z.w; .z.u; .z.a; .z.p)}
//! .z.pc:{delete from `conns where handle=x}
//! ```
//!
//! This plugin does the same: on open it stores a row for the connection in the host's key-value
//! store (one key per handle, so the table survives a hot-swap and is shared by every instance),
//! on close it removes it, and a sync query whose text is the configured query (or a call of
//! that name with no arguments) is answered with the table:
//!
//! | column  | q type    | what                                    |
//! |---------|-----------|-----------------------------------------|
//! | handle  | int       | `.z.w`                                  |
//! | user    | symbol    | `.z.u`                                  |
//! | address | symbol    | `.z.a`, the peer's IP address as text   |
//! | time    | timestamp | when the connection opened (`.z.p`)     |
//!
//! Every other message passes.
//!
//! # Config
//!
//! ```toml
//! # The query text (or the name of a call) that gets the table; default "conns".
//! query = "conns"
//! ```

use qgate_plugin_sdk::{
    Atom, CloseCtx, Config, Events, K, MessageCtx, OpenCtx, Plugin, Verdict, export_plugin,
    host::{self, kv},
    q::{self, KExt as _},
    reply,
};
use serde::Deserialize;

/// The prefix of the kv keys that hold the rows; the handle follows, zero-padded so that the
/// keys sort by handle.
const KEY_PREFIX: &str = "conn/";

/// The plugin's config, as `config.toml` spells it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// `query = "conns"`: the text that gets the table.
    #[serde(default = "default_query")]
    pub query: String,
}

fn default_query() -> String {
    "conns".to_owned()
}

/// The plugin.
pub struct Conns {
    settings: Settings,
}

/// The kv key of a handle's row.
fn key(handle: i32) -> String {
    format!("{KEY_PREFIX}{handle:010}")
}

/// One row, as stored: `(handle; user; address; time)`.
fn row(handle: i32, user: &str, address: &str, time: i64) -> K {
    K::list(vec![
        K::Atom(Atom::Int(handle)),
        K::symbol(user),
        K::symbol(address),
        K::Atom(Atom::Timestamp(time)),
    ])
}

/// The table of every stored row, in handle order.
pub fn table() -> Result<K, String> {
    let (mut handles, mut users, mut addresses, mut times) = (vec![], vec![], vec![], vec![]);
    for key in kv::keys(KEY_PREFIX) {
        let Some(row) = kv::value(&key) else { continue };
        let (Some(handle), Some(user), Some(address), Some(K::Atom(Atom::Timestamp(time)))) =
            (row.item(0), row.item(1), row.item(2), row.item(3))
        else {
            continue;
        };
        handles.push(i32::try_from(handle.as_i64().unwrap_or_default()).unwrap_or_default());
        users.push(user.as_text().unwrap_or_default().to_vec());
        addresses.push(address.as_text().unwrap_or_default().to_vec());
        times.push(time);
    }
    reply::TableBuilder::new()
        .column("handle", reply::ints(handles))
        .column("user", reply::symbols(users))
        .column("address", reply::symbols(addresses))
        .column("time", reply::timestamps(times))
        .build()
}

impl Conns {
    /// Whether a message asks for the table.
    fn asks_for_table(&self, ctx: &MessageCtx<'_>) -> bool {
        let query = self.settings.query.as_str();
        match ctx.head() {
            Some(head) => head == query && ctx.arg_count() == 0,
            None => ctx.text().is_some_and(|text| text.trim() == query),
        }
    }
}

impl Plugin for Conns {
    const EVENTS: Events = Events::OPEN.union(Events::SYNC).union(Events::CLOSE);

    fn init(config: &Config) -> Result<Self, String> {
        let settings: Settings = config.parse()?;
        if settings.query.trim().is_empty() {
            return Err("config: query must not be empty".to_owned());
        }
        Ok(Self { settings })
    }

    fn on_open(&self, ctx: &OpenCtx) -> Result<(), String> {
        let session = ctx.session();
        let time = q::timestamp_from_unix_nanos(host::now());
        let row = row(session.handle, &session.user, &session.peer_address, time);
        if let Err(err) = kv::set_value(&key(session.handle), &row) {
            // A user name with a NUL byte: keep the connection, say why it is not listed.
            host::warn(&format!("conns: handle {}: {err}", session.handle));
        }
        Ok(())
    }

    fn on_sync(&self, ctx: &MessageCtx<'_>) -> Verdict {
        if !self.asks_for_table(ctx) {
            // A call of any other function passes whatever its arguments, and goes on passing.
            if ctx.head().is_some_and(|head| head != self.settings.query) {
                ctx.same_for_head();
            }
            return Verdict::Pass;
        }
        match table() {
            Ok(table) => Verdict::reply(&table),
            Err(err) => Verdict::deny(format!("conns: {err}")),
        }
    }

    fn on_close(&self, ctx: &CloseCtx) {
        kv::delete(&key(ctx.session().handle));
    }
}

export_plugin!(Conns);

#[cfg(test)]
mod tests {
    use qgate_plugin_sdk::testing::{self, session};

    use super::*;

    fn plugin(json: &str) -> Conns {
        let config = Config::from_json(json).unwrap_or_else(|e| panic!("{e}"));
        Conns::init(&config).unwrap_or_else(|e| panic!("{e}"))
    }

    fn ask(plugin: &Conns, value: &K) -> Verdict {
        plugin.on_sync(&MessageCtx::from_value(session(99, "admin"), value))
    }

    #[test]
    fn open_and_close_keep_the_table() {
        testing::reset();
        let conns = plugin("{}");
        testing::set_now(q::Q_EPOCH_UNIX_NANOS + 5);
        conns
            .on_open(&OpenCtx::new(session(7, "bob")))
            .unwrap_or_else(|e| panic!("{e}"));
        conns
            .on_open(&OpenCtx::new(session(12, "alice")))
            .unwrap_or_else(|e| panic!("{e}"));
        let expect = reply::TableBuilder::new()
            .column("handle", reply::ints([7, 12]))
            .column("user", reply::symbols(["bob", "alice"]))
            .column("address", reply::symbols(["127.0.0.1", "127.0.0.1"]))
            .column("time", reply::timestamps([5, 5]))
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ask(&conns, &K::string("conns")), Verdict::reply(&expect));
        assert_eq!(
            ask(&conns, &K::list(vec![K::symbol("conns")])),
            Verdict::reply(&expect)
        );

        conns.on_close(&CloseCtx::new(session(7, "bob"), "client closed"));
        let table = table().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(table.column("user"), Some(&reply::symbols(["alice"])));
    }

    #[test]
    fn other_messages_pass_and_the_query_is_configurable() {
        testing::reset();
        let conns = plugin(r#"{"query": "select from conns"}"#);
        assert_eq!(ask(&conns, &K::string("conns")), Verdict::Pass);
        assert!(matches!(
            ask(&conns, &K::string("select from conns")),
            Verdict::Reply(_)
        ));
        assert_eq!(
            ask(&conns, &K::list(vec![K::symbol("f"), K::long(1)])),
            Verdict::Pass
        );
        assert!(Conns::init(&Config::from_json(r#"{"query": ""}"#).unwrap_or_default()).is_err());
    }
}
