//! Replies and publications through the `entitlements` plugin: the `on-response` and
//! `on-publication` events, the data summary a plugin reads, and the host applying its edits to the
//! bytes.

use qgate_hooks::{DataVerdict, Handle, Hooks, Request, Session};
use qgate_host::PluginSpec;
use qgate_ipc::{Atom, Endian, K, Limits, Message, MessageType, Vector, VectorData};

use super::{component, options, request};

fn entitlements() -> qgate_host::PluginHost {
    let mut spec = PluginSpec::new("entitlements", component("entitlements"));
    let config = serde_json::json!({
        "column": "sym",
        "safe": ["count_trades"],
        "users": {
            "alice": {"allow": ["AAPL", "MSFT"], "remove": ["client"], "mask": ["account"]},
            "dave": {"allow": ["AAPL"], "max_rows": 1}
        },
        "groups": {"analysts": {"members": ["bob"], "allow": ["*"]}}
    });
    let serde_json::Value::Object(config) = config else {
        unreachable!("a JSON object literal")
    };
    spec.config = config;
    qgate_host::PluginHost::new(options(vec![spec])).unwrap_or_else(|e| panic!("{e}"))
}

/// A connection of `user`'s own: its handle is told by the name, since a verdict may stand for
/// a connection.
fn session(user: &str) -> Session {
    let handle = user
        .bytes()
        .fold(7_i32, |h, b| h.wrapping_mul(31).wrapping_add(i32::from(b)));
    Session::new(
        Handle(handle & 0x7fff_ffff),
        user.as_bytes().to_vec(),
        "127.0.0.1:5002".parse().expect("an address"),
        3,
    )
}

fn message(message_type: MessageType, value: &K) -> Request {
    let frame = qgate_ipc::encode_message(message_type, value).expect("encodable");
    Request::new(Message::from_frame(frame, &Limits::default()).expect("a frame")).expect("valid")
}

fn vector(data: VectorData) -> K {
    K::Vector(Vector::new(data))
}

fn syms(names: &[&str]) -> K {
    K::symbols(names)
}

fn table(columns: Vec<(&str, K)>) -> K {
    let (names, values): (Vec<_>, Vec<_>) = columns.into_iter().unzip();
    K::table(names, values)
}

fn trades(sym: &[&str], price: &[f64], client: &[&str], account: &[i64]) -> K {
    table(vec![
        ("sym", syms(sym)),
        ("price", vector(VectorData::Float(price.to_vec()))),
        ("client", syms(client)),
        ("account", vector(VectorData::Long(account.to_vec()))),
    ])
}

fn all_trades() -> K {
    trades(
        &["AAPL", "LSE.L", "MSFT", "IBM"],
        &[1.0, 2.0, 3.0, 4.0],
        &["c1", "c2", "c3", "c4"],
        &[1, 2, 3, 4],
    )
}

