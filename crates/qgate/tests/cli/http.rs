//! HTTP on the q port through the real binary: curl and Python's standard library against
//! `qgate serve` with the `demo-api` plugin answering `GET /?expr`, Basic logins against the
//! password file, and the fail-closed rule for a chain that checks q queries but not HTTP.

use std::process::Command;

use super::{Server, TempDir, component_path};

/// curl's answer to `args`: the status code and the body.
fn curl(args: &[&str]) -> (String, String) {
    let output = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl runs");
    assert!(output.status.success(), "curl {args:?}: {output:?}");
    let text = String::from_utf8(output.stdout).expect("UTF-8");
    let (body, status) = text.rsplit_once('\n').expect("the status line");
    (status.to_owned(), body.to_owned())
}

/// Starts qgate with the password file `alice:secret` and `plugins` (TOML `[[plugins]]` tables).
fn serve(dir: &TempDir, plugins: &str) -> Server {
    let passwords = dir.write("passwords.txt", "alice:secret\n");
    let config = dir.write(
        "qgate.toml",
        &format!(
            "[auth]\npassword_file = \"{}\"\n{plugins}",
            passwords.display()
        ),
    );
    Server::with_config(&config)
}

#[test]
fn demo_api_answers_get_and_post_as_kdb_does_for_its_literals() {
    let dir = TempDir::new("http-demo");
    let demo = component_path("demo-api");
    let server = serve(
        &dir,
        &format!(
            "[[plugins]]\nname = \"demo-api\"\npath = \"{}\"\n",
            demo.display()
        ),
    );
    let base = format!("http://{}", server.addr);

    let (status, body) = curl(&["-u", "alice:secret", &format!("{base}/?1%202%203")]);
    assert_eq!((status.as_str(), body.as_str()), ("200", "1 2 3\n"));
    let (status, body) = curl(&[
        "-u",
        "alice:secret",
        "--data-binary",
        "`a`b!1 2",
        &format!("{base}/"),
    ]);
    assert_eq!((status.as_str(), body.as_str()), ("200", "`a`b!1 2\n"));
    let (status, body) = curl(&["-u", "alice:secret", &format!("{base}/?select%20from%20t")]);
    assert_eq!(status, "400");
    assert!(body.starts_with("'nyi"), "{body}");

    // Refused logins get 401 with the challenge a browser answers.
    let (status, _) = curl(&[&format!("{base}/?1")]);
    assert_eq!(status, "401");
    let (status, _) = curl(&["-u", "alice:wrong", &format!("{base}/?1")]);
    assert_eq!(status, "401");
    let output = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-o", "/dev/null", "-D", "-"])
        .arg(format!("{base}/?1"))
        .output()
        .expect("curl runs");
    let head = String::from_utf8_lossy(&output.stdout).to_ascii_lowercase();
    assert!(
        head.contains("www-authenticate: basic realm=\"qgate\""),
        "{head}"
    );

    // Python's standard library, as a script or a notebook would call it.
    let script = format!(
        r#"
import base64, urllib.request, urllib.error
url = "{base}/?2000.01.01D12:00:00.000000000"
request = urllib.request.Request(url, headers={{"Authorization": "Basic " + base64.b64encode(b"alice:secret").decode()}})
with urllib.request.urlopen(request, timeout=10) as response:
    print(response.status, response.read().decode().strip())
try:
    urllib.request.urlopen(url, timeout=10)
except urllib.error.HTTPError as error:
    print(error.code, error.headers.get("WWW-Authenticate"))
"#
    );
    let output = Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3 runs");
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "200 2000.01.01D12:00:00.000000000\n401 Basic realm=\"qgate\", charset=\"UTF-8\"\n"
    );
}

#[test]
fn a_chain_that_checks_queries_but_not_http_refuses_http() {
    let dir = TempDir::new("http-closed");
    let echo = component_path("echo");
    let server = serve(
        &dir,
        &format!(
            "[[plugins]]\nname = \"echo\"\npath = \"{}\"\n",
            echo.display()
        ),
    );
    let (status, body) = curl(&[
        "-u",
        "alice:secret",
        &format!("http://{}/?delete%20from%20`t", server.addr),
    ]);
    assert_eq!(status, "403");
    assert!(body.contains("none checks HTTP requests"), "{body}");
}

