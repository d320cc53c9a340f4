//! The context structs handed to each [`Plugin`](crate::Plugin) callback, and the plugin's
//! [`Config`].
//!
//! A message stays in the host until the plugin asks for it: [`MessageCtx`] answers the common
//! questions (is it a call, its head, its text) from the [`Summary`] the host computes in place,
//! fetched with one host call on the first of them, and copies bytes into the guest only for
//! [`MessageCtx::arg`], [`MessageCtx::value`] and [`MessageCtx::body`]. The [`Session`] is one host
//! call on the first ask too. Its query facts ([`MessageCtx::facts`]) take one host call, on the
//! first ask, and the host parses the message once for the whole chain.

use std::cell::OnceCell;

use qgate_ipc::{DecodeError, Endian, K, ValueView};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::{
    bindings::qgate::plugin::types::{Decision, EventKind, Message, Outcome, Session, Summary},
    facts::{self, Facts},
};

/// The longest text the host puts in [`Summary::text`]; longer texts are fetched on demand.
///
/// The same limit as the host's, so that [`MessageCtx::from_value`] builds the summary a plugin
/// would see in production.
const SUMMARY_TEXT_BYTES: usize = 4096;

/// The plugin's table from `config.toml`, as the host passed it to `init` (JSON).
///
/// ```
/// # use qgate_plugin_sdk::Config;
/// let config = Config::from_json(r#"{"query": "conns", "limit": 3}"#).unwrap();
/// assert_eq!(config.get::<String>("query"), Ok(Some("conns".to_owned())));
/// assert_eq!(config.get::<u32>("missing"), Ok(None));
/// assert!(config.get::<String>("limit").is_err());
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Config {
    table: Map<String, Value>,
}

impl Config {
    /// Parses the JSON text the host passes to `init`; empty text or `null` is an empty table.
    ///
    /// # Errors
    ///
    /// A message when the text is not a JSON object.
    pub fn from_json(json: &str) -> Result<Self, String> {
        if json.trim().is_empty() {
            return Ok(Self::default());
        }
        match serde_json::from_str::<Value>(json) {
            Ok(Value::Object(table)) => Ok(Self { table }),
            Ok(Value::Null) => Ok(Self::default()),
            Ok(other) => Err(format!("config: expected a table, got {other}")),
            Err(err) => Err(format!("config: not valid JSON: {err}")),
        }
    }

    /// The whole table, to inspect by hand.
    pub fn table(&self) -> &Map<String, Value> {
        &self.table
    }

    /// The value of `key`, parsed into `T`; `Ok(None)` when the key is absent.
    ///
    /// # Errors
    ///
    /// A message naming the key when its value does not fit `T`.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, String> {
        match self.table.get(key) {
            None => Ok(None),
            Some(value) => T::deserialize(value)
                .map(Some)
                .map_err(|err| format!("config key `{key}`: {err}")),
        }
    }

    /// The whole table parsed into `T`, typically a struct with
    /// `#[serde(deny_unknown_fields)]` so that a misspelt key is an error.
    ///
    /// # Errors
    ///
    /// A message saying which key does not fit.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, String> {
        T::deserialize(Value::Object(self.table.clone())).map_err(|err| format!("config: {err}"))
    }
}

/// What [`Plugin::on_auth`](crate::Plugin::on_auth) is given: the session and the password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthCtx {
    session: Session,
    password: Option<Vec<u8>>,
}

impl AuthCtx {
    /// A context as the host would pass it; for tests.
    pub fn new(session: Session, password: Option<Vec<u8>>) -> Self {
        Self { session, password }
    }

    /// The connection.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The user name the client sent in the handshake.
    pub fn user(&self) -> &str {
        &self.session.user
    }

    /// The password the client sent, `None` when the handshake had no `:`.
    ///
    /// Never log it.
    pub fn password(&self) -> Option<&[u8]> {
        self.password.as_deref()
    }
}

/// What [`Plugin::on_open`](crate::Plugin::on_open) is given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenCtx {
    session: Session,
}

