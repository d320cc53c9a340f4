//! `demo-api`: an application backend, so that qgate can stand in for kdb+ in a client
//! library's CI.
//!
//! It answers sync requests (and accepts async ones) of two kinds:
//!
//! - **calls** (`` (`legalOperation;1;2) `` or `("legalOperation";1;2)`) to its functions:
//!   - `legalOperation[x;y]`: `x+y` for numeric atoms (short, int, long, real, float), with q's
//!     widening (`1i+2` is a long, `1+2.5` a float), from the `.z.pg` walkthrough;
//!   - `echo[x]`: `x`;
//!   - `count[x]`: the count of `x`, a long;
//!   - `til[n]`: `0 1 ... n-1`, a long vector (n at most 1 000 000);
//!   - `now[]`: the current time, a timestamp (`.z.p`);
//!
//!   an unknown name is q's error for an undefined name (`'name`), a wrong argument count is
//!   `'rank` and a wrong type `'type`;
//! - **query strings** holding a q data literal (atoms of every type with their nulls and
//!   infinities, vectors, `enlist`, `!`, `flip`, `` `s# ``, `::`, the empty query, general
//!   lists; see [`literal`]), answered with the value they spell. Other q is refused with a
//!   `'nyi` error that says what could not be read: this backend does not evaluate q.
//!
//! Anything else (a lambda, a bare value) is refused with `'nyi`.
//!
//! Over HTTP on the q port it answers as kdb+'s default `.z.ph` and `.z.pp` would for its
//! literals: `GET /?expr` (and a POST of `expr` to `/`) with a q data literal gets the value as
//! text in q's syntax (`-3!`), `text/plain`; text it cannot read gets `400` with the q error.
//! On a WebSocket (`.z.ws`) it answers a text message holding a q data literal with its value as
//! text the same way (text it cannot read gets the q error, `'nyi...`), and echoes a binary
//! message back.
//! It has no config.

pub mod literal;

use qgate_plugin_sdk::{
    Atom, Config, Events, HttpCtx, HttpVerdict, K, MessageCtx, Plugin, VectorData, Verdict,
    WsCtx, WsVerdict, export_plugin, host, http, ws,
    q::{self, KExt as _},
};

/// The longest vector `til` builds: a test backend answers in bounded memory.
const MAX_TIL: i64 = 1_000_000;

/// The functions `demo-api` has.
const FUNCTIONS: [&str; 5] = ["legalOperation", "echo", "count", "til", "now"];

/// The plugin; it keeps nothing.
pub struct DemoApi;

/// Evaluates a message: a call, or a query string holding a data literal.
pub fn evaluate(ctx: &MessageCtx<'_>) -> Result<K, String> {
    if let Some(name) = ctx.head() {
        // An unknown name is refused before any argument is copied into the plugin: a 100 MB
        // insert sent to the wrong backend costs a few bytes.
        if !FUNCTIONS.contains(&name) {
            // q's error for an unknown name, whatever the arguments: it stands for every later
            // call of it on the connection.
            ctx.same_for_head();
            return Err(name.to_owned());
        }
        let args = (0..ctx.arg_count())
            .map(|i| {
                ctx.arg(i)
                    .ok_or_else(|| format!("nyi: argument {} is not readable", i + 1))
            })
            .collect::<Result<Vec<_>, _>>()?;
        return apply(name, &args);
    }
    if let Some(text) = ctx.text() {
        return literal::parse(&text);
    }
    Err("nyi: demo-api answers calls and q data literals".to_owned())
}

/// Calls the function `name`.
pub fn apply(name: &str, args: &[K]) -> Result<K, String> {
    // A niladic call arrives as `(`f)` or `(`f;::)`.
    let niladic = args.is_empty() || matches!(args, [K::Null]);
    match (name, args) {
        ("legalOperation", [x, y]) => add(x, y),
        ("echo", [x]) => Ok(x.clone()),
        ("count", [x]) => Ok(K::long(i64::try_from(x.len()).unwrap_or(i64::MAX))),
        ("til", [n]) => {
            let n = n.as_i64().ok_or("type")?;
            if !(0..=MAX_TIL).contains(&n) {
                return Err("limit".to_owned());
            }
            Ok(K::vector(VectorData::Long((0..n).collect())))
        }
        ("now", _) if niladic => Ok(K::Atom(Atom::Timestamp(q::timestamp_from_unix_nanos(
            host::now(),
        )))),
        (name, _) if FUNCTIONS.contains(&name) => Err("rank".to_owned()),
        (other, _) => Err(other.to_owned()),
    }
}

