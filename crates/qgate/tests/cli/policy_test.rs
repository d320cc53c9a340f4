//! `qgate test`: the walkthrough's policy tests pass, a wrong expectation fails with a line that
//! names the file, the case, what was expected and what came back, and a malformed file is an
//! error naming its key.

use std::{fs, path::PathBuf, process::Output};

use super::{TempDir, component_path, root, run, stderr, stdout};

fn walkthrough() -> PathBuf {
    root().join("tests/policy/walkthrough.toml")
}

/// The walkthrough's file, with its config named by an absolute path so that a copy elsewhere
/// tests the same chain.
fn walkthrough_text() -> String {
    // The cases load the built plugins.
    component_path("allowlist");
    let text = fs::read_to_string(walkthrough()).expect("the walkthrough's test file");
    let config = root().join("config.toml");
    let line = "config = \"../../config.toml\"";
    assert!(
        text.contains(line),
        "the walkthrough's file names its config"
    );
    text.replace(
        line,
        &format!("config = {:?}", config.display().to_string()),
    )
}

fn cases(text: &str) -> usize {
    text.lines().filter(|line| *line == "[[case]]").count()
}

fn test(file: &std::path::Path) -> Output {
    run(&["test", file.to_str().expect("a UTF-8 path")])
}

#[test]
fn the_walkthrough_passes() {
    let text = walkthrough_text();
    let output = test(&walkthrough());
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        format!("{} passed, 0 failed\n", cases(&text))
    );
    assert_eq!(stderr(&output), "");
}

#[test]
fn a_wrong_expectation_fails_with_a_clear_line() {
    let dir = TempDir::new("policy-wrong");
    let text = walkthrough_text();
    let wrong = text
        .replacen("value = \"3\"\n", "value = \"4\"\n", 1)
        .replacen(
            "message = \"access: illegalOperation is not allowed for admin\"",
            "message = \"rank\"",
            1,
        );
    assert_ne!(wrong, text);
    let file = dir.write("wrong.toml", &wrong);
    let output = test(&file);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let name = file.display();
    assert_eq!(
        stdout(&output),
        format!(
            "{name}: case \"admin calls legalOperation with two longs\": expected reply \"4\", \
             got reply \"3\"\n\
             {name}: case \"illegalOperation is refused\": expected deny containing \"rank\", \
             got deny \"access: illegalOperation is not allowed for admin\"\n\
             {} passed, 2 failed\n",
            cases(&text) - 2
        )
    );
}

#[test]
fn a_verdict_of_another_kind_is_a_failure() {
    let dir = TempDir::new("policy-kind");
    let config = root().join("config.toml");
    component_path("allowlist");
    let file = dir.write(
        "kind.toml",
        &format!(
            "config = {:?}\n\
             [[case]]\nname = \"mallory\"\nevent = \"sync\"\nuser = \"mallory\"\n\
             call = \"legalOperation[1;2]\"\nexpect = \"allow\"\n\
             [[case]]\nname = \"admin\"\nevent = \"sync\"\nuser = \"admin\"\n\
             call = \"legalOperation[1;2]\"\nexpect = \"pass\"\n",
            config.display().to_string()
        ),
    );
    let output = test(&file);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let name = file.display();
    assert_eq!(
        stdout(&output),
        format!(
            "{name}: case \"mallory\": expected allow, got deny \"access: legalOperation is not \
             allowed for mallory\"\n\
             {name}: case \"admin\": expected pass, got reply \"3\"\n\
             0 passed, 2 failed\n"
        )
    );
}