#[test]
fn the_allowlist_decides_http_text_as_it_decides_free_text() {
    let dir = TempDir::new("http-allowlist");
    let allowlist = component_path("allowlist");
    let decisions = dir.0.join("decisions.jsonl");
    let server = serve(
        &dir,
        &format!(
            "[decision_log]\npath = \"{}\"\n\n\
             [[plugins]]\nname = \"allowlist\"\npath = \"{}\"\n\
             config = {{ tables = {{ alice = {{ read = [\"trade\"] }} }} }}\n",
            decisions.display(),
            allowlist.display()
        ),
    );
    let base = format!("http://{}", server.addr);
    // Allowed, and nothing answers it here (no upstream): the 404 says so.
    let (status, body) = curl(&[
        "-u",
        "alice:secret",
        &format!("{base}/?select%20from%20trade"),
    ]);
    assert_eq!(status, "404", "{body}");
    let (status, body) = curl(&[
        "-u",
        "alice:secret",
        &format!("{base}/?delete%20from%20`trade"),
    ]);
    assert_eq!(status, "403");
    assert_eq!(body, "access: alice may not write trade");
    let (status, body) = curl(&[
        "-u",
        "alice:secret",
        "--data-binary",
        "system \"ls\"",
        &format!("{base}/"),
    ]);
    assert_eq!(status, "403");
    assert_eq!(body, "access: system is not granted to alice");
    // The decision log has a line for each request, as it has for q messages.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let lines = loop {
        let text = std::fs::read_to_string(&decisions).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .filter(|line: &serde_json::Value| line["event"] == "http")
            .collect();
        if lines.len() >= 3 || std::time::Instant::now() > deadline {
            break lines;
        }
        #[expect(
            clippy::disallowed_methods,
            reason = "a synchronous test polling a file written by another process"
        )]
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(lines.len(), 3, "{lines:?}");
    let denied = &lines[1];
    assert_eq!(denied["head"], "GET /", "{denied}");
    assert_eq!(denied["decision"], "denied", "{denied}");
    assert_eq!(denied["user"], "alice", "{denied}");
    assert_eq!(denied["text"], "delete from `trade", "{denied}");
    assert_eq!(denied["decided_by"], "allowlist", "{denied}");
    assert_eq!(lines[0]["decision"], "passed", "{}", lines[0]);
}

#[test]
fn what_the_chain_passes_goes_to_the_upstreams_own_http_with_the_service_login() {
    let mut options = qgate_e2e::upstream::UpstreamOptions {
        name: "rdb".into(),
        ..qgate_e2e::upstream::UpstreamOptions::default()
    };
    options.add_login("svc:pw").expect("a login");
    let rdb = qgate_e2e::upstream::Upstream::start(options).expect("the test upstream starts");
    let dir = TempDir::new("http-gateway");
    let server = serve(
        &dir,
        &format!(
            "[[upstream]]\nname = \"rdb\"\nservers = [\"{}\"]\nuser = \"svc\"\npassword = \"pw\"\n",
            rdb.addr()
        ),
    );
    let base = format!("http://{}", server.addr);

    // The upstream sees the service account, never alice's password, and alice's name in
    // X-Forwarded-User; the q text is the query, decoded as kdb+ decodes it.
    let (status, body) = curl(&["-u", "alice:secret", &format!("{base}/?til%2010")]);
    assert_eq!(status, "200", "{body}");
    assert!(
        body.contains("upstream=rdb\nuser=svc\nmethod=GET\ntext=til 10\n"),
        "{body}"
    );
    assert!(body.contains("forwarded-user=alice\n"), "{body}");
    assert!(body.contains("forwarded-for=127.0.0.1\n"), "{body}");
    let (status, body) = curl(&[
        "-u",
        "alice:secret",
        "--data-binary",
        "select from trade",
        &format!("{base}/"),
    ]);
    assert_eq!(status, "200", "{body}");
    assert!(
        body.contains("method=POST\ntext=select from trade\n"),
        "{body}"
    );
    // The upstream's own answers come back as they are: its 404 for a file it does not have.
    let (status, _) = curl(&["-u", "alice:secret", &format!("{base}/index.html")]);
    assert_eq!(status, "404");
    // qgate's login still comes first.
    let (status, _) = curl(&[&format!("{base}/?1")]);
    assert_eq!(status, "401");
    drop(rdb);
    let (status, body) = curl(&["-u", "alice:secret", &format!("{base}/?1")]);
    assert_eq!(status, "502", "{body}");
    assert!(body.contains("upstream rdb"), "{body}");
}