/// `x+y` for numeric atoms, with q's widening: short < int < long < real < float.
fn add(x: &K, y: &K) -> Result<K, String> {
    let rank = |k: &K| match k {
        K::Atom(Atom::Short(_)) => Some(0),
        K::Atom(Atom::Int(_)) => Some(1),
        K::Atom(Atom::Long(_)) => Some(2),
        K::Atom(Atom::Real(_)) => Some(3),
        K::Atom(Atom::Float(_)) => Some(4),
        _ => None,
    };
    let (Some(rx), Some(ry)) = (rank(x), rank(y)) else {
        return Err("type".to_owned());
    };
    let float =
        || -> Result<f64, String> { Ok(x.as_f64().ok_or("type")? + y.as_f64().ok_or("type")?) };
    let int = || -> Result<i64, String> {
        Ok(x.as_i64()
            .ok_or("type")?
            .wrapping_add(y.as_i64().ok_or("type")?))
    };
    Ok(K::Atom(match rx.max(ry) {
        // q's short and int sums wrap in their own type.
        #[expect(
            clippy::cast_possible_truncation,
            reason = "q's short arithmetic wraps"
        )]
        0 => Atom::Short(int()? as i16),
        #[expect(clippy::cast_possible_truncation, reason = "q's int arithmetic wraps")]
        1 => Atom::Int(int()? as i32),
        2 => Atom::Long(int()?),
        #[expect(clippy::cast_possible_truncation, reason = "a real sum is a real")]
        3 => Atom::Real(float()? as f32),
        _ => Atom::Float(float()?),
    }))
}

impl Plugin for DemoApi {
    const EVENTS: Events = Events::SYNC
        .union(Events::ASYNC_MESSAGE)
        .union(Events::HTTP)
        .union(Events::WS_MESSAGE);

    fn init(_config: &Config) -> Result<Self, String> {
        Ok(DemoApi)
    }

    fn on_sync(&self, ctx: &MessageCtx<'_>) -> Verdict {
        match evaluate(ctx) {
            Ok(value) => Verdict::reply(&value),
            Err(message) => Verdict::Deny(message),
        }
    }

    fn on_async(&self, ctx: &MessageCtx<'_>) -> Verdict {
        match evaluate(ctx) {
            // Accepted; nothing is sent for an async message.
            Ok(value) => Verdict::reply(&value),
            Err(message) => Verdict::Deny(message),
        }
    }

    fn on_http(&self, ctx: &HttpCtx<'_>) -> HttpVerdict {
        const TEXT: &str = "text/plain; charset=utf-8";
        if ctx.path() != "/" || !matches!(ctx.method(), "GET" | "HEAD" | "POST") {
            return http::deny(
                404,
                "demo-api answers GET /?expr and POST / with a q data literal",
            );
        }
        match literal::parse(&ctx.text().unwrap_or_default()) {
            Ok(value) => http::respond(200, TEXT, format!("{value}\n")),
            Err(error) => http::respond(400, TEXT, format!("'{error}\n")),
        }
    }

    fn on_ws_message(&self, ctx: &WsCtx) -> WsVerdict {
        match ctx.text() {
            Some(text) => match literal::parse(text) {
                Ok(value) => ws::reply_text(&format!("{value}")),
                Err(error) => ws::reply_text(&format!("'{error}")),
            },
            None if ctx.is_text() => ws::deny("a text message that is not UTF-8"),
            None => ws::reply_binary(ctx.data()),
        }
    }
}

export_plugin!(DemoApi);

#[cfg(test)]
mod tests {
    use qgate_plugin_sdk::testing::{self, session};

    use super::*;

    fn get(target: &str) -> HttpVerdict {
        DemoApi.on_http(&HttpCtx::new(session(5, "u"), "GET", target, &[], b""))
    }

    fn body_of(verdict: &HttpVerdict) -> (u16, String) {
        match verdict {
            HttpVerdict::Respond(response) => (
                response.status,
                String::from_utf8_lossy(&response.body).into_owned(),
            ),
            HttpVerdict::Deny(deny) => (deny.status, deny.text.clone()),
            other => panic!("not an answer: {other:?}"),
        }
    }

