//! The `cedar` plugin through the host: the walkthrough's rules in Cedar decide as the
//! `allowlist` does, and the policy files it reads through the host (`{ file = "PATH" }`) are
//! part of its version: an edit swaps in, a broken edit is refused with the file, line and column
//! while the old policy serves, a rollback brings back the old policy, and a locked deployment
//! refuses a policy file that is neither pinned nor signed.

use std::{
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use qgate_hooks::{AuthVerdict, Credentials, Handle, Hooks, Session, Verdict};
use qgate_host::{
    ConfigFile, Digest, HostError, LockPolicy, PluginHost, PluginSpec, SecretKey, SwapOutcome,
    signature_path,
};
use qgate_ipc::K;

use super::{component, deploy, options, request, root};

/// A directory of its own for `test`, empty.
fn scratch(test: &str) -> PathBuf {
    super::scratch("cedar", test)
}

fn session_of(user: &str) -> Session {
    let peer: SocketAddr = "127.0.0.1:5001".parse().expect("an address");
    Session::new(Handle(7), user.as_bytes().to_vec(), peer, 3)
}

/// A `cedar` plugin whose config values `files` (key, path) are files the host reads.
fn cedar_spec(files: &[(&str, &Path)]) -> PluginSpec {
    let mut spec = PluginSpec::new("cedar", component("cedar"));
    for (key, path) in files {
        spec.config.insert(
            (*key).to_owned(),
            serde_json::json!({ "file": path.display().to_string() }),
        );
        spec.config_files
            .push(ConfigFile::new(*key, format!("/{key}"), *path));
    }
    spec
}

/// What a chain decides for `user` sending `value`: "pass" or "deny".
async fn decision(host: &PluginHost, user: &str, value: &K) -> &'static str {
    match host.on_sync(&session_of(user), &request(value)).await {
        Verdict::Pass => "pass",
        Verdict::Deny(_) => "deny",
        other => panic!("a policy only passes or denies, not {other:?}"),
    }
}

async fn deny_message(host: &PluginHost, user: &str, value: &K) -> String {
    match host.on_sync(&session_of(user), &request(value)).await {
        Verdict::Deny(message) => message,
        other => panic!("{user} sending {value}: expected a deny, got {other:?}"),
    }
}

fn call(head: &str, args: Vec<K>) -> K {
    K::list(std::iter::once(K::symbol(head)).chain(args).collect())
}

/// The inputs of the parser's facts table, `crates/q/testdata/q-facts.tsv` (a copy of the shared
/// conformance file), unescaped.
fn facts_inputs() -> Vec<String> {
    let path = root().join("crates/q/testdata/q-facts.tsv");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .skip(1)
        .filter(|line| !line.is_empty())
        .map(|line| {
            let field = line.split('\t').next().unwrap_or_default();
            field
                .replace("\\\\", "\u{0}")
                .replace("\\t", "\t")
                .replace("\\n", "\n")
                .replace('\u{0}', "\\")
        })
        .collect()
}

/// The allowlist's config in the walkthrough, `config.toml`'s, as the JSON the plugin gets.
fn walkthrough_allowlist() -> PluginSpec {
    let text = fs::read_to_string(root().join("config.toml")).expect("config.toml");
    let config: toml::Table = text.parse().expect("config.toml is TOML");
    let plugins = config["plugins"].as_array().expect("[[plugins]]");
    let allowlist = plugins
        .iter()
        .find(|plugin| plugin["name"].as_str() == Some("allowlist"))
        .expect("the walkthrough has an allowlist");
    let serde_json::Value::Object(json) = serde_json::to_value(&allowlist["config"]).expect("JSON")
    else {
        panic!("the allowlist's config is a table");
    };
    let mut spec = PluginSpec::new("allowlist", component("allowlist"));
    spec.config = json;
    spec
}

