//! The answers to PyKX's "context queries", which it sends right after connecting.
//!
//! PyKX (read in PyKX 4.2.0 from PyPI, unlicensed IPC mode) builds its context interface when a
//! `QConnection` is created without `no_ctx=True`: `Q.__init__` in `pykx/__init__.py` evaluates
//! `self.ctx.q._context_keys` (`QContext.__getattr__` and `_context_keys` in `pykx/ctx.py`), and
//! `SQL.__init__` in `pykx/query.py` asks whether the SQL interface is loaded.
//! `Q.__init__` runs twice for a `SyncQConnection`, so each of these three sync queries arrives
//! twice, in this order:
//!
//! | PyKX sends | a q process with nothing loaded answers | PyKX uses it for |
//! |---|---|---|
//! | ``("k){x:. x;$[99h<@x;:`$"_pykx_fn_marker";99h~@x;if[` in!x;if[(::)~x`;:`$"_pykx_ctx_marker"]]]x}";`.q)`` | `` `_pykx_ctx_marker `` (`.q` is a namespace) | `ctx.q` |
//! | ``("key";`.q)`` | the names in `.q` | which attribute names go to `.q` |
//! | `"@[{2<count .s};(::);{0b}]"` | `0b` (no `.s` namespace) | `sql.loaded` |
//!
//! Without the first two answers the connection fails (`AttributeError` from `_context_keys`); the
//! third is wrapped in a `try`.
//! A server that does not evaluate q must answer them as q would, so qgate answers exactly these
//! texts itself, before any hook sees them.
//! The match is on the exact bytes: any other query, including the same lambda for another
//! namespace (which PyKX sends when a user asks for `conn.ctx.foo`), goes to the hooks.
//!
//! The names in `.q` are those that `q.k` of kdb+ 4.1 (`.Q.K` 2024.10.16) defines between `\d .q`
//! and `\d .Q`, in definition order, after the null name that heads every namespace: derived from
//! that source, not captured from a running q.

use qgate_hooks::Request;
use qgate_ipc::{Atom, K, ValueView};

/// The lambda PyKX sends to ask what a name is (`pykx/ctx.py`, `QContext.__getattr__`).
const NAME_KIND_LAMBDA: &[u8] = br#"k){x:. x;$[99h<@x;:`$"_pykx_fn_marker";99h~@x;if[` in!x;if[(::)~x`;:`$"_pykx_ctx_marker"]]]x}"#;

/// The query PyKX sends to learn whether the SQL interface is loaded (`pykx/query.py`,
/// `SQL.__init__`).
const SQL_LOADED_QUERY: &[u8] = b"@[{2<count .s};(::);{0b}]";

/// What `key `.q` returns in kdb+ 4.1 (see the module documentation).
const Q_NAMESPACE: &[&str] = &[
    "",
    "neg",
    "not",
    "null",
    "string",
    "reciprocal",
    "floor",
    "ceiling",
    "signum",
    "mod",
    "xbar",
    "xlog",
    "and",
    "or",
    "each",
    "scan",
    "over",
    "prior",
    "mmu",
    "lsq",
    "inv",
    "md5",
    "ltime",
    "gtime",
    "count",
    "first",
    "svar",
    "sdev",
    "scov",
    "med",
    "all",
    "any",
    "rand",
    "sums",
    "prds",
    "mins",
    "maxs",
    "fills",
    "deltas",
    "ratios",
    "avgs",
    "differ",
    "prev",
    "next",
    "rank",
    "reverse",
    "iasc",
    "idesc",
    "asc",
    "desc",
    "msum",
    "mcount",
    "mavg",
    "mdev",
    "xrank",
    "mmin",
    "mmax",
    "xprev",
    "rotate",
    "ema",
    "distinct",
    "group",
    "where",
    "flip",
    "type",
    "key",
    "til",
    "get",
    "value",
    "attr",
    "cut",
    "set",
    "upsert",
    "raze",
    "union",
    "inter",
    "except",
    "cross",
    "sv",
    "vs",
    "sublist",
    "read0",
    "read1",
    "hclose",
    "hdel",
    "hsym",
    "hcount",
    "peach",
    "system",
    "ltrim",
    "rtrim",
    "trim",
    "lower",
    "upper",
    "ssr",
    "view",
    "tables",
    "views",
    "cols",
    "xcols",
    "keys",
    "xkey",
    "xcol",
    "xasc",
    "xdesc",
    "fkeys",
    "meta",
    "lj",
    "ljf",
    "aj",
    "aj0",
    "ajf",
    "ajf0",
    "ij",
    "ijf",
    "pj",
    "asof",
    "uj",
    "ujf",
    "ww",
    "wj",
    "wj1",
    "fby",
    "xgroup",
    "ungroup",
    "ej",
    "save",
    "load",
    "rsave",
    "rload",
    "dsave",
    "show",
    "csv",
    "parse",
    "eval",
    "reval",
];