impl OpenCtx {
    /// A context as the host would pass it; for tests.
    pub fn new(session: Session) -> Self {
        Self { session }
    }

    /// The connection that just opened.
    pub fn session(&self) -> &Session {
        &self.session
    }
}

/// What [`Plugin::on_close`](crate::Plugin::on_close) is given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloseCtx {
    session: Session,
    reason: String,
}

impl CloseCtx {
    /// A context as the host would pass it; for tests.
    pub fn new(session: Session, reason: impl Into<String>) -> Self {
        Self {
            session,
            reason: reason.into(),
        }
    }

    /// The connection that closed.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Why it closed, in words.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

/// What [`Plugin::on_outcome`](crate::Plugin::on_outcome) is given.
pub struct OutcomeCtx<'a> {
    session: Session,
    summary: Option<Summary>,
    message: Option<Body<'a>>,
    facts: OnceCell<Facts>,
    outcome: Outcome,
}

impl std::fmt::Debug for OutcomeCtx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutcomeCtx")
            .field("session", &self.session)
            .field("summary", &self.summary)
            .field("outcome", &self.outcome)
            .finish_non_exhaustive()
    }
}

impl<'a> OutcomeCtx<'a> {
    /// A context as the host would pass it for an auth or open event, or for a message whose
    /// facts are not asked for; for tests.
    pub fn new(session: Session, summary: Option<Summary>, outcome: Outcome) -> Self {
        Self {
            session,
            summary,
            message: None,
            facts: OnceCell::new(),
            outcome,
        }
    }

    /// A context over a message that stays in the host.
    pub(crate) fn host(
        session: Session,
        summary: Option<Summary>,
        message: Option<&'a Message>,
        outcome: Outcome,
    ) -> Self {
        Self {
            message: message.map(Body::Host),
            ..Self::new(session, summary, outcome)
        }
    }

    /// A context for the outcome of `value`, with the summary the host would compute for it;
    /// for tests.
    pub fn from_value(session: Session, value: &K, outcome: Outcome) -> OutcomeCtx<'static> {
        let bytes = encode_or_null(value);
        OutcomeCtx {
            summary: Some(summarize(&bytes)),
            message: Some(Body::Local(bytes)),
            ..OutcomeCtx::new(session, None, outcome)
        }
    }

    /// The query facts of the message, for sync and async events: what the chain's plugins saw,
    /// parsed at most once for the whole chain.
    pub fn facts(&self) -> Option<&Facts> {
        let message = self.message.as_ref()?;
        Some(self.facts.get_or_init(|| message.facts()))
    }

    /// The connection, as the event left it (after auth, with the user an allow set).
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The message's summary, for sync and async events.
    pub fn summary(&self) -> Option<&Summary> {
        self.summary.as_ref()
    }

    /// Which event.
    pub fn event(&self) -> EventKind {
        self.outcome.event
    }

    /// What the chain decided.
    pub fn decision(&self) -> Decision {
        self.outcome.decision
    }

    /// The deny message, or why the connection was closed.
    pub fn reason(&self) -> Option<&str> {
        self.outcome.reason.as_deref()
    }

    /// The plugin that decided; `None` when every plugin passed.
    pub fn decided_by(&self) -> Option<&str> {
        self.outcome.decided_by.as_deref()
    }

    /// How long the chain took to decide, in nanoseconds.
    pub fn latency_ns(&self) -> u64 {
        self.outcome.latency_ns
    }
}

/// Where a message's bytes are.
enum Body<'a> {
    /// In the host, fetched on demand.
    Host(&'a Message),
    /// In the guest: a message built by [`MessageCtx::from_value`].
    Local(Vec<u8>),
}