/// The walkthrough's rules, written in Cedar (`plugins/cedar/walkthrough/`), decide every
/// message as the walkthrough's `allowlist` does: calls, the parser's whole facts table as free
/// text, the known bypasses, and values that are neither, for its users and a stranger.
#[tokio::test(flavor = "multi_thread")]
async fn the_walkthrough_in_cedar_decides_as_the_allowlist() {
    let dir = root().join("plugins/cedar/walkthrough");
    let cedar = PluginHost::new(options(vec![cedar_spec(&[
        ("policies", &dir.join("qgate.cedar")),
        ("entities", &dir.join("entities.json")),
        ("schema", &dir.join("qgate.cedarschema")),
    ])]))
    .unwrap_or_else(|e| panic!("{e}"));
    let allowlist =
        PluginHost::new(options(vec![walkthrough_allowlist()])).unwrap_or_else(|e| panic!("{e}"));

    let mut messages = vec![
        call("legalOperation", vec![K::long(1), K::long(2)]),
        K::list(vec![K::string("legalOperation"), K::long(1), K::long(2)]),
        call(
            "legalOperation",
            vec![K::long(1), K::Atom(qgate_ipc::Atom::Float(2.5))],
        ),
        call("legalOperation", vec![K::long(1)]),
        call("legalOperation", vec![K::long(1), K::long(2), K::long(3)]),
        call("illegalOperation", vec![K::long(1), K::long(2)]),
        call("value", vec![K::string("exit 0")]),
        call(
            "insert",
            vec![K::symbol("trade"), K::list(vec![K::long(1)])],
        ),
        call("conns", vec![K::Null]),
        K::long(1),
        K::symbol("trade"),
    ];
    let texts = [
        "conns",
        "trade",
        "select from trade where sym=`AAPL",
        "select from quote",
        "legalOperation[1;2]",
        "illegalOperation[1;2]",
        "`a`b!1 2",
        ";select from trade",
        "select from trade where sym in `a`b,[system\"ls\"]",
        "legalOperation[1;exit 0]",
        "k)select from trade",
        "0\"exit 0\"",
        "(.)\"exit 0\"",
        "value \"exit 0\"",
        "select from trade where sym=(.z.pg:{x})",
        "select from trade where {.z.pg::{x};1b}[]",
        "{select from trade}[]",
        "a:1",
        "trade lj conns",
        "delete from `trade",
    ];
    messages.extend(texts.iter().map(K::string));
    messages.extend(facts_inputs().iter().map(K::string));

    let mut compared = 0;
    let mut differences = Vec::new();
    let mut passes = 0;
    for user in ["admin", "adminmd5", "adminsha", "mallory", ""] {
        for message in &messages {
            let expected = decision(&allowlist, user, message).await;
            let actual = decision(&cedar, user, message).await;
            compared += 1;
            passes += usize::from(expected == "pass");
            if expected != actual {
                differences.push(format!(
                    "{user:?} sending {message}: allowlist {expected}, cedar {actual}"
                ));
            }
        }
        // Logins are the password file's: neither plugin refuses one.
        let credentials = Credentials {
            user: user.as_bytes().to_vec(),
            password: Some(b"password".to_vec()),
        };
        let verdict = cedar.on_auth(&session_of(user), &credentials).await;
        assert!(
            matches!(verdict, AuthVerdict::Pass),
            "cedar decided {user:?}'s login: {verdict:?}"
        );
    }
    assert!(
        differences.is_empty(),
        "{} of {compared} decisions differ:\n{}",
        differences.len(),
        differences.join("\n")
    );
    // The corpus holds both answers, so agreeing is not agreeing to deny everything.
    assert!(
        passes > 20 && passes < compared - 100,
        "{passes} of {compared} pass"
    );
}

const PERMIT_F: &str = "permit (principal == User::\"alice\", action == Action::\"call\", \
                        resource == Function::\"f\");\n";
const FORBID_F: &str = "forbid (principal, action == Action::\"call\", resource == \
                        Function::\"f\");\n";

/// An edited policy file is a new version of the plugin; an edit that does not parse is refused
/// with the file's path, line and column, and the old policy goes on deciding; a rollback brings
/// back the policy the last swap replaced.
#[tokio::test(flavor = "multi_thread")]
async fn an_edited_policy_file_is_a_new_version_and_a_broken_edit_is_refused() {
    let dir = scratch("edit");
    let policy = dir.join("qgate.cedar");
    deploy(&policy, PERMIT_F);
    let host = PluginHost::new(options(vec![cedar_spec(&[("policies", &policy)])]))
        .unwrap_or_else(|e| panic!("{e}"));
    let f = call("f", vec![K::long(1)]);
    assert_eq!(decision(&host, "alice", &f).await, "pass");
    let first = host.status()[0].digest;

    // Unchanged: nothing to do.
    assert!(matches!(
        host.reload("cedar"),
        Ok(SwapOutcome::Unchanged { .. })
    ));

    deploy(&policy, format!("{PERMIT_F}{FORBID_F}"));
    let Ok(SwapOutcome::Swapped { from, to, .. }) = host.reload_if_changed("cedar") else {
        panic!("an edited policy file is a new version");
    };
    assert_eq!(from, first);
    assert_ne!(to, first);
    assert!(
        deny_message(&host, "alice", &f)
            .await
            .contains("Function::\"f\""),
        "the deny names what was not permitted"
    );

    // A broken edit: line 2, column 9 is where the parser stops.
    deploy(
        &policy,
        "permit (principal, action, resource);\npermit (nonsense);\n",
    );
    let error = host
        .reload("cedar")
        .expect_err("a policy that does not parse");
    let message = error.to_string();
    assert!(matches!(error, HostError::Load { .. }), "{error:?}");
    assert!(
        message.contains(&format!("{}:2:", policy.display())),
        "the error names the file and the line: {message}"
    );
    assert_eq!(
        decision(&host, "alice", &f).await,
        "deny",
        "the old policy stays"
    );
    assert_eq!(host.status()[0].digest, to);

    // Back to the first policy, then the file's version again once it changes.
    host.rollback("cedar").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(host.status()[0].digest, first);
    assert_eq!(decision(&host, "alice", &f).await, "pass");
    deploy(&policy, FORBID_F);
    assert!(matches!(
        host.reload_if_changed("cedar"),
        Ok(SwapOutcome::Swapped { .. })
    ));
    assert_eq!(decision(&host, "alice", &f).await, "deny");
}

