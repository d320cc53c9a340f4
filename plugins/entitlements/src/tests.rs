//! The entitlement rules on replies and publications built as the host would show them.

use qgate_plugin_sdk::{
    Config, DataCtx, DataVerdict, K, Plugin,
    reply::{self, TableBuilder},
    testing::session,
};

use crate::Settings;

fn settings() -> Settings {
    let config = Config::from_json(
        r#"{
            "column": "sym",
            "safe": ["count_trades", "daily"],
            "users": {
                "alice": {"allow": ["AAPL", "MSFT"], "remove": ["client"], "mask": ["account"],
                          "max_rows": 100000, "max_bytes": "1KiB"}
            },
            "groups": {
                "analysts": {"members": ["bob", "carol"], "allow": ["*"]},
                "desk": {"members": ["carol"], "allow": ["IBM"], "remove": ["client"]}
            }
        }"#,
    )
    .unwrap();
    Settings::init(&config).unwrap()
}

fn trades() -> K {
    TableBuilder::new()
        .column("sym", reply::symbols(["AAPL", "LSE.L", "MSFT", "IBM"]))
        .column("price", reply::floats([1.0, 2.0, 3.0, 4.0]))
        .column("client", reply::symbols(["c1", "c2", "c3", "c4"]))
        .column("account", reply::longs([1, 2, 3, 4]))
        .build()
        .unwrap()
}

fn reply_to(user: &str, request: &K, value: &K) -> DataVerdict {
    settings().decide(&DataCtx::from_value(session(7, user), Some(request), value))
}

fn query(text: &str) -> K {
    K::string(text)
}

#[test]
fn a_restricted_user_keeps_only_allowed_rows_without_removed_columns_and_with_masks() {
    let verdict = reply_to("alice", &query("select from trade"), &trades());
    let DataVerdict::Edit(edits) = verdict else {
        panic!("expected an edit, got {verdict:?}");
    };
    assert_eq!(edits.len(), 1);
    let edit = &edits[0];
    // Rows 0 (AAPL) and 2 (MSFT).
    assert_eq!(edit.rows, Some(vec![0b0101]));
    assert_eq!(edit.remove, vec!["client".to_owned()]);
    assert_eq!(edit.mask.len(), 1);
    assert_eq!(edit.mask[0].column, "account");
    assert_eq!(edit.mask[0].value, None);
    // Four rows are under alice's cap: none is set.
    assert_eq!(edit.max_rows, None);
}

#[test]
fn an_entitled_user_gets_the_reply_as_it_came() {
    assert_eq!(
        reply_to("bob", &query("select from trade"), &trades()),
        DataVerdict::Pass
    );
}

#[test]
fn groups_merge_what_they_allow_and_what_they_remove() {
    let verdict = reply_to("carol", &query("select from trade"), &trades());
    let DataVerdict::Edit(edits) = verdict else {
        panic!("expected an edit, got {verdict:?}");
    };
    // carol is an analyst (everything) and on the desk (which removes `client`).
    assert_eq!(edits[0].rows, None);
    assert_eq!(edits[0].remove, vec!["client".to_owned()]);
}

#[test]
fn aggregates_are_denied_to_a_restricted_user_unless_safe() {
    let average = TableBuilder::new()
        .column("price", reply::floats([2.5]))
        .build()
        .unwrap();
    let verdict = reply_to("alice", &query("select avg price from trade"), &average);
    assert!(
        matches!(&verdict, DataVerdict::Deny(why) if why.contains("aggregate")),
        "{verdict:?}"
    );
    let atom = K::Atom(qgate_plugin_sdk::Atom::Float(2.5));
    let verdict = reply_to("alice", &query("exec avg price from trade"), &atom);
    assert!(
        matches!(&verdict, DataVerdict::Deny(why) if why.contains("not a table")),
        "{verdict:?}"
    );
    // A safe function, called or in free text, and a safe table.
    let call = K::list(vec![K::symbol("count_trades")]);
    assert_eq!(reply_to("alice", &call, &atom), DataVerdict::Pass);
    assert_eq!(
        reply_to("alice", &query("count_trades[]"), &atom),
        DataVerdict::Pass
    );
    assert_eq!(
        reply_to("alice", &query("select avg price from daily"), &average),
        DataVerdict::Pass
    );
    // An entitled user may see any aggregate.
    assert_eq!(
        reply_to("bob", &query("exec avg price from trade"), &atom),
        DataVerdict::Pass
    );
}

#[test]
fn users_without_entitlements_get_nothing() {
    let verdict = reply_to("mallory", &query("select from trade"), &trades());
    assert!(matches!(&verdict, DataVerdict::Deny(why) if why.contains("no entitlements")));
}

#[test]
fn a_reply_over_max_bytes_is_refused() {
    let big = TableBuilder::new()
        .column("sym", reply::symbols(vec!["AAPL"; 400]))
        .column("price", reply::floats(vec![1.0; 400]))
        .build()
        .unwrap();
    let verdict = reply_to("alice", &query("select from trade"), &big);
    assert!(
        matches!(&verdict, DataVerdict::Deny(why) if why.contains("max_bytes")),
        "{verdict:?}"
    );
}

#[test]
fn errors_pass() {
    assert_eq!(
        reply_to("alice", &query("select from nope"), &K::error("nope")),
        DataVerdict::Pass
    );
}

#[test]
fn a_publication_is_filtered_by_its_rows() {
    let upd = K::list(vec![K::symbol("upd"), K::symbol("trade"), trades()]);
    let verdict = settings().decide(&DataCtx::from_value(session(7, "alice"), None, &upd));
    let DataVerdict::Edit(edits) = verdict else {
        panic!("expected an edit, got {verdict:?}");
    };
    assert_eq!(edits[0].rows, Some(vec![0b0101]));
}

#[test]
fn a_bad_config_is_refused_with_the_key_named() {
    let config =
        Config::from_json(r#"{"column": "sym", "users": {"a": {"alow": ["x"]}}}"#).unwrap();
    let error = Settings::init(&config).map(|_| ()).unwrap_err();
    assert!(error.contains("alow"), "{error}");
    let config =
        Config::from_json(r#"{"column": "sym", "users": {"a": {"max_bytes": "3 parsecs"}}}"#)
            .unwrap();
    assert!(Settings::init(&config).is_err());
}

#[test]
fn a_verdict_stands_for_the_connection_when_the_user_alone_decides_it() {
    let settings = settings();
    // bob sees everything, uncapped: replies and publications pass without another call.
    assert_eq!(
        settings.standing("bob", false),
        Some(DataVerdict::PassAlways)
    );
    assert_eq!(settings.standing("bob", true), Some(DataVerdict::PassAlways));
    // carol sees everything too, but loses a column (desk): each is checked.
    assert_eq!(settings.standing("carol", false), None);
    assert_eq!(settings.standing("carol", true), None);
    // alice's replies depend on their requests; her publications get a filter the host applies.
    assert_eq!(settings.standing("alice", false), None);
    let Some(DataVerdict::FilterAlways(filter)) = settings.standing("alice", true) else {
        panic!("expected a filter");
    };
    assert_eq!(filter.column.as_deref(), Some("sym"));
    assert_eq!(filter.keep, ["AAPL", "MSFT"]);
    assert_eq!(filter.pass_tables, ["count_trades", "daily"]);
    assert_eq!(filter.remove, ["client"]);
    assert_eq!(filter.mask, ["account"]);
    assert_eq!((filter.max_rows, filter.max_bytes), (Some(100_000), Some(1024)));
    // A user with no entitlement is refused each time, with the reason.
    assert_eq!(settings.standing("mallory", true), None);
}