impl Body<'_> {
    /// The message's facts: one host call, or computed here as the host would.
    fn facts(&self) -> Facts {
        match self {
            Body::Host(message) => facts::from_wit(message.facts()),
            Body::Local(bytes) => facts::of_view(ValueView::trusted(bytes, Endian::Little)),
        }
    }

    /// The message's summary: one host call, or computed here as the host would.
    fn summary(&self) -> Summary {
        match self {
            Body::Host(message) => message.summary(),
            Body::Local(bytes) => summarize(bytes),
        }
    }

    /// The connection of a message in the host: one host call. A local message's context is made
    /// with its session, so it never asks.
    fn session(&self) -> Session {
        match self {
            Body::Host(message) => message.session(),
            Body::Local(_) => Session {
                handle: 0,
                user: String::new(),
                peer_address: String::new(),
                peer_port: 0,
                capability: 3,
                tls: None,
            },
        }
    }
}

/// The body of `value`; a value that cannot be encoded (a symbol with a NUL) is replaced by the
/// generic null.
pub(crate) fn encode_or_null(value: &K) -> Vec<u8> {
    let mut bytes = Vec::new();
    if qgate_ipc::encode(value, &mut bytes).is_err() {
        bytes.clear();
        // Invariant: the generic null always encodes.
        let _ = qgate_ipc::encode(&K::Null, &mut bytes);
    }
    bytes
}

/// What [`Plugin::on_sync`](crate::Plugin::on_sync) and
/// [`Plugin::on_async`](crate::Plugin::on_async) are given: the message, whose session, summary,
/// bytes and facts stay in the host until the handler asks for them. Each is one host call on the
/// first ask and is then kept in the context, so a handler that replies without looking
/// (`echo`) copies neither the session nor the summary.
pub struct MessageCtx<'a> {
    session: OnceCell<Session>,
    summary: OnceCell<Summary>,
    body: Body<'a>,
    facts: OnceCell<Facts>,
}

impl std::fmt::Debug for MessageCtx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageCtx")
            .field("session", &self.session)
            .field("summary", &self.summary)
            .finish_non_exhaustive()
    }
}

impl<'a> MessageCtx<'a> {
    /// A context over a message that stays in the host, its session and summary included.
    pub(crate) fn host(message: &'a Message) -> Self {
        Self {
            session: OnceCell::new(),
            summary: OnceCell::new(),
            body: Body::Host(message),
            facts: OnceCell::new(),
        }
    }

    /// A context over a message that stays in the host, with the session and summary the host
    /// passed beside it (`on-response`'s request).
    pub(crate) fn host_with(session: Session, summary: Summary, message: &'a Message) -> Self {
        Self {
            session: OnceCell::from(session),
            summary: OnceCell::from(summary),
            body: Body::Host(message),
            facts: OnceCell::new(),
        }
    }

