//! `[metrics]`: `qgate serve` in front of a kdb+ stand-in with a plugin in the chain, scraped with
//! curl before and after a client's logins and queries.

use std::{
    net::{SocketAddr, TcpListener},
    process::Command,
};

use qgate_ipc::K;

use super::{
    Server, TempDir, component_path,
    gateway::{ask, call, eventually, login, upstream},
};

/// A port free now on 127.0.0.1: bound, read, and released for the server to bind.
fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address")
}

/// `curl`'s answer to a GET of `url`: the status code and the body.
fn get(url: &str) -> (String, String) {
    let output = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-w", "\n%{http_code}", url])
        .output()
        .expect("curl runs");
    assert!(output.status.success(), "curl {url}: {output:?}");
    let text = String::from_utf8(output.stdout).expect("UTF-8");
    let (body, status) = text.rsplit_once('\n').expect("the status line");
    (status.to_owned(), body.to_owned())
}

/// The value of the sample named exactly `series` (name and labels), if there is one.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?.strip_prefix(' ')?;
        rest.parse().ok()
    })
}

/// The sum of the samples whose series start with `prefix`.
fn sum(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|line| line.starts_with(prefix))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

#[test]
fn counters_move_and_histograms_have_buckets() {
    let rdb = upstream("rdb");
    let dir = TempDir::new("metrics");
    let passwords = dir.write("passwords.txt", "alice:secret\n");
    let allowlist = component_path("allowlist");
    let metrics = free_port();
    let config = dir.write(
        "qgate.toml",
        &format!(
            r#"
[metrics]
listen = "{metrics}"

[auth]
password_file = "{passwords}"

[[upstream]]
name = "rdb"
servers = ["{rdb}"]

[[plugins]]
name = "allowlist"
path = "{allowlist}"
config = {{ users = {{ alice = ["echo"] }} }}
"#,
            rdb = rdb.addr(),
            passwords = passwords.display(),
            allowlist = allowlist.display(),
        ),
    );
    let mut server = Server::with_config(&config);
    let url = format!("http://{metrics}/metrics");

    let (status, before) = get(&url);
    assert_eq!(status, "200", "{before}");
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        value(
            &before,
            &format!(r#"qgate_build_info{{version="{version}"}}"#)
        ),
        Some(1.0),
        "{before}"
    );
    assert_eq!(value(&before, "qgate_connections_total"), Some(0.0));
    let sync =
        |decision: &str| format!(r#"qgate_requests_total{{event="sync",decision="{decision}"}}"#);
    assert_eq!(value(&before, &sync("pass")), Some(0.0), "{before}");
    // No TLS: no certificate to expire.
    assert_eq!(
        value(&before, "qgate_tls_certificate_expiry_timestamp_seconds"),
        Some(0.0)
    );

    // A refused login, then a client whose two queries pass to the upstream and one is denied.
    login_refused(server.addr, "alice:wrong");
    let mut alice = login(server.addr, "alice:secret");
    assert_eq!(ask(&mut alice, &call("echo", vec![K::long(1)])), K::long(1));
    assert_eq!(ask(&mut alice, &call("echo", vec![K::long(2)])), K::long(2));
    let denied = ask(&mut alice, &call("fail", vec![K::string("x")]));
    assert!(denied.to_string().contains("not allowed"), "{denied}");

    let (status, after) = get(&url);
    assert_eq!(status, "200");
    assert_eq!(
        value(&after, "qgate_connections_total"),
        Some(2.0),
        "{after}"
    );
    // The refused connection's task may still be ending when its socket is closed.
    eventually("only alice's connection is open", || {
        let (_, text) = get(&url);
        value(&text, "qgate_connections_open") == Some(1.0)
    });
    assert_eq!(
        value(&after, r#"qgate_logins_total{result="accepted"}"#),
        Some(1.0)
    );
    assert_eq!(
        value(&after, r#"qgate_logins_total{result="denied"}"#),
        Some(1.0)
    );
    assert_eq!(value(&after, &sync("pass")), Some(2.0), "{after}");
    assert_eq!(value(&after, &sync("deny")), Some(1.0), "{after}");
    assert_eq!(
        value(
            &after,
            r#"qgate_request_duration_seconds_bucket{le="+Inf",event="sync"}"#
        ),
        Some(3.0),
        "{after}"
    );
    assert!(
        after
            .lines()
            .filter(|line| line.starts_with("qgate_request_duration_seconds_bucket{"))
            .count()
            > 2,
        "{after}"
    );
    // The plugin was asked about each function: its pass of `echo` stands for the second call.
    assert_eq!(
        sum(&after, r#"qgate_plugin_calls_total{plugin="allowlist","#),
        2.0,
        "{after}"
    );
    assert!(
        after
            .contains(r#"qgate_plugin_call_duration_seconds_bucket{le="+Inf",plugin="allowlist","#),
        "{after}"
    );
    // The two passed queries went to the upstream, timed per server.
    let server_labels = format!(r#"upstream="rdb",server="{}""#, rdb.addr());
    assert_eq!(
        value(
            &after,
            &format!("qgate_upstream_query_duration_seconds_count{{{server_labels}}}")
        ),
        Some(2.0),
        "{after}"
    );
    assert!(
        after.contains(&format!(
            r#"qgate_upstream_query_duration_seconds_bucket{{le="+Inf",{server_labels}}}"#
        )),
        "{after}"
    );
    assert_eq!(
        value(
            &after,
            &format!("qgate_upstream_in_flight{{{server_labels}}}")
        ),
        Some(0.0)
    );
    eventually("the health check marks the upstream up", || {
        let (_, text) = get(&url);
        value(&text, &format!("qgate_upstream_up{{{server_labels}}}")) == Some(1.0)
    });
    assert!(after.ends_with("# EOF\n"), "{after}");

    // Anything but GET /metrics is not found.
    let (status, _) = get(&format!("http://{metrics}/"));
    assert_eq!(status, "404");

    drop(alice);
    let status = server.terminate();
    assert!(status.success(), "{status}; stderr:\n{}", server.stderr());
}

/// Connects with `credentials` that the password file refuses: the server closes the socket
/// without a byte.
fn login_refused(addr: SocketAddr, credentials: &str) {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(addr).expect("the server accepts");
    stream
        .set_read_timeout(Some(super::PATIENCE))
        .expect("a read timeout");
    stream
        .write_all(format!("{credentials}\x03\0").as_bytes())
        .expect("the handshake is sent");
    let mut byte = [0_u8; 1];
    assert_eq!(
        stream.read(&mut byte).unwrap_or(0),
        0,
        "refused without a byte"
    );
}

#[test]
fn a_metrics_address_in_use_stops_the_start() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("a free port");
    let addr = taken.local_addr().expect("its address");
    let dir = TempDir::new("metrics-in-use");
    let config = dir.write("qgate.toml", &format!("[metrics]\nlisten = \"{addr}\"\n"));
    let output = super::run(&[
        "serve",
        "--config",
        config.to_str().expect("a UTF-8 path"),
        "-p",
        "127.0.0.1:0",
    ]);
    assert!(!output.status.success(), "{output:?}");
    let stderr = super::stderr(&output);
    assert!(
        stderr.contains(&format!("cannot listen for metrics on {addr}")),
        "{stderr}"
    );
    assert!(stderr.contains("metrics.listen"), "{stderr}");
    assert_eq!(super::stdout(&output), "", "nothing announced");
}
