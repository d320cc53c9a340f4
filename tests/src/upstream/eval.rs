//! The upstream's "q": what a message evaluates to, as the table in the module documentation
//! says.
//!
//! [`evaluate`] decides; the connection turns its [`Outcome`] into bytes on the wire (a reply, a
//! stream, a close). Calls that reach other connections (`callback`, `publish`) queue their
//! messages in the outboxes themselves, before the caller's reply is queued, so that a client
//! sees them in the order kdb+ would send them.

use std::{fmt, fmt::Write as _, pin::Pin, sync::Arc, time::Duration};

use qgate_ipc::{Atom, EncodeOptions, K, Limits, Locality, Message, MessageType, VectorData};
use tokio_util::sync::CancellationToken;

use crate::upstream::{
    state::{Kind, MAX_RECORDED_TEXT, Outbox, Outgoing, Received, Shared, Subscriber},
    tick::{self, Filter, Rows, TABLES},
};

/// The most bytes `bytes[n]` and `die[n]` may ask for: the message (8-byte header, 6 bytes of
/// type, attribute and count, then `n`) must fit capability 3's signed 32-bit length, as in
/// kdb+, whose limit is 2 GB.
pub(crate) const MAX_BYTES_REPLY: usize = i32::MAX as usize - BYTES_PREFIX_LEN;

/// The header and the vector prefix (type, attribute, count) before a byte vector's items.
pub(crate) const BYTES_PREFIX_LEN: usize = qgate_ipc::HEADER_LEN + 6;

/// The most rows one `publish` may make, all messages together: 10 million rows take about
/// 400 MB queued for a subscriber that reads nothing, the most a test should ever ask of a
/// shared machine; beyond it `publish` fails with `'limit`.
const MAX_PUBLISH_ROWS: u64 = 10_000_000;

/// The most text the q display of a non-string value takes in a receipt (`query`); longer
/// displays end with `..`. A receipt should echo what was asked, not a second copy of a bulk
/// insert.
const MAX_RECEIPT_TEXT: usize = 64 * 1024;

/// What a message evaluated to.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// A value, the reply to a sync message.
    Value(K),
    /// A q error with its text (without the `'`), bytes as q's are.
    Error(Vec<u8>),
    /// `bytes[n]`.
    Bytes(usize),
    /// `die[n]`.
    Die(usize),
    /// `garbage[]`.
    Garbage,
    /// `close[]`.
    Close,
}

impl Outcome {
    fn error(text: &str) -> Self {
        Self::Error(text.as_bytes().to_vec())
    }
}

/// The connection a message is evaluated for, and as whom.
#[derive(Clone, Debug)]
pub(crate) struct Caller {
    pub(crate) shared: Arc<Shared>,
    /// `.z.w`.
    pub(crate) handle: i32,
    /// `.z.u`: the handshake's user, or the user a wrap call names.
    pub(crate) user: Vec<u8>,
    /// The capability the connection negotiated.
    pub(crate) capability: u8,
    /// Where messages to this connection are queued.
    pub(crate) outbox: Outbox,
    /// Cancelled when the connection or the upstream stops.
    pub(crate) stop: CancellationToken,
}

impl Caller {
    /// How messages to this connection are encoded.
    pub(crate) fn encode_options(&self) -> EncodeOptions {
        encode_options(&self.shared, self.capability)
    }
}

/// How messages to a connection of `capability` are encoded: compressed as to a remote peer when
/// the upstream compresses, else never, as kdb+ to localhost.
pub(crate) fn encode_options(shared: &Shared, capability: u8) -> EncodeOptions {
    EncodeOptions {
        capability,
        locality: if shared.compress {
            Locality::Remote
        } else {
            Locality::Local
        },
    }
}

/// A call list's name and arguments: `` (`name;args...) `` or `("name";args...)`.
pub(crate) fn call(message: &K) -> Option<(&[u8], &[K])> {
    let K::List(list) = message else {
        return None;
    };
    let (head, args) = list.items.split_first()?;
    match head {
        K::Atom(Atom::Symbol(name)) => Some((name, args)),
        K::Vector(vector) => match &vector.data {
            VectorData::Char(name) => Some((name, args)),
            _ => None,
        },
        _ => None,
    }
}