    /// A context over `value`, with the summary the host would compute for it; for tests.
    ///
    /// A value that cannot be encoded (a symbol with a NUL) is replaced by the generic null.
    /// Its [`facts`](MessageCtx::facts) are computed with `qgate-q`, as the host computes them.
    pub fn from_value(session: Session, value: &K) -> MessageCtx<'static> {
        let bytes = encode_or_null(value);
        let summary = summarize(&bytes);
        MessageCtx {
            session: OnceCell::from(session),
            summary: OnceCell::from(summary),
            body: Body::Local(bytes),
            facts: OnceCell::new(),
        }
    }

    /// What the message reads, writes, calls and assigns, and its flags: a free-text query
    /// parsed as q, a call list (`` (`fn;args) ``) read as a call of `fn`, nothing for other
    /// values. The first ask is one host call (the host parses the message once for the whole
    /// chain); the answer is kept in the context.
    ///
    /// Text that does not parse has [`Flags::UNPARSED`](crate::facts::Flags::UNPARSED) and no
    /// other fact: deny it.
    pub fn facts(&self) -> &Facts {
        self.facts.get_or_init(|| self.body.facts())
    }

    /// The connection the message came from: one host call on the first ask.
    pub fn session(&self) -> &Session {
        self.session.get_or_init(|| self.body.session())
    }

    /// The user (`.z.u`), as the handshake or an auth plugin set it.
    pub fn user(&self) -> &str {
        &self.session().user
    }

    /// The connection's handle (`.z.w`).
    pub fn handle(&self) -> i32 {
        self.session().handle
    }

    /// The host's summary: type, size, head, argument count, short text. One host call on the
    /// first ask.
    pub fn summary(&self) -> &Summary {
        self.summary.get_or_init(|| self.body.summary())
    }

    /// The q type of the message (0 for a general list, 10 for a string...).
    pub fn type_code(&self) -> i8 {
        self.summary().type_code
    }

    /// The function name when the message is a call: a general list whose first item is a symbol
    /// (`` (`fn;1;2) ``) or a string (`("fn";1;2)`, as PyKX and qPython send calls).
    pub fn head(&self) -> Option<&str> {
        self.summary().head.as_deref()
    }

    /// Whether the head of a call is a symbol rather than a string.
    pub fn head_is_symbol(&self) -> bool {
        self.summary().head_is_symbol
    }

    /// Says that the verdict this handler returns holds for every later call of the same
    /// function (its [`head`](Self::head), symbol or string alike) on this connection, whatever
    /// the arguments: qgate then gives it without calling the plugin, until the connection closes
    /// or the plugin is swapped. For a verdict that depends on the user and the function alone,
    /// such as a function this user may call, or one the plugin never answers. Nothing for a
    /// message that is not a call.
    pub fn same_for_head(&self) {
        crate::host::imp::same_for_head();
    }

    /// The number of arguments after the head of a call; 0 when the message is not a call.
    pub fn arg_count(&self) -> usize {
        self.summary().arg_count as usize
    }

    /// Whether the message is a call of `name` (with any arguments) or the free-text query
    /// `name` (spaces around it ignored): the usual way for a plugin to pick out the requests it
    /// answers.
    pub fn names(&self, name: &str) -> bool {
        match self.head() {
            Some(head) => head == name,
            None => self.text().is_some_and(|text| text.trim() == name),
        }
    }

    /// Whether the message is a string: a free-text query such as `"select from t"`.
    pub fn is_query(&self) -> bool {
        self.summary().type_code == qgate_ipc::type_code::CHAR
    }

    /// The text of a string message (a free-text query), however long; bytes that are not UTF-8
    /// are replaced. `None` when the message is not a string.
    pub fn text(&self) -> Option<String> {
        if !self.is_query() {
            return None;
        }
        if let Some(text) = &self.summary().text {
            return Some(text.clone());
        }
        let bytes = match &self.body {
            Body::Host(message) => message.text()?,
            Body::Local(bytes) => ValueView::new(bytes, Endian::Little)
                .ok()?
                .string()?
                .to_vec(),
        };
        Some(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// The `index`th argument of a call (0 is the first after the head), fetched and decoded
    /// alone; `None` when there is no such argument.
    pub fn arg(&self, index: usize) -> Option<K> {
        match &self.body {
            Body::Host(message) => {
                let bytes = message.arg(u32::try_from(index).ok()?)?;
                qgate_ipc::decode(&bytes, Endian::Little).ok()
            }
            Body::Local(bytes) => ValueView::new(bytes, Endian::Little)
                .ok()?
                .call()?
                .arg(index)?
                .to_k()
                .ok(),
        }
    }

    /// The whole message as a kdb+ IPC body (little-endian), copied from the host.
    pub fn body(&self) -> Vec<u8> {
        match &self.body {
            Body::Host(message) => message.body(),
            Body::Local(bytes) => bytes.clone(),
        }
    }

    /// The whole message, fetched and decoded.
    ///
    /// # Errors
    ///
    /// [`DecodeError`] when the body does not decode; the host validates every message before
    /// a plugin sees it, so this means a value too large for the decoder's memory budget.
    pub fn value(&self) -> Result<K, DecodeError> {
        qgate_ipc::decode(&self.body(), Endian::Little)
    }
}

/// The summary the host computes for a body.
fn summarize(body: &[u8]) -> Summary {
    let view = ValueView::trusted(body, Endian::Little);
    let call = view.call();
    let text = view
        .string()
        .filter(|text| text.len() <= SUMMARY_TEXT_BYTES)
        .map(|text| String::from_utf8_lossy(text).into_owned());
    Summary {
        type_code: view.type_code(),
        size: body.len() as u64,
        head: call
            .as_ref()
            .map(|call| String::from_utf8_lossy(call.name()).into_owned()),
        head_is_symbol: call.as_ref().is_some_and(|call| call.has_symbol_head()),
        arg_count: call.as_ref().map_or(0, |call| {
            u32::try_from(call.arg_count()).unwrap_or(u32::MAX)
        }),
        text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::session;

    #[test]
    fn a_symbol_call_summarizes_its_head_and_args() {
        let value = K::list(vec![K::symbol("add"), K::long(1), K::long(2)]);
        let ctx = MessageCtx::from_value(session(3, "alice"), &value);
        assert_eq!(ctx.head(), Some("add"));
        assert!(ctx.head_is_symbol());
        assert_eq!(ctx.arg_count(), 2);
        assert_eq!(ctx.arg(1), Some(K::long(2)));
        assert_eq!(ctx.arg(2), None);
        assert_eq!(ctx.text(), None);
        assert_eq!(ctx.value().ok(), Some(value));
    }

    #[test]
    fn a_string_call_has_a_string_head() {
        let value = K::list(vec![K::string("add"), K::long(1)]);
        let ctx = MessageCtx::from_value(session(3, "alice"), &value);
        assert_eq!(ctx.head(), Some("add"));
        assert!(!ctx.head_is_symbol());
        assert_eq!(ctx.arg_count(), 1);
    }

    #[test]
    fn a_query_has_text_however_long() {
        let short = MessageCtx::from_value(session(3, "u"), &K::string("select from t"));
        assert_eq!(short.text().as_deref(), Some("select from t"));
        assert!(short.is_query());
        let long_text = "x".repeat(SUMMARY_TEXT_BYTES + 1);
        let long = MessageCtx::from_value(session(3, "u"), &K::string(&long_text));
        assert_eq!(long.summary().text, None);
        assert_eq!(long.text(), Some(long_text));
    }

    #[test]
    fn facts_are_read_once_and_kept() {
        let ctx = MessageCtx::from_value(session(3, "u"), &K::string("select from trade"));
        assert_eq!(ctx.facts().tables_read, ["trade"]);
        assert!(std::ptr::eq(ctx.facts(), ctx.facts()));
        let call = K::list(vec![K::symbol("getTrades"), K::symbol("AAPL")]);
        let ctx = MessageCtx::from_value(session(3, "u"), &call);
        assert_eq!(ctx.facts().functions, ["getTrades"]);
    }

    #[test]
    fn an_outcome_has_facts_for_messages_only() {
        let outcome = Outcome {
            event: EventKind::Sync,
            decision: Decision::Passed,
            reason: None,
            decided_by: None,
            latency_ns: 1,
        };
        let ctx = OutcomeCtx::from_value(session(3, "u"), &K::string("\\\\"), outcome.clone());
        assert!(
            ctx.facts()
                .is_some_and(|facts| facts.flags.contains(crate::facts::Flags::EXIT))
        );
        assert_eq!(ctx.summary().map(|s| s.type_code), Some(10));
        let ctx = OutcomeCtx::new(session(3, "u"), None, outcome);
        assert!(ctx.facts().is_none());
    }

    #[test]
    fn config_reads_keys_and_whole_tables() {
        #[derive(serde::Deserialize, Debug, PartialEq)]
        #[serde(deny_unknown_fields)]
        struct Table {
            query: String,
        }
        let config = Config::from_json(r#"{"query":"conns"}"#).unwrap_or_default();
        assert_eq!(
            config.parse::<Table>(),
            Ok(Table {
                query: "conns".into()
            })
        );
        assert!(
            Config::from_json(r#"{"other":1}"#)
                .and_then(|c| c.parse::<Table>())
                .is_err()
        );
        assert_eq!(Config::from_json(""), Ok(Config::default()));
        assert!(Config::from_json("[1]").is_err());
    }
}