fn replaced(verdict: DataVerdict) -> K {
    match verdict {
        DataVerdict::Replace(body) => {
            qgate_ipc::decode(body.as_bytes(), Endian::Little).expect("a valid body")
        }
        other => panic!("expected a replacement, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restricted_users_reply_keeps_allowed_rows_and_loses_its_columns() {
    let host = entitlements();
    let outbound = host.outbound(&session("alice"));
    assert!(outbound.responses && outbound.publications);
    let query = request(&K::string("select from trade"));
    let reply = message(MessageType::Response, &all_trades());
    let got = replaced(host.on_response(&session("alice"), &query, &reply).await);
    let expected = table(vec![
        ("sym", syms(&["AAPL", "MSFT"])),
        ("price", vector(VectorData::Float(vec![1.0, 3.0]))),
        (
            "account",
            vector(VectorData::Long(vec![i64::MIN, i64::MIN])),
        ),
    ]);
    assert_eq!(got, expected, "{got}");
    // An entitled user gets the bytes as they came; a row cap cuts what is left.
    assert_eq!(
        host.on_response(&session("bob"), &query, &reply).await,
        DataVerdict::Pass
    );
    let got = replaced(host.on_response(&session("dave"), &query, &reply).await);
    assert_eq!(got, trades(&["AAPL"], &[1.0], &["c1"], &[1]), "{got}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aggregate_is_denied_to_a_restricted_user_and_sent_to_an_entitled_one() {
    let host = entitlements();
    let query = request(&K::string("select avg price from trade"));
    let average = message(
        MessageType::Response,
        &table(vec![("price", vector(VectorData::Float(vec![2.5])))]),
    );
    let verdict = host.on_response(&session("alice"), &query, &average).await;
    assert!(
        matches!(&verdict, DataVerdict::Deny(why) if why.contains("aggregate")),
        "{verdict:?}"
    );
    assert_eq!(
        host.on_response(&session("bob"), &query, &average).await,
        DataVerdict::Pass
    );
    let safe = request(&K::list(vec![K::symbol("count_trades")]));
    let count = message(MessageType::Response, &K::Atom(Atom::Long(4)));
    assert_eq!(
        host.on_response(&session("alice"), &safe, &count).await,
        DataVerdict::Pass
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publication_is_filtered_per_subscriber() {
    let host = entitlements();
    let upd = K::list(vec![K::symbol("upd"), K::symbol("trade"), all_trades()]);
    let publication = message(MessageType::Async, &upd);
    let got = replaced(host.on_publication(&session("dave"), &publication).await);
    let expected = K::list(vec![
        K::symbol("upd"),
        K::symbol("trade"),
        trades(&["AAPL"], &[1.0], &["c1"], &[1]),
    ]);
    assert_eq!(got, expected, "{got}");
    assert_eq!(
        host.on_publication(&session("bob"), &publication).await,
        DataVerdict::Pass
    );
    let verdict = host.on_publication(&session("mallory"), &publication).await;
    assert!(matches!(verdict, DataVerdict::Deny(_)), "{verdict:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standing_verdict_spares_the_calls_until_the_connection_closes() {
    let host = entitlements();
    let query = request(&K::string("select from trade"));
    let reply = message(MessageType::Response, &all_trades());
    // bob sees everything: once the plugin has said so, his connection's replies stream past it,
    // and only his.
    let bob = session("bob");
    assert!(host.outbound(&bob).responses);
    assert_eq!(
        host.on_response(&bob, &query, &reply).await,
        DataVerdict::Pass
    );
    assert!(!host.outbound(&bob).responses && host.outbound(&bob).publications);
    assert!(host.outbound(&session("alice")).responses);
    let calls = |host: &qgate_host::PluginHost| host.status()[0].calls;
    let before = calls(&host);
    assert_eq!(
        host.on_response(&bob, &query, &reply).await,
        DataVerdict::Pass
    );
    assert_eq!(calls(&host), before, "no call for a standing pass");

    // dave's publications are filtered by the host after the first call: AAPL rows, at most
    // one; a publication with none of his rows is dropped.
    let dave = session("dave");
    let upd = |table: K| {
        message(
            MessageType::Async,
            &K::list(vec![K::symbol("upd"), K::symbol("trade"), table]),
        )
    };
    let expected = K::list(vec![
        K::symbol("upd"),
        K::symbol("trade"),
        trades(&["AAPL"], &[1.0], &["c1"], &[1]),
    ]);
    let got = replaced(host.on_publication(&dave, &upd(all_trades())).await);
    assert_eq!(got, expected, "{got}");
    let before = calls(&host);
    for _ in 0..3 {
        let got = replaced(host.on_publication(&dave, &upd(all_trades())).await);
        assert_eq!(got, expected, "{got}");
    }
    let lse = trades(&["LSE.L"], &[2.0], &["c2"], &[2]);
    let verdict = host.on_publication(&dave, &upd(lse)).await;
    assert!(
        matches!(&verdict, DataVerdict::Deny(why) if why.contains("none of its rows")),
        "{verdict:?}"
    );
    let unnamed = message(
        MessageType::Async,
        &K::list(vec![
            K::symbol("upd"),
            K::symbol("trade"),
            K::list(vec![syms(&["AAPL"])]),
        ]),
    );
    let verdict = host.on_publication(&dave, &unnamed).await;
    assert!(matches!(verdict, DataVerdict::Deny(_)), "{verdict:?}");
    assert_eq!(calls(&host), before, "the filter runs in the host");

    // Closed, the connection's rules are gone: the plugin is asked again.
    host.on_close(&bob, &qgate_hooks::CloseReason::ClientClosed)
        .await;
    assert!(host.outbound(&bob).responses);
}