/// What the record keeps of a message received on a connection of `user`: a wrap call is
/// recorded as the message it wraps, with the user it runs as.
pub(crate) fn describe(
    shared: &Shared,
    handle: i32,
    user: &[u8],
    kind: Kind,
    message: &K,
) -> Received {
    let (as_user, message) = match call(message) {
        Some((name, [as_user, inner])) if name == shared.wrap.as_slice() => {
            (as_user.as_text().map(lossy), inner)
        }
        _ => (None, message),
    };
    Received {
        handle,
        user: lossy(user),
        kind,
        text: lossy(&text(message, MAX_RECORDED_TEXT)),
        as_user,
    }
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A message's text: the string itself for a char vector, else its q display; at most `limit`
/// bytes, then `..`.
pub(crate) fn text(message: &K, limit: usize) -> Vec<u8> {
    if let K::Vector(vector) = message
        && let VectorData::Char(text) = &vector.data
    {
        if text.len() <= limit {
            return text.clone();
        }
        let mut cut = text[..limit].to_vec();
        cut.extend_from_slice(b"..");
        return cut;
    }
    let mut out = Bounded {
        text: String::new(),
        limit,
        truncated: false,
    };
    // An error here only means the display was cut at the limit.
    let _ = write!(out, "{message}");
    if out.truncated {
        out.text.push_str("..");
    }
    out.text.into_bytes()
}

/// A `fmt::Write` that stops at `limit` bytes, so that displaying a huge value costs no more
/// than the limit.
struct Bounded {
    text: String,
    limit: usize,
    truncated: bool,
}

impl fmt::Write for Bounded {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self.limit - self.text.len();
        if s.len() <= room {
            self.text.push_str(s);
            return Ok(());
        }
        let mut end = room;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        self.text.push_str(&s[..end]);
        self.truncated = true;
        Err(fmt::Error)
    }
}

/// Evaluates one message for `caller`.
///
/// Boxed with its type written out: a wrap call evaluates the message it wraps, and a recursive
/// future needs a name for itself.
pub(crate) fn evaluate<'a>(
    caller: &'a Caller,
    message: &'a K,
) -> Pin<Box<dyn Future<Output = Outcome> + Send + 'a>> {
    Box::pin(evaluate_inner(caller, message))
}

async fn evaluate_inner(caller: &Caller, message: &K) -> Outcome {
    if let Some(answer) = pykx_context(message) {
        return Outcome::Value(answer);
    }
    let Some((name, args)) = call(message) else {
        return receipt(caller, message);
    };
    match name {
        b"echo" => Outcome::Value(match args {
            [] => K::Null,
            [x] => x.clone(),
            _ => K::list(args.to_vec()),
        }),
        b"whoami" => nullary(args, || whoami(caller)),
        b"sleep" => sleep(caller, args).await,
        b"fail" => match args {
            [text] => match text.as_text() {
                Some(text) => Outcome::Error(text.to_vec()),
                None => Outcome::error("type"),
            },
            _ => Outcome::error("rank"),
        },
        b"bytes" => byte_count(args).map_or_else(|error| error, Outcome::Bytes),
        b"die" => byte_count(args).map_or_else(|error| error, Outcome::Die),
        b"garbage" => nullary(args, || Outcome::Garbage),
        b"close" => nullary(args, || Outcome::Close),
        b"callback" => match args {
            [x] => callback(caller, x),
            _ => Outcome::error("rank"),
        },
        b".u.sub" => match args {
            [table, syms] => subscribe(caller, table, syms),
            _ => Outcome::error("rank"),
        },
        b"publish" => match args {
            [table, count, rows] => publish(caller, table, count, rows),
            _ => Outcome::error("rank"),
        },
        b"received" => nullary(args, || received(caller)),
        b"stats" => nullary(args, || stats(caller)),
        wrap if wrap == caller.shared.wrap.as_slice() => match args {
            [user, inner] => match user.as_text() {
                Some(user) => {
                    let inner_caller = Caller {
                        user: user.to_vec(),
                        ..caller.clone()
                    };
                    evaluate(&inner_caller, inner).await
                }
                None => Outcome::error("type"),
            },
            _ => Outcome::error("rank"),
        },
        _ => receipt(caller, message),
    }
}

/// A call that takes no argument, or one that it ignores, as a q lambda `{[] ...}` does.
fn nullary(args: &[K], run: impl FnOnce() -> Outcome) -> Outcome {
    if args.len() <= 1 {
        run()
    } else {
        Outcome::error("rank")
    }
}

/// An integer atom's value (short, int or long), `None` for anything else or a null.
fn integer(value: &K) -> Option<i64> {
    match value {
        K::Atom(Atom::Short(x)) if *x != i16::MIN => Some(i64::from(*x)),
        K::Atom(Atom::Int(x)) if *x != i32::MIN => Some(i64::from(*x)),
        K::Atom(Atom::Long(x)) if *x != i64::MIN => Some(*x),
        _ => None,
    }
}