/// The answer a q process gives to one of PyKX's context queries, or `None` for any other
/// request.
pub fn answer(request: &Request) -> Option<K> {
    let view = request.view();
    if view.string() == Some(SQL_LOADED_QUERY) {
        return Some(K::Atom(Atom::Boolean(false)));
    }
    let (head, arg) = pair(&view)?;
    if arg.symbol() != Some(b".q") {
        return None;
    }
    match head.string()? {
        NAME_KIND_LAMBDA => Some(K::symbol("_pykx_ctx_marker")),
        b"key" => Some(K::symbols(Q_NAMESPACE)),
        _ => None,
    }
}

/// The two items of a general list of two.
fn pair<'a>(view: &ValueView<'a>) -> Option<(ValueView<'a>, ValueView<'a>)> {
    if !view.is_list() || view.count()? != 2 {
        return None;
    }
    Some((view.item(0)?, view.item(1)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    use qgate_ipc::{Limits, Message, MessageType, encode_message};

    fn request(value: &K) -> Request {
        let bytes = encode_message(MessageType::Sync, value).unwrap();
        Request::new(Message::from_frame(bytes, &Limits::default()).unwrap()).unwrap()
    }

    /// The bytes PyKX 4.2.0 sent, captured from the wire.
    fn captured(hex: &str) -> Request {
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        Request::new(Message::from_frame(bytes, &Limits::default()).unwrap()).unwrap()
    }

    #[test]
    fn answers_what_pykx_sends() {
        let lambda = captured(concat!(
            "0101000075000000",
            "0000020000000a005d0000006b297b783a2e20783b245b3939683c40783b3a6024225f70796b785f66",
            "6e5f6d61726b6572223b3939687e40783b69665b6020696e21783b69665b283a3a297e78603b3a6024",
            "225f70796b785f6374785f6d61726b6572225d5d5d787df52e7100",
        ));
        assert_eq!(answer(&lambda), Some(K::symbol("_pykx_ctx_marker")));
        let key = captured("010100001b0000000000020000000a00030000006b6579f52e7100");
        let names = answer(&key).unwrap();
        assert_eq!(names.len(), Q_NAMESPACE.len());
        assert_eq!(names, K::symbols(Q_NAMESPACE));
        let sql = captured(
            "01010000270000000a0019000000405b7b323c636f756e74202e737d3b283a3a293b7b30627d5d",
        );
        assert_eq!(answer(&sql), Some(K::Atom(Atom::Boolean(false))));
    }

    #[test]
    fn leaves_everything_else_to_the_hooks() {
        for value in [
            K::string("key `.q"),
            K::list(vec![K::string("key"), K::symbol(".z")]),
            K::list(vec![K::string(NAME_KIND_LAMBDA), K::symbol(".foo")]),
            K::list(vec![K::symbol("key"), K::symbol(".q")]),
            K::list(vec![K::string("key"), K::symbol(".q"), K::long(1)]),
            K::long(1),
        ] {
            assert_eq!(answer(&request(&value)), None, "{value:?}");
        }
    }
}