/// An inline chain, a path relative to the test file, and a session with a peer and a client
/// certificate, as a plugin sees them.
#[test]
fn an_inline_chain_sees_the_session() {
    let dir = TempDir::new("policy-inline");
    let whoami = component_path("whoami");
    fs::copy(&whoami, dir.0.join("whoami.wasm")).expect("a copy of whoami");
    let file = dir.write(
        "inline.toml",
        "[[plugins]]\nname = \"whoami\"\npath = \"whoami.wasm\"\n\
         [[case]]\nname = \"a client certificate\"\nevent = \"sync\"\nuser = \"alice\"\n\
         peer = \"[::1]:6000\"\ntls_cn = \"alice.example\"\ntext = \"whoami\"\n\
         expect = \"reply\"\nvalue_contains = \"(\\\"alice\\\";\\\"TLSv1.3\\\";\"\n\
         [[case]]\nname = \"the cn\"\nevent = \"sync\"\ntls_cn = \"alice.example\"\n\
         data = \"`a`b!(1;\\\"x\\\")\"\nexpect = \"reply\"\nvalue_contains = \"\\\"alice.example\\\"\"\n\
         [[case]]\nname = \"plain\"\nevent = \"sync\"\ncall = \"f[]\"\nexpect = \"reply\"\n\
         value_contains = \"(\\\"\\\";\\\"\\\";\"\n",
    );
    let output = test(&file);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}{}",
        stdout(&output),
        stderr(&output)
    );
    assert_eq!(stdout(&output), "3 passed, 0 failed\n");
}

#[test]
fn a_malformed_file_is_an_error_naming_the_key() {
    let dir = TempDir::new("policy-malformed");
    let config = format!(
        "config = {:?}\n",
        root().join("config.toml").display().to_string()
    );
    component_path("allowlist");
    for (name, body, error) in [
        (
            "unknown.toml",
            "[[case]]\nname = \"x\"\nevent = \"sync\"\ntext = \"1\"\nexpct = \"deny\"\n",
            "case[0].expct: line 6: unknown field `expct`",
        ),
        (
            "event.toml",
            "[[case]]\nname = \"x\"\nevent = \"query\"\ntext = \"1\"\nexpect = \"deny\"\n",
            "case[0].event: line 4: unknown variant `query`",
        ),
        (
            "message.toml",
            "[[case]]\nname = \"x\"\nevent = \"sync\"\ntext = \"1\"\nexpect = \"reply\"\n\
             message = \"m\"\n",
            "case[0] \"x\": message: is for `expect = \"deny\"`; a reply has none",
        ),
        (
            "two.toml",
            "[[case]]\nname = \"x\"\nevent = \"sync\"\ntext = \"1\"\ncall = \"f[1]\"\n\
             expect = \"deny\"\n",
            "case[0] \"x\": text and call: a case sends one message; give one of `text`, `call` \
             and `data`",
        ),
        (
            "call.toml",
            "[[case]]\nname = \"x\"\nevent = \"sync\"\ncall = \"f[1;y]\"\nexpect = \"deny\"\n",
            "case[0] \"x\": call: argument 2: `y` is a name",
        ),
        (
            "open.toml",
            "[[case]]\nname = \"x\"\nevent = \"open\"\nexpect = \"reply\"\n",
            "case[0] \"x\": expect: an open case cannot reply; it can allow, deny",
        ),
        (
            "twice.toml",
            "[[case]]\nname = \"x\"\nevent = \"close\"\nexpect = \"allow\"\n\
             [[case]]\nname = \"x\"\nevent = \"open\"\nexpect = \"allow\"\n",
            "case[1].name: \"x\" is the name of an earlier case; each case needs its own",
        ),
        (
            "none.toml",
            "",
            "no `[[case]]`: a test file with nothing to check would always pass",
        ),
    ] {
        let file = dir.write(name, &format!("{config}{body}"));
        let output = test(&file);
        assert_eq!(output.status.code(), Some(2), "{name}: {}", stdout(&output));
        let expected = format!("error: {}: {error}", file.display());
        assert!(
            stderr(&output).starts_with(&expected),
            "{name}: {:?} does not start with {expected:?}",
            stderr(&output)
        );
        assert_eq!(stdout(&output), "0 passed, 0 failed, 1 file not run\n");
    }
    let chainless = dir.write(
        "chainless.toml",
        "[[case]]\nname = \"x\"\nevent = \"close\"\nexpect = \"allow\"\n",
    );
    let output = test(&chainless);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("no chain: give `config = \"PATH\"`"),
        "{}",
        stderr(&output)
    );
    let missing = dir.0.join("missing.toml");
    let output = test(&missing);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).starts_with(&format!("error: {}: cannot read", missing.display())),
        "{}",
        stderr(&output)
    );
}