/// `bytes[n]`'s and `die[n]`'s argument.
fn byte_count(args: &[K]) -> Result<usize, Outcome> {
    let [n] = args else {
        return Err(Outcome::error("rank"));
    };
    let n = integer(n).ok_or_else(|| Outcome::error("type"))?;
    let n = usize::try_from(n).map_err(|_| Outcome::error("domain"))?;
    if n > MAX_BYTES_REPLY {
        return Err(Outcome::error("limit"));
    }
    Ok(n)
}

/// The receipt for a message no call handles.
fn receipt(caller: &Caller, message: &K) -> Outcome {
    let query = match message.as_text() {
        Some(text) if matches!(message, K::Vector(_)) => text.to_vec(),
        _ => text(message, MAX_RECEIPT_TEXT),
    };
    Outcome::Value(K::dict(
        K::symbols(["upstream", "user", "handle", "query"]),
        K::list(vec![
            K::symbol(&caller.shared.name),
            K::symbol(&caller.user),
            K::Atom(Atom::Int(caller.handle)),
            K::string(query),
        ]),
    ))
}

fn whoami(caller: &Caller) -> Outcome {
    Outcome::Value(K::dict(
        K::symbols(["upstream", "user", "handle"]),
        K::list(vec![
            K::symbol(&caller.shared.name),
            K::symbol(&caller.user),
            K::Atom(Atom::Int(caller.handle)),
        ]),
    ))
}

async fn sleep(caller: &Caller, args: &[K]) -> Outcome {
    let [ms] = args else {
        return Outcome::error("rank");
    };
    let Some(millis) = integer(ms) else {
        return Outcome::error("type");
    };
    let Ok(millis) = u64::try_from(millis) else {
        return Outcome::error("domain");
    };
    tokio::select! {
        () = tokio::time::sleep(Duration::from_millis(millis)) => Outcome::Value(ms.clone()),
        // Never sent: the connection or the upstream is stopping (the evaluator checks).
        () = caller.stop.cancelled() => Outcome::error("stop"),
    }
}

fn callback(caller: &Caller, x: &K) -> Outcome {
    let message = K::list(vec![K::symbol("callback"), x.clone()]);
    match qgate_ipc::encode_message_with(MessageType::Async, &message, &caller.encode_options()) {
        Ok(bytes) => {
            // A closed outbox means the connection is closing: the reply is lost with it.
            let _ = caller.outbox.send(Outgoing::Frame(bytes.into()));
            Outcome::Value(x.clone())
        }
        Err(_) => Outcome::error("type"),
    }
}

/// `.u.sub[t;syms]`, as kdb+tick's: one table or `` ` `` for all of them.
fn subscribe(caller: &Caller, table: &K, syms: &K) -> Outcome {
    let Some(name) = symbol(table) else {
        return Outcome::error("type");
    };
    let Some(filter) = Filter::parse(syms) else {
        return Outcome::error("type");
    };
    let sub = |table: &'static str| {
        caller
            .shared
            .subscribe(caller.handle, table, filter.clone());
        K::list(vec![K::symbol(table), tick::schema()])
    };
    if name.is_empty() {
        return Outcome::Value(K::list(TABLES.into_iter().map(sub).collect()));
    }
    match tick::table(name) {
        Some(table) => Outcome::Value(sub(table)),
        None => Outcome::Error(name.to_vec()),
    }
}

/// `publish[t;n;rows]`: `n` messages `` (`upd;t;data) `` of `rows` rows each to every subscriber
/// of `t`, each message's rows filtered by the subscriber's syms.
fn publish(caller: &Caller, table: &K, count: &K, rows: &K) -> Outcome {
    let Some(name) = symbol(table) else {
        return Outcome::error("type");
    };
    let (Some(n), Some(row_count)) = (integer(count), integer(rows)) else {
        return Outcome::error("type");
    };
    let (Ok(n), Ok(row_count)) = (u64::try_from(n), u64::try_from(row_count)) else {
        return Outcome::error("domain");
    };
    if n.saturating_mul(row_count) > MAX_PUBLISH_ROWS {
        return Outcome::error("limit");
    }
    let Some(table) = tick::table(name) else {
        return Outcome::Error(name.to_vec());
    };
    let subscribers = caller.shared.subscribers(table);
    // Invariant: both are at most MAX_PUBLISH_ROWS, which fits an i64 and a usize.
    let per_message = row_count as usize;
    for _ in 0..n {
        let first = caller.shared.take_seq(row_count as i64);
        let rows = Rows::new(first, per_message);
        let mut all = None;
        for subscriber in &subscribers {
            let encoded = if subscriber.filter == Filter::All {
                all.get_or_insert_with(|| upd(&caller.shared, table, &rows, subscriber))
                    .clone()
            } else {
                upd(&caller.shared, table, &rows, subscriber)
            };
            if let Some(bytes) = encoded {
                // A closed outbox belongs to a subscriber that is closing: it misses the message,
                // as a tickerplant's subscriber that closed does.
                let _ = subscriber.outbox.send(Outgoing::Frame(bytes));
            }
        }
    }
    Outcome::Value(count.clone())
}