/// A file that is not text, or not a regular file, never reaches the plugin.
#[tokio::test(flavor = "multi_thread")]
async fn a_policy_file_that_is_not_text_or_not_a_file_is_refused() {
    let dir = scratch("not-text");
    let policy = dir.join("qgate.cedar");
    fs::write(&policy, b"permit (principal, action, resource);\xff\n").expect("write");
    let error = PluginHost::new(options(vec![cedar_spec(&[("policies", &policy)])]))
        .err()
        .unwrap_or_else(|| panic!("not UTF-8"));
    assert!(matches!(error, HostError::ConfigFile { .. }), "{error:?}");
    assert!(error.to_string().contains("not UTF-8 text"), "{error}");

    let error = PluginHost::new(options(vec![cedar_spec(&[("policies", &dir)])]))
        .err()
        .unwrap_or_else(|| panic!("a directory"));
    assert!(matches!(error, HostError::Read { .. }), "{error:?}");
}

/// In a locked deployment a policy file must be pinned or signed, like the component: an
/// unsigned one stops the start, a signed one loads, an edit that is not signed again is refused
/// on swap while the signed policy serves, and a pinned one may change only to its pin.
#[tokio::test(flavor = "multi_thread")]
async fn a_locked_deployment_refuses_an_unsigned_policy_file() {
    let dir = scratch("locked");
    let policy = dir.join("qgate.cedar");
    deploy(&policy, PERMIT_F);
    let key = SecretKey::generate().unwrap_or_else(|e| panic!("{e}"));
    let mut lock = LockPolicy::default();
    lock.locked = true;
    lock.keys = vec![key.public_key()];
    let component_digest = Digest::of(&fs::read(component("cedar")).expect("cedar.wasm"));
    let locked = |spec: PluginSpec| {
        let mut spec = spec;
        spec.sha256 = Some(component_digest);
        let mut options = options(vec![spec]);
        options.lock = lock.clone();
        PluginHost::new(options)
    };

    let error = locked(cedar_spec(&[("policies", &policy)]))
        .err()
        .unwrap_or_else(|| panic!("an unsigned policy file"));
    let message = error.to_string();
    assert!(matches!(error, HostError::Refused { .. }), "{error:?}");
    assert!(
        message.contains(&policy.display().to_string())
            && message.contains("neither pinned")
            && message.contains("qgate sign"),
        "{message}"
    );

    fs::write(signature_path(&policy), key.sign(PERMIT_F.as_bytes())).expect("sign");
    let host = locked(cedar_spec(&[("policies", &policy)])).unwrap_or_else(|e| panic!("{e}"));
    let f = call("f", vec![K::long(1)]);
    assert_eq!(decision(&host, "alice", &f).await, "pass");

    // An edit without a new signature is refused; the signed policy stays.
    deploy(&policy, FORBID_F);
    let error = host
        .reload("cedar")
        .expect_err("an edit that is not signed");
    assert!(matches!(error, HostError::Refused { .. }), "{error:?}");
    assert_eq!(decision(&host, "alice", &f).await, "pass");
    // Signed, it swaps in.
    fs::write(signature_path(&policy), key.sign(FORBID_F.as_bytes())).expect("sign");
    assert!(matches!(
        host.reload("cedar"),
        Ok(SwapOutcome::Swapped { .. })
    ));
    assert_eq!(decision(&host, "alice", &f).await, "deny");

    // A pin beside the file: only those bytes.
    let mut spec = cedar_spec(&[("policies", &policy)]);
    spec.config_files[0].sha256 = Some(Digest::of(PERMIT_F.as_bytes()));
    let error = locked(spec)
        .err()
        .unwrap_or_else(|| panic!("the file is not the pinned one"));
    assert!(error.to_string().contains("but the config pins"), "{error}");
}