    #[test]
    fn http_literals_are_answered_as_text() {
        assert_eq!(body_of(&get("/?1%202%203")), (200, "1 2 3\n".to_owned()));
        assert_eq!(body_of(&get("/?`a`b!1%202")), (200, "`a`b!1 2\n".to_owned()));
        let (status, text) = body_of(&get("/?select%20from%20t"));
        assert_eq!(status, 400);
        assert!(text.starts_with("'nyi"), "{text}");
        assert_eq!(body_of(&get("/index.html")).0, 404);
        let post = HttpCtx::new(session(5, "u"), "POST", "/", &[], b"2.5");
        assert_eq!(body_of(&DemoApi.on_http(&post)), (200, "2.5\n".to_owned()));
    }

    #[test]
    fn websocket_literals_are_answered_as_text_and_bytes_echoed() {
        let answer = |ctx: WsCtx| match DemoApi.on_ws_message(&ctx) {
            WsVerdict::Reply(messages) => messages,
            other => panic!("not a reply: {other:?}"),
        };
        let text = answer(WsCtx::text_message(session(5, "u"), "1 2 3"));
        assert_eq!(text, [ws::text_message("1 2 3")]);
        let error = answer(WsCtx::text_message(session(5, "u"), "select from t"));
        assert!(error[0].text && error[0].data.starts_with(b"'nyi"), "{error:?}");
        let bytes = answer(WsCtx::binary_message(session(5, "u"), b"\x00\xff"));
        assert_eq!(bytes, [ws::binary_message(b"\x00\xff")]);
    }

    fn sync(value: K) -> Verdict {
        DemoApi.on_sync(&MessageCtx::from_value(session(5, "u"), &value))
    }

    fn call(name: K, args: Vec<K>) -> K {
        K::list(std::iter::once(name).chain(args).collect())
    }

    #[test]
    fn legal_operation_adds_with_q_widening() {
        let three = Verdict::reply(&K::long(3));
        assert_eq!(
            sync(call(
                K::symbol("legalOperation"),
                vec![K::long(1), K::long(2)]
            )),
            three
        );
        assert_eq!(
            sync(call(
                K::string("legalOperation"),
                vec![K::long(1), K::long(2)]
            )),
            three
        );
        assert_eq!(
            sync(call(
                K::symbol("legalOperation"),
                vec![K::Atom(Atom::Int(1)), K::Atom(Atom::Float(2.5))]
            )),
            Verdict::reply(&K::Atom(Atom::Float(3.5)))
        );
        assert_eq!(
            sync(call(
                K::symbol("legalOperation"),
                vec![K::Atom(Atom::Int(1)), K::Atom(Atom::Int(2))]
            )),
            Verdict::reply(&K::Atom(Atom::Int(3)))
        );
        assert_eq!(
            sync(call(K::symbol("legalOperation"), vec![K::long(1)])),
            Verdict::deny("rank")
        );
        assert_eq!(
            sync(call(
                K::symbol("legalOperation"),
                vec![K::long(1), K::symbol("a")]
            )),
            Verdict::deny("type")
        );
    }

    #[test]
    fn other_functions_and_unknown_names() {
        assert_eq!(
            sync(call(K::symbol("echo"), vec![K::string("hi")])),
            Verdict::reply(&K::string("hi"))
        );
        assert_eq!(
            sync(call(K::symbol("til"), vec![K::long(3)])),
            Verdict::reply(&K::vector(VectorData::Long(vec![0, 1, 2])))
        );
        testing::set_now(q::Q_EPOCH_UNIX_NANOS + 7);
        assert_eq!(
            sync(call(K::symbol("now"), vec![K::Null])),
            Verdict::reply(&K::Atom(Atom::Timestamp(7)))
        );
        assert_eq!(sync(call(K::symbol("nope"), vec![])), Verdict::deny("nope"));
    }

    #[test]
    fn query_strings_are_data_literals() {
        assert_eq!(
            sync(K::string("`a`b!1 2")),
            Verdict::reply(&K::dict(
                K::symbols(["a", "b"]),
                K::vector(VectorData::Long(vec![1, 2]))
            ))
        );
        assert_eq!(sync(K::string("")), Verdict::reply(&K::Null));
        assert!(
            matches!(sync(K::string("select from t")), Verdict::Deny(m) if m.starts_with("nyi"))
        );
        assert!(matches!(sync(K::long(1)), Verdict::Deny(m) if m.starts_with("nyi")));
    }
}