/// The message `` (`upd;t;data) `` for one subscriber, `None` when its syms filter out every row
/// or it cannot take the message (a timespan at capability 0).
fn upd(shared: &Shared, table: &str, rows: &Rows, subscriber: &Subscriber) -> Option<Arc<[u8]>> {
    let data = rows.select(&subscriber.filter)?;
    let message = K::list(vec![K::symbol("upd"), K::symbol(table), data]);
    let options = encode_options(shared, subscriber.capability);
    match qgate_ipc::encode_message_with(MessageType::Async, &message, &options) {
        Ok(bytes) => Some(bytes.into()),
        Err(error) => {
            tracing::warn!(
                handle = subscriber.handle,
                %error,
                "a publication cannot be sent to a subscriber"
            );
            None
        }
    }
}

/// The name of a symbol atom.
fn symbol(value: &K) -> Option<&[u8]> {
    match value {
        K::Atom(Atom::Symbol(name)) => Some(name),
        _ => None,
    }
}

fn received(caller: &Caller) -> Outcome {
    let received = caller.shared.received();
    let texts: Vec<K> = received.iter().map(|r| K::string(&r.text)).collect();
    Outcome::Value(K::table(
        ["handle", "user", "kind", "text", "as"],
        vec![
            K::vector(VectorData::Int(received.iter().map(|r| r.handle).collect())),
            K::symbols(received.iter().map(|r| r.user.as_bytes())),
            K::symbols(received.iter().map(|r| r.kind.name())),
            K::list(texts),
            K::symbols(
                received
                    .iter()
                    .map(|r| r.as_user.as_deref().unwrap_or_default()),
            ),
        ],
    ))
}

fn stats(caller: &Caller) -> Outcome {
    let entries = caller.shared.stats().entries();
    Outcome::Value(K::dict(
        K::symbols(entries.iter().map(|(name, _)| name)),
        K::vector(VectorData::Long(
            entries
                .iter()
                .map(|&(_, value)| i64::try_from(value).unwrap_or(i64::MAX))
                .collect(),
        )),
    ))
}

/// The answer of a q process with nothing loaded to one of PyKX's context queries, which it sends
/// right after connecting (`qgate_server::pykx_context_answer` knows them).
fn pykx_context(message: &K) -> Option<K> {
    // The cheap look first: the queries are a short string or a pair ending in `.q`.
    let candidate = match message {
        K::Vector(vector) => matches!(&vector.data, VectorData::Char(text) if text.len() < 64),
        K::List(list) => {
            list.items.len() == 2
                && matches!(&list.items[1], K::Atom(Atom::Symbol(s)) if s == b".q")
        }
        _ => false,
    };
    if !candidate {
        return None;
    }
    let bytes = qgate_ipc::encode_message(MessageType::Sync, message).ok()?;
    let message = Message::from_frame(bytes, &Limits::default()).ok()?;
    let request = qgate_hooks::Request::new(message).ok()?;
    qgate_server::pykx_context_answer(&request)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(value: &K, limit: usize, expect: &str) {
        assert_eq!(String::from_utf8_lossy(&text(value, limit)), expect);
    }

    #[test]
    fn texts_are_strings_or_displays_cut_at_the_limit() {
        check(&K::string("select from t"), 100, "select from t");
        check(&K::string("select from t"), 6, "select..");
        check(&K::long(42), 100, "42");
        check(&K::symbols(["a", "b"]), 100, "`a`b");
        check(&K::list(vec![K::symbol("f"), K::Null]), 100, "(`f;::)");
        check(&K::symbols(["abcdef", "ghijkl"]), 5, "`abcd..");
        // A cut never splits a character.
        check(&K::list(vec![K::string("größe"), K::long(1)]), 5, "(\"gr..");
    }

    #[test]
    fn calls_have_a_symbol_or_string_head() {
        let by_symbol = K::list(vec![K::symbol("f"), K::long(1)]);
        let by_string = K::list(vec![K::string("f"), K::long(1)]);
        for message in [&by_symbol, &by_string] {
            let (name, args) = call(message).unwrap_or_else(|| panic!("{message}"));
            assert_eq!((name, args), (&b"f"[..], &[K::long(1)][..]));
        }
        assert!(call(&K::string("f")).is_none());
        assert!(call(&K::list(vec![K::long(1)])).is_none());
        assert!(call(&K::list(Vec::new())).is_none());
    }
}
